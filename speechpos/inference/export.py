"""A trained CTC run as a SpeechBrain model folder: ``EncoderASR.from_hparams`` loads it.

:func:`export_run` writes, from the run's best checkpoint (lowest dev WER):

- ``hyperparams.yaml`` in SpeechBrain's inference layout: ``encoder`` is a
  :class:`~speechpos.inference.ctc_pipeline.CTCPipeline` of filterbank -> normalisation -> speechpos encoder -> CTC
  layer -> log-softmax, with ``modules``, ``tokenizer``, ``decoding_function`` (greedy) and a
  ``pretrainer`` that loads the files below;
- ``encoder.ckpt``, ``ctc_lin.ckpt`` (state dicts) and ``normalizer.ckpt`` (SpeechBrain's
  ``InputNormalization`` statistics, saved by its own saver), each named after its loadable
  (SpeechBrain's ``<source>/<name>.ckpt`` layout, so the pretrainer needs no ``paths``);
- ``tokenizer.ckpt``: SpeechBrain's ``CTCTextEncoder`` file (characters) or the SentencePiece
  model;
- ``README.md``, a model card (data, training, WER, the command that made it), and
  ``speechpos_export.json`` (what :meth:`SpeechModel.from_run` reads to load the folder itself).

The encoder classes are speechpos's, so loading needs ``speechpos`` installed; the run folder
is no longer needed.

SentencePiece units: speechpos puts the CTC blank at index 0 and unit ``i`` at ``i + 1``;
SpeechBrain's CTC recipes share index 0 between the blank and SentencePiece's ``<unk>`` and
decode with ``tokenizer.decode_ids``. The export re-orders the CTC layer's rows to that
convention (blank at 0, unit ``i`` at ``i`` for ``i >= 1``, the ``<unk>`` row dropped), so
``EncoderASR`` decodes it as it decodes SpeechBrain's own models; transcripts change only if
``<unk>`` was the best unit of a frame.

Example (with a trained run)::

    speechpos export results/ctc/conformer/1234 models/ctc-bench
    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="models/ctc-bench", savedir="pretrained/ctc-bench")
    asr.transcribe_file("some.flac")
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

# Loading an exported folder lives in asr.py (SpeechModel.from_run reads both kinds of folder);
# this module only writes, so the import goes one way.
from speechpos.inference.asr import (
    EXPORT_MARKER,
    ExportError,
    SpeechModel,
    load_export,
)

__all__ = [
    "EXPORT_MARKER", "ExportError", "export_encoder", "export_lm", "export_run", "finetune_encoder",
    "load_export", "model_card", "sentencepiece_rows",
]

# hparams of the run that build the encoder (speechpos.speech.build_speech_encoder's keys).
ARCHITECTURE_KEYS = {
    "n_mels": "n_mels", "patch_frames": "patch_frames", "kind": "encoder_kind",
    "num_layers": "num_layers", "d_model": "d_model", "nhead": "nhead", "d_ffn": "d_ffn",
    "dropout": "dropout", "kernel_size": "kernel_size", "conv_mode": "conv_mode",
    "null_key": "null_key", "position_embedding": "position_embedding",
    "max_positions": "max_positions", "frontend": "frontend",
}

_FEATURES_AND_ENCODER = """\
compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_mels: !ref <n_mels>

normalize: !new:speechbrain.processing.features.InputNormalization
    norm_type: {norm_type}

{name}: !apply:speechpos.speech.build_speech_encoder
{encoder_args}
"""

_YAML = """\
# Inference hparams of a speechpos CTC model, in SpeechBrain's layout:
#   from speechbrain.inference.ASR import EncoderASR
#   asr = EncoderASR.from_hparams(source=<this folder>, savedir=<a cache folder>)
#   asr.transcribe_file("some.flac")
# Written by `speechpos export` from {run}

sample_rate: {sample_rate}
{arch}
token_type: {token_type}
blank_index: 0

{features_and_encoder}
ctc_lin: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <d_model>
    n_neurons: {n_units}

# Padding-independent: a file decodes the same alone and in any batch (speechpos.inference.ctc_pipeline).
encoder: !new:speechpos.inference.ctc_pipeline.CTCPipeline
    compute_features: !ref <compute_features>
    normalize: !ref <normalize>
    encoder_model: !ref <encoder_model>
    ctc_lin: !ref <ctc_lin>
    blank_index: !ref <blank_index>

audio_normalizer: !new:speechbrain.dataio.preprocess.AudioNormalizer
    sample_rate: !ref <sample_rate>

tokenizer: {tokenizer}

decoding_function: !name:speechpos.inference.ctc_pipeline.greedy_decode_ids
    blank_id: !ref <blank_index>
    space_id: {space_id}

modules:
    encoder: !ref <encoder>

# Each loadable is read from <source>/<name>.ckpt (SpeechBrain's default_source layout).
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder_model>
        normalizer: !ref <normalize>
        ctc_lin: !ref <ctc_lin>
        tokenizer: !ref <tokenizer>
"""


def export_lm(model: SpeechModel, out: Path, lm_text=None, lm_arpa=None, order: int = 3) -> dict | None:
    """Write ``lm.arpa`` and ``lm_lexicon.txt`` into ``out`` (see :func:`export_run`); returns
    their settings with the LM text's words and the out-of-lexicon rate of the run's test
    splits, or None when there is no LM to export."""
    lm = _export_lm_files(model, out, lm_text, lm_arpa, order)
    if lm is not None:
        from speechpos.speech.data.dataio import load_manifest
        from speechpos.speech.lm import out_of_lexicon

        lexicon = [line.split("\t", 1)[0] for line in (out / lm["lexicon"]).read_text(encoding="utf-8").splitlines()]
        lm["lexicon_words"] = len(lexicon)
        lm["out_of_lexicon"] = {
            split: out_of_lexicon(lexicon, [str(r["wrd"]) for r in load_manifest(csv).data.values()])
            for split, csv in model.hparams.get("test_csvs", {}).items() if Path(csv).is_file()
        }
    return lm


def _export_lm_files(model: SpeechModel, out: Path, lm_text=None, lm_arpa=None, order: int = 3) -> dict | None:
    from speechpos.speech.lm import arpa_words, lexicon_entries, write_lexicon
    from speechpos.speech.lm_decoding import (
        build_lm_files,
        decoder_tokens,
        default_lm_text,
        read_lm_text,
    )

    hp = model.hparams
    settings = {"arpa": "lm.arpa", "lexicon": "lm_lexicon.txt", "lm_weight": hp.get("lm_weight", 1.0),
                "word_score": hp.get("word_score", -1.0), "beam_size": hp.get("lm_beam_size", 50)}
    if lm_arpa:
        units = set(decoder_tokens(model.tokenizer))
        entries = lexicon_entries(arpa_words(lm_arpa), units)
        if not entries:
            raise ExportError(f"{lm_arpa}: none of its words can be spelled with the model's units")
        shutil.copy(lm_arpa, out / "lm.arpa")
        write_lexicon(entries, str(out / "lm_lexicon.txt"))
        return {**settings, "source": f"ARPA {lm_arpa} ({len(entries)} words in the lexicon)"}
    if not lm_text and model.saved_lm:
        shutil.copy(model.saved_lm["arpa"], out / "lm.arpa")
        shutil.copy(model.saved_lm["lexicon"], out / "lm_lexicon.txt")
        return {**settings, "source": model.saved_lm["source"], "text": model.saved_lm.get("text"),
                "words": model.saved_lm.get("words")}
    # Not given and the run has none: the LM text of the corpus the run trained on, if any (the
    # lexicon decoder spells words in characters: sentencepiece models get no default LM).
    if not lm_text and hp.get("token_type", "char") != "char":
        return None
    lm_text = default_lm_text(lm_text, hp.get("data_folder"))
    if lm_text:
        sentences = read_lm_text(lm_text)
        with tempfile.TemporaryDirectory() as tmp:
            arpa, lexicon = build_lm_files(tmp, sentences, model.tokenizer, order,
                                           source=f"lm_text {lm_text}")
            shutil.copy(arpa, out / "lm.arpa")
            shutil.copy(lexicon, out / "lm_lexicon.txt")
        return {**settings, "source": f"{order}-gram of lm_text {lm_text}", "text": f"lm_text {lm_text}",
                "words": sum(len(s.split()) for s in sentences)}
    return None


def sentencepiece_rows(n_units: int) -> list[int]:
    """Rows of a speechpos SentencePiece CTC layer (blank, unit 0 = ``<unk>``, unit 1, ...) in
    SpeechBrain's order (blank, unit 1, unit 2, ...): ``<unk>`` dropped, the blank at 0.

    >>> sentencepiece_rows(5)
    [0, 2, 3, 4]
    """
    return [0, *range(2, n_units)]


def export_run(run: str | Path, out: str | Path, command: str | None = None,
               lm_text: str | None = None, lm_arpa: str | None = None, lm_order: int = 3,
               with_lm: bool = True) -> Path:
    """Write ``run``'s best checkpoint as a SpeechBrain inference folder ``out`` (created; files
    already there are replaced); a pretraining run's encoder goes through
    :func:`export_encoder`. Returns ``out``.

    Raises :class:`~speechpos.inference.asr.RunError` for a folder that is not a speechpos run
    and :class:`ExportError` when ``out`` is the run itself.

    The n-gram LM (characters only) goes into the folder too: built from ``lm_text`` (one
    sentence a line, upper case, as LibriSpeech's ``librispeech-lm-norm.txt``), or a ready
    ``lm_arpa`` with a lexicon of its unigrams, or else the run's own (``asr_ctc.py
    --lm_decoding=True``), or else built from the LM text of the run's corpus
    (``<data_folder>/librispeech-lm-norm.txt``) where there is one, with the run's
    ``lm_weight``/``word_score``; ``speechpos transcribe --lm`` decodes with it (SpeechBrain's
    ``EncoderASR`` decodes greedy). The model card names the LM text, its words and the
    out-of-lexicon rate of each test split. ``with_lm=False``: no LM."""
    run, out = Path(run), Path(out)
    if out.resolve() == run.resolve():
        raise ExportError(f"{out}: export into a new folder, not into the run")
    model = SpeechModel.from_run(run)
    if model.ctc_lin is None:
        return export_encoder(run, out, command)
    out.mkdir(parents=True, exist_ok=True)
    hp = model.hparams
    token_type = hp["token_type"]

    torch.save(model.encoder.state_dict(), out / "encoder.ckpt")
    model.normalize._save(out / "normalizer.ckpt")
    ctc_state = model.ctc_lin.state_dict()
    space_id = "null"
    if token_type == "char":
        model.tokenizer.encoder.save(out / "tokenizer.ckpt")
        tokenizer = "!new:speechbrain.dataio.encoder.CTCTextEncoder"
        space_id = model.tokenizer.encoder.lab2ind.get(" ", "null")
    else:
        rows = sentencepiece_rows(len(model.tokenizer))
        ctc_state = {k: v[rows].clone() for k, v in ctc_state.items()}
        sp_model = sorted((run / "save" / "sentencepiece").glob("*.model"))
        if len(sp_model) != 1:
            raise ExportError(f"{run / 'save' / 'sentencepiece'}: expected one .model file, "
                              f"found {len(sp_model)}")
        shutil.copy(sp_model[0], out / "tokenizer.ckpt")
        tokenizer = "!new:sentencepiece.SentencePieceProcessor"
    torch.save(ctc_state, out / "ctc_lin.ckpt")
    n_units = next(iter(ctc_state.values())).shape[0]

    arch, encoder_args = _architecture_lines({arg: hp[key] for arg, key in ARCHITECTURE_KEYS.items()})
    (out / "hyperparams.yaml").write_text(_YAML.format(
        run=run, sample_rate=hp["sample_rate"], arch=arch, token_type=token_type,
        features_and_encoder=_FEATURES_AND_ENCODER.format(
            norm_type=model.normalize.norm_type, name="encoder_model", encoder_args=encoder_args),
        n_units=n_units,
        tokenizer=tokenizer,
        space_id=space_id,
    ), encoding="utf-8")
    results = _read_json(run / "results.json")
    meta = {"format": 1, "source_run": str(run.resolve()), "token_type": token_type,
            "command": command, "results": results,
            "lm": export_lm(model, out, lm_text, lm_arpa, lm_order) if with_lm else None}
    (out / EXPORT_MARKER).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    (out / "README.md").write_text(model_card(hp, results, run, command, meta["lm"]), encoding="utf-8")
    return out


_ENCODER_YAML = """\
# A pretrained speechpos encoder, ready for fine-tuning in your own SpeechBrain recipe.
# Copy these keys into your hparams (or !include this file) and call, before training,
#     hparams["pretrainer"].collect_files()
#     hparams["pretrainer"].load_collected()
# as SpeechBrain's own self-supervised recipes do. `encoder` maps (batch, frames, n_mels)
# normalised filterbanks and relative lengths to (encodings, token lengths); it holds a
# zero-initialised learned position embedding (and, where the pretext ran the conformer without
# its convolution, a zero-initialised convolution switched on), as speechpos's asr_ctc.py does.
# Written by `speechpos export` from {run}

pretrained_folder: {out}
sample_rate: {sample_rate}
{arch}

{features_and_encoder}
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder>
    paths:
        encoder: !ref <pretrained_folder>/encoder.ckpt
"""


def finetune_encoder(run_hparams: dict, checkpoint: str | Path, conv_mode: str = "on",
                     position_embedding: str = "learned"):
    """The encoder that ``asr_ctc.py`` fine-tunes from a pretraining run: the run's architecture
    with a zero-initialised ``position_embedding``, the pretrained weights loaded strictly, and a
    conformer convolution that was off in pretraining switched to ``conv_mode`` zero-initialised."""
    from speechpos.speech import build_speech_encoder
    from speechpos.speech.encoder import set_convolution_mode
    from speechpos.speech.model import load_encoder_state

    args = {arg: run_hparams[key] for arg, key in ARCHITECTURE_KEYS.items() if key in run_hparams}
    args.update(position_embedding=position_embedding, conv_mode=conv_mode, frontend="patch")
    encoder = build_speech_encoder(**args)
    load_encoder_state(encoder, checkpoint)
    if run_hparams["encoder_kind"] == "conformer" and run_hparams["conv_mode"] == "off":
        set_convolution_mode(encoder, conv_mode, zero_init=True)
    return encoder, args


def export_encoder(run: str | Path, out: str | Path, command: str | None = None) -> Path:
    """A pretraining run's encoder as ``out/encoder.ckpt`` (ready to fine-tune: see
    :func:`finetune_encoder`) and ``out/hyperparams.yaml``, the keys that build it and the
    SpeechBrain ``Pretrainer`` that loads it. Returns ``out``."""
    from hyperpyyaml import load_hyperpyyaml

    run, out = Path(run), Path(out)
    with open(run / "hyperparams.yaml", encoding="utf-8") as f:
        hp = load_hyperpyyaml(f)
    encoder, args = finetune_encoder(hp, run / "encoder.ckpt")
    out.mkdir(parents=True, exist_ok=True)
    torch.save(encoder.state_dict(), out / "encoder.ckpt")
    arch, encoder_args = _architecture_lines({arg: args[arg] for arg in ARCHITECTURE_KEYS if arg in args})
    (out / "hyperparams.yaml").write_text(_ENCODER_YAML.format(
        run=run, out=json.dumps(str(out.resolve())), sample_rate=hp["sample_rate"], arch=arch,
        features_and_encoder=_FEATURES_AND_ENCODER.format(
            norm_type=hp["normalize"].norm_type, name="encoder", encoder_args=encoder_args),
    ), encoding="utf-8")
    meta = {"format": 1, "kind": "pretrained_encoder", "source_run": str(run.resolve()), "command": command}
    (out / "speechpos_encoder.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return out


def model_card(hp: dict, results: dict, run: Path, command: str | None, lm: dict | None = None) -> str:
    """README.md of an exported folder: data, training, WER, the LM and how to use it."""
    lines = ["# speechpos CTC model", "",
             f"A {hp['num_layers']}-layer {hp['encoder_kind']} (d_model {hp['d_model']}, "
             f"{hp['frontend']} front-end, {hp['patch_frames']}-frame tokens, position embedding "
             f"`{hp['position_embedding']}`), {hp['token_type']} CTC units, greedy decoding.", "",
             "## Training", "",
             f"- labelled data: `{hp['train_csv']}`",
             f"- pretrained encoder: `{hp.get('pretrained_encoder')}`",
             f"- steps: {hp.get('number_of_steps')}, lr {hp.get('lr')}, precision `{hp.get('precision')}`",
             f"- source run: `{run}`", ""]
    if results:
        lines += ["## Word error rate", "", "| split | WER % | CER % | WER with LM % | training s |",
                  "|---|---|---|---|---|"]
        for split, r in results.items():
            lines.append(f"| {split} | {r.get('WER')} | {r.get('CER')} | {r.get('WER_lm', '')} | "
                         f"{r.get('train_seconds', '')} |")
        lines.append("")
    if lm:
        lines += ["## Language model", "",
                  f"Word n-gram LM (`lm.arpa`, lexicon `lm_lexicon.txt`: {lm.get('lexicon_words')} words) from "
                  f"{lm.get('text') or lm['source']}" + (f", {lm['words']} words of text" if lm.get("words") else "")
                  + f"; lm_weight {lm['lm_weight']}, word_score {lm['word_score']}, beam {lm['beam_size']}. "
                  "`speechpos transcribe --lm` decodes with it; it outputs only lexicon words.", "",
                  "| split | running words | out of lexicon | % |", "|---|---|---|---|"]
        lines += [f"| {s} | {o['words']} | {o['out_of_lexicon']} | {o['percent']} |"
                  for s, o in lm.get("out_of_lexicon", {}).items()]
        lines.append("")
    lines += ["## Use", "", "```python", "from speechbrain.inference.ASR import EncoderASR",
              'asr = EncoderASR.from_hparams(source="<this folder>", savedir="<a cache folder>")',
              'print(asr.transcribe_file("some.flac"))', "```", "",
              "or `speechpos transcribe <this folder> FILES_OR_FOLDERS` (needs `speechpos` installed "
              "either way: the encoder classes are its own).", "",
              f"Made by: `{command or 'speechpos export ' + str(run)}`", ""]
    return "\n".join(lines)


def _architecture_lines(values: dict) -> tuple[str, str]:
    """The yaml's architecture keys (``d_model: 144`` ...) and the encoder builder's arguments
    that refer to them, for ``values`` keyed by builder argument (see ``ARCHITECTURE_KEYS``)."""
    keys = {arg: ARCHITECTURE_KEYS[arg] for arg in values}
    arch = "\n".join(f"{keys[arg]}: {_yaml_value(v)}" for arg, v in values.items())
    encoder_args = "\n".join(f"    {arg}: !ref <{key}>" for arg, key in keys.items())
    return arch, encoder_args


def _yaml_value(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
