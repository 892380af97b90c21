"""Use a trained run: transcribe audio files, or extract encoder features from a chosen layer.

A *run* is the output folder of ``asr_ctc.py`` (hyperparams.yaml, save/ with its checkpoints
and tokenizer) or of ``pretrain.py`` (hyperparams.yaml and encoder.ckpt; features only).

Audio files may have any sample rate and channel count libsndfile reads (FLAC, WAV, OGG,
MP3, ...): they are downmixed to mono and resampled to the run's ``sample_rate`` (16 kHz),
and each converted file is logged at INFO level
(:func:`speechpos.speech.data.audio.read_audio_converted`). The training recipes, by contrast,
refuse a manifest file of the wrong rate.

Example (with a trained run)::

    from speechpos.inference import SpeechModel
    model = SpeechModel.from_run("results/ctc/transformer/1234")
    print(model.transcribe_file("some.flac"))
    print(model.transcribe_file("phone_call_8khz.wav"))       # resampled to 16 kHz
    feats = model.extract_features("stereo_44k.flac", layer=3)  # (tokens, d_model)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer

from speechpos.position.checkpoint import state_mismatches
from speechpos.speech.ctc import (
    CharTokenizer,
    SentencePieceTokenizer,
    greedy_decode,
    greedy_word_times,
)
from speechpos.speech.data.audio import min_samples_for_patch, read_audio_converted
from speechpos.speech.model import load_encoder_state
from speechpos.speech.patches import feature_lengths

EXPORT_MARKER = "speechpos_export.json"


class RunError(ValueError):
    """A folder is not a usable training run."""


class ExportError(ValueError):
    """A run cannot be exported, or an exported folder cannot be loaded."""


class SpeechModel:
    """Features, encoder and (for CTC runs) the CTC layer and tokenizer of a trained run."""

    def __init__(self, hparams: dict, tokenizer=None, ctc_lin=None, device: str = "cpu"):
        self.hparams = hparams
        self.device = device
        self.compute_features = hparams["compute_features"].to(device)
        self.normalize = hparams["normalize"].to(device).eval()
        self.encoder = hparams["encoder"].to(device).eval()
        self.tokenizer = tokenizer
        self.ctc_lin = None if ctc_lin is None else ctc_lin.to(device).eval()
        self.sample_rate = hparams["sample_rate"]
        self.min_samples = min_samples_for_patch(hparams["patch_frames"], sample_rate=self.sample_rate)
        self.saved_lm = None  # the run's or export's n-gram LM: {"arpa", "lexicon", weights...}
        self.lm_decoder = None

    @classmethod
    def from_run(cls, run: str | Path, device: str = "cpu") -> SpeechModel:
        """Load a run folder written by ``asr_ctc.py`` or ``pretrain.py``, or a folder written
        by ``speechpos export`` (:mod:`speechpos.inference.export`; see :func:`load_export`)."""
        run = Path(run)
        if (run / "speechpos_export.json").is_file():
            return load_export(run, device)
        yaml_path = run / "hyperparams.yaml"
        if not yaml_path.is_file():
            raise RunError(f"{run}: no hyperparams.yaml; not an output folder of a speechpos recipe")
        with open(yaml_path, encoding="utf-8") as f:
            hparams = load_hyperpyyaml(f)
        missing = [k for k in ("encoder", "compute_features", "normalize", "sample_rate", "patch_frames")
                   if k not in hparams]
        if missing:
            raise RunError(f"{yaml_path}: no {', '.join(missing)}; not the hparams of a speechpos "
                           "speech recipe")
        if "ctc_lin_builder" not in hparams:
            exported = run / "encoder.ckpt"
            if not exported.is_file():
                raise RunError(f"{run}: pretraining run without encoder.ckpt")
            load_encoder_state(hparams["encoder"], exported)
            return cls(hparams, device=device)
        save = run / "save"
        tokenizer = _load_tokenizer(hparams, save)
        ctc_lin = hparams["ctc_lin_builder"](n_neurons=len(tokenizer))
        checkpointer = Checkpointer(
            str(save),
            recoverables={"encoder": hparams["encoder"], "normalize": hparams["normalize"], "ctc_lin": ctc_lin},
        )
        if checkpointer.recover_if_possible(min_key="WER") is None:
            raise RunError(f"{save}: no checkpoint to load")
        model = cls(hparams, tokenizer, ctc_lin, device)
        prune = hparams.get("lm_prune", 0)
        arpa = save / f"lm_{hparams.get('lm_order', 3)}gram{f'_prune{prune}' if prune else ''}.arpa"
        if arpa.is_file() and (save / "lm_lexicon.txt").is_file() and not hparams.get("lm_lexicon_free"):
            model.saved_lm = {"arpa": str(arpa), "lexicon": str(save / "lm_lexicon.txt"),
                              "lm_weight": hparams["lm_weight"], "word_score": hparams["word_score"],
                              "beam_size": hparams["lm_beam_size"], "source": f"the run's {arpa.name}"}
            info = save / "lm_info.json"
            if info.is_file():
                built = json.loads(info.read_text())
                model.saved_lm.update(text=built.get("source"), words=built.get("running_words"))
        return model

    def use_lm(self, arpa: str | None = None, lexicon: str | None = None, lm_weight: float | None = None,
               word_score: float | None = None, beam_size: int | None = None) -> None:
        """Decode with a word n-gram LM from now on (:class:`~speechpos.speech.lm_decoding.LMDecoder`):
        the files and weights given, else those saved with the model (:attr:`saved_lm`)."""
        from speechpos.speech.lm_decoding import LMDecoder

        saved = self.saved_lm or {}
        if arpa is None and not saved:
            raise RunError("this model has no n-gram LM: export it with --lm-text or --lm-arpa, "
                           "or train it with --lm_decoding=True")
        self.lm_decoder = LMDecoder(
            self.tokenizer, str(arpa or saved["arpa"]), str(lexicon or saved["lexicon"]),
            lm_weight=saved.get("lm_weight", 1.0) if lm_weight is None else lm_weight,
            word_score=saved.get("word_score", -1.0) if word_score is None else word_score,
            beam_size=saved.get("beam_size", 50) if beam_size is None else beam_size,
        )

    def load_audio(self, path: str) -> torch.Tensor:
        """Mono waveform of one file at the model's sample rate (downmixed and resampled if
        needed), checked to be at least one patch long after resampling.

        Raises :class:`~speechpos.speech.data.audio.AudioError` for a missing, undecodable or
        too-short file."""
        return read_audio_converted(str(path), self.sample_rate, self.min_samples)

    @torch.no_grad()
    def encode_batch(self, wavs: torch.Tensor, rel_lengths: torch.Tensor, return_hidden: bool = False):
        """(B, samples) -> encoder output (and hidden states), token lengths."""
        wavs, rel_lengths = wavs.to(self.device), rel_lengths.to(self.device)
        feats = self.compute_features(wavs)
        feat_lens = feature_lengths(rel_lengths, wavs.shape[1], feats.shape[1],
                                    self.compute_features.compute_STFT.hop_length)
        return self.encoder(self.normalize(feats, feat_lens), feat_lens, return_hidden=return_hidden)

    @torch.no_grad()
    def ctc_log_probs(self, wavs: torch.Tensor, rel_lengths: torch.Tensor):
        """(B, T, units) CTC log-probabilities of a padded batch, and their relative lengths."""
        if self.ctc_lin is None:
            raise RunError("this run has no CTC layer (a pretraining run): it cannot transcribe")
        out, lengths = self.encode_batch(wavs, rel_lengths)
        log_probs = torch.log_softmax(self.ctc_lin(out), dim=-1)
        return log_probs, lengths.float() / log_probs.shape[1]

    def transcribe_batch(self, wavs: torch.Tensor, rel_lengths: torch.Tensor) -> list[str]:
        """CTC transcripts of a padded batch: greedy, or with the LM after :meth:`use_lm`."""
        log_probs, lengths = self.ctc_log_probs(wavs, rel_lengths)
        if self.lm_decoder is not None:
            return self.lm_decoder(log_probs, lengths)
        return greedy_decode(log_probs, lengths, self.tokenizer)

    @property
    def frame_seconds(self) -> float:
        """Seconds of audio per encoder output frame (patch_frames filterbank hops)."""
        hop = self.compute_features.compute_STFT.hop_length
        return self.hparams["patch_frames"] * hop / self.sample_rate

    def transcribe_batch_with_times(self, wavs: torch.Tensor, rel_lengths: torch.Tensor):
        """Greedy transcripts of a padded batch and their words as ``(word, start_s, end_s)``,
        timed by the frames of the best CTC path (one frame is :attr:`frame_seconds`)."""
        if self.lm_decoder is not None:
            raise RunError("word times come from the greedy CTC path: not with the LM")
        log_probs, lengths = self.ctc_log_probs(wavs, rel_lengths)
        texts = greedy_decode(log_probs, lengths, self.tokenizer)
        return texts, greedy_word_times(log_probs, lengths, self.tokenizer, self.frame_seconds)

    def transcribe_file(self, path: str) -> str:
        """Transcript of one audio file (any rate / channel count, see :meth:`load_audio`)."""
        wav = self.load_audio(path)
        return self.transcribe_batch(wav[None], torch.ones(1))[0]

    @torch.no_grad()
    def extract_features(self, path: str, layer: int = -1) -> torch.Tensor:
        """(tokens, d_model) features of one file: ``layer`` 0 is the patch embedding, k the
        output of encoder layer k, -1 the final (normalised) encoder output. The file may have
        any sample rate and channel count (see :meth:`load_audio`)."""
        wav = self.load_audio(path)
        out, lengths, hidden = self.encode_batch(wav[None], torch.ones(1), return_hidden=True)
        if layer == -1:
            return out[0].cpu()
        if not 0 <= layer < len(hidden):
            raise ValueError(f"layer must be -1 or in 0..{len(hidden) - 1}, got {layer}")
        return hidden[layer][0].cpu()


def load_export(folder: str | Path, device: str = "cpu") -> SpeechModel:
    """A :class:`SpeechModel` from an exported folder, loaded through its SpeechBrain
    ``pretrainer`` (the same files ``EncoderASR`` loads)."""
    folder = Path(folder)
    with open(folder / "hyperparams.yaml", encoding="utf-8") as f:
        hp = load_hyperpyyaml(f)
    check_loaded(hp["pretrainer"], folder)
    with tempfile.TemporaryDirectory() as collected:
        pretrainer = hp["pretrainer"]
        pretrainer.set_collect_in(collected)
        pretrainer.collect_files(default_source=str(folder.resolve()))
        pretrainer.load_collected()
    if hp["token_type"] != "char":
        raise ExportError(f"{folder}: speechpos loads exported character models; load a "
                          "SentencePiece export with speechbrain's EncoderASR")
    hp = {**hp, "encoder": hp["encoder_model"]}
    model = SpeechModel(hp, CharTokenizer(hp["tokenizer"]), hp["ctc_lin"], device)
    marker = folder / EXPORT_MARKER
    lm = (json.loads(marker.read_text()) if marker.is_file() else {}).get("lm")
    if lm:
        model.saved_lm = {**lm, "arpa": str(folder / lm["arpa"]), "lexicon": str(folder / lm["lexicon"])}
    return model


def check_loaded(pretrainer, folder: Path) -> None:
    """Refuse a folder whose checkpoint leaves any weight of a module unset: SpeechBrain's
    loader uses ``strict=False`` and would only warn."""
    for name, obj in pretrainer.loadables.items():
        if not isinstance(obj, torch.nn.Module) or isinstance(obj, InputNormalization):
            continue  # statistics are saved by their own saver, not as a state dict
        path = folder / f"{name}.ckpt"
        if not path.is_file():
            raise ExportError(f"{path}: missing, the exported folder has no weights for {name}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a file that is not a checkpoint
            raise ExportError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
        problems = state_mismatches(obj.state_dict(), state, optional=())
        if problems:
            raise ExportError(f"{path}: does not fit {name}: {'; '.join(problems)}")


def _load_tokenizer(hparams, save: Path):
    if hparams["token_type"] == "char":
        path = save / "tokenizer.txt"
        if not path.is_file():
            raise RunError(f"{path}: tokenizer missing")
        return CharTokenizer.load_or_create(str(path), [])
    model_dir = save / "sentencepiece"
    if not model_dir.is_dir():
        raise RunError(f"{model_dir}: sentencepiece model missing")
    return SentencePieceTokenizer(str(model_dir), hparams["sentencepiece_vocab"], hparams["train_csv"])


AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


def list_audio(paths) -> list[str]:
    """Files given, with folders expanded to their audio files (``AUDIO_EXTENSIONS``, any
    case), sorted.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> for name in ("a.WAV", "b.mp3", "notes.txt"):
    ...     open(os.path.join(d, name), "w").close()
    >>> [os.path.basename(p) for p in list_audio([d])]
    ['a.WAV', 'b.mp3']
    """
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                out.extend(
                    os.path.join(root, f) for f in files if f.lower().endswith(AUDIO_EXTENSIONS)
                )
        else:
            out.append(p)
    return sorted(out)
