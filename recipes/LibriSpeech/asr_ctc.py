#!/usr/bin/env python3
"""CTC speech recognition, from scratch or from pretrain.py's encoder, with WER.

Usage (from this folder, or with the paths from the repository root)::

    python asr_ctc.py                                               # hparams/ctc.yaml, from scratch
    python asr_ctc.py hparams/ctc.yaml --data_folder=/path/to/LibriSpeech
    python asr_ctc.py hparams/ctc.yaml --frontend=patch --encoder_kind=transformer --null_key=True \
        --position_embedding=learned --pretrained_encoder=results/pp/transformer/1234/encoder.ckpt
    python asr_ctc.py hparams/ctc.yaml --position_embedding=none      # no position at all
    python asr_ctc.py hparams/ctc.yaml --train_csv=<prep>/train-1h.csv   # low-label training
    python asr_ctc.py hparams/ctc.yaml --number_of_steps=2000 \
        --train_samples_per_epoch=800        # a fixed number of steps, validated every 100 steps

From scratch the defaults build the baseline of ``hparams/ctc.yaml`` (6-layer conformer on 40-ms
patches, sinusoidal positions, duration batches, warm-up + decay over ``number_of_steps``). From a
pretrained encoder, zero-initialised position embeddings are added (the pretrained function is
unchanged at step 0). Each test split gets ``wer_<split>.txt`` (SpeechBrain's ErrorRateStats,
with a jiwer cross-check) and ``results.json`` collects WER/CER of every split, with the training
time and throughput.

With ``--lm_decoding=True`` the test splits are also decoded with a word n-gram LM (beam search,
:mod:`speechpos.speech.lm_decoding`) built from ``--lm_text`` when given, else from the corpus's
LM text ``<data_folder>/librispeech-lm-norm.txt`` where there is one (``tools/data/make_corpus.py``
writes it: every document not read in dev or test), else from the training transcripts:
``WER_lm``/``CER_lm``, ``wer_lm_<split>.txt``, and the LM text's overlap with each split
(``lm_text_overlap``). Tune ``lm_weight``/``word_score`` on dev with ``tools/studies/tune_lm.py``.
"""

import json
import logging
import os
import sys

import jiwer
import speechbrain as sb
import torch
from speechbrain.augment.augmenter import Augmenter
from speechbrain.dataio.sampler import ReproducibleRandomSampler
from speechbrain.utils.distributed import if_main_process, run_on_main

from speechpos.recipes import (
    ConfigError,
    die,
    drop_missing_test_splits,
    prepare_speech_data,
    start_experiment,
    train_loader_options,
    user_errors,
)
from speechpos.speech.ctc import (
    CharTokenizer,
    CTCAlignmentError,
    SentencePieceTokenizer,
    TranscriptError,
    beam_decode,
    greedy_decode,
    make_beam_searcher,
)
from speechpos.speech.data.audio import min_samples_for_patch
from speechpos.speech.data.corruptions import make_corruptions
from speechpos.speech.data.dataio import audio_dataset
from speechpos.speech.encoder import set_convolution_mode
from speechpos.speech.lm import MAX_ORDER, out_of_lexicon
from speechpos.speech.lm_decoding import (
    LMDecoder,
    build_char_lm,
    build_lm_files,
    check_overlap,
    default_lm_text,
    lm_sentences,
)
from speechpos.speech.model import load_encoder_state
from speechpos.speech.patches import feature_lengths
from speechpos.speech.pretraining import ClockedBrain, peak_memory_mib

logger = logging.getLogger(__name__)


class CTCFineTune(ClockedBrain):
    """Encoder + linear CTC layer; WER/CER on valid and test (and with the n-gram LM on test);
    training time and throughput (validation excluded) with every validation."""

    lm_decoder = None  # an LMDecoder with lm_decoding (see make_lm_decoder)
    wav_augmenter = None  # reverberation and/or noise (see make_wav_augmenter)

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        if stage == sb.Stage.TRAIN and self.hparams.speed_perturb:
            wavs = self.hparams.speed_perturber(wavs)
        if stage == sb.Stage.TRAIN and self.wav_augmenter is not None:
            wavs, _ = self.wav_augmenter(wavs, wav_lens)
        feats = self.hparams.compute_features(wavs)
        # A file's frames as it has alone (see feature_lengths), whatever its batch.
        wav_lens = feature_lengths(wav_lens, wavs.shape[1], feats.shape[1],
                                   self.hparams.compute_features.compute_STFT.hop_length)
        feats = self.modules.normalize(feats, wav_lens)
        if stage == sb.Stage.TRAIN and self.hparams.spec_augment:
            feats = self.hparams.time_drop(feats)
            feats = self.hparams.freq_drop(feats)
        if self.hparams.freeze_encoder:
            # A linear probe: the encoder is a fixed feature extractor, only ctc_lin learns.
            self.modules.encoder.eval()
            with torch.no_grad():
                enc, lengths = self.modules.encoder(feats, wav_lens)
        else:
            enc, lengths = self.modules.encoder(feats, wav_lens)
        log_probs = torch.log_softmax(self.modules.ctc_lin(enc), dim=-1)
        return log_probs, lengths.float() / log_probs.shape[1]

    def compute_objectives(self, predictions, batch, stage):
        log_probs, out_lens = predictions
        tokens, token_lens = batch.tokens
        if stage == sb.Stage.TRAIN:
            self.check_ctc_feasible(batch.id, log_probs, out_lens, tokens, token_lens)
        loss = sb.nnet.losses.ctc_loss(
            log_probs, tokens, out_lens, token_lens, blank_index=self.tokenizer.blank_index
        )
        if stage != sb.Stage.TRAIN:
            if stage == sb.Stage.TEST and self.hparams.decoding == "beam":
                hyps = beam_decode(self.beam_searcher, log_probs, out_lens)
            else:
                hyps = greedy_decode(log_probs, out_lens, self.tokenizer)
            refs = batch.wrd
            self.wer_metric.append(batch.id, [h.split() for h in hyps], [r.split() for r in refs])
            self.cer_metric.append(batch.id, [h.split() for h in hyps], [r.split() for r in refs])
            self.texts.extend(zip(refs, hyps, strict=True))
            if stage == sb.Stage.TEST and self.lm_decoder is not None:
                lm_hyps = [h.split() for h in self.lm_decoder(log_probs, out_lens)]
                self.wer_lm_metric.append(batch.id, lm_hyps, [r.split() for r in refs])
                self.cer_lm_metric.append(batch.id, lm_hyps, [r.split() for r in refs])
        return loss

    def check_ctc_feasible(self, ids, log_probs, out_lens, tokens, token_lens):
        """CTC needs at least as many frames as targets (plus one per repeated unit); SpeechBrain's
        loss silently gives 0 to utterances that cannot be aligned, so say which ones they are."""
        frames = torch.round(out_lens * log_probs.shape[1]).long()
        targets = torch.round(token_lens * tokens.shape[1]).long()
        repeats = (
            (tokens[:, 1:] == tokens[:, :-1])
            & (torch.arange(1, tokens.shape[1], device=tokens.device)[None] < targets[:, None])
        ).sum(1)
        bad = [
            uid
            for uid, f, n in zip(ids, frames.tolist(), (targets + repeats).tolist(), strict=True)
            if f < n
        ]
        if bad:
            message = (
                f"{len(bad)} of {len(ids)} utterances of the batch have fewer encoder frames than CTC "
                f"targets and get no loss (e.g. {', '.join(bad[:3])}): use smaller patch_frames or "
                "token_type=sentencepiece"
            )
            if len(bad) == len(ids):
                raise CTCAlignmentError(message)
            logger.warning(message)

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()
            self.texts = []
        if stage == sb.Stage.TEST:
            self.wer_lm_metric = self.hparams.error_rate_computer()
            self.cer_lm_metric = self.hparams.cer_computer()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        super().on_stage_end(stage, stage_loss, epoch)
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = {**stats, "audio_s_per_s": self.stage_throughput()}
            return
        stats["WER"] = self.wer_metric.summarize("error_rate")
        stats["CER"] = self.cer_metric.summarize("error_rate")
        if stage == sb.Stage.TEST and self.lm_decoder is not None:
            stats["WER_lm"] = self.wer_lm_metric.summarize("error_rate")
            stats["CER_lm"] = self.cer_lm_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "steps": self.clock.steps,
                    "train_time_s": round(self.clock.train_seconds, 1),
                },
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"WER": stats["WER"], "CER": stats["CER"]}, min_keys=[self.hparams.select_on]
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "split": self.test_split,
                    "steps trained": self.steps_trained,
                    "tested checkpoint epoch": self.hparams.epoch_counter.current,
                    "tested checkpoint steps": self.optimizer_step,
                },
                test_stats=stats,
            )
            if if_main_process():
                self.write_test_results(stats)

    def write_test_results(self, stats):
        """wer_<split>.txt with SpeechBrain's alignments, cross-checked with jiwer (and
        wer_lm_<split>.txt for the LM decoding)."""
        refs = [r for r, _ in self.texts]
        hyps = [h for _, h in self.texts]
        jiwer_wer = 100 * jiwer.wer(refs, hyps) if refs else 0.0
        if abs(jiwer_wer - stats["WER"]) > 1e-6 * max(1.0, jiwer_wer):
            logger.warning("WER mismatch: SpeechBrain %.4f, jiwer %.4f", stats["WER"], jiwer_wer)
        out = self.hparams.output_folder
        with open(os.path.join(out, f"wer_{self.test_split}.txt"), "w", encoding="utf-8") as w:
            self.wer_metric.write_stats(w)
            w.write(f"\njiwer WER: {jiwer_wer:.2f}\n")
        path = os.path.join(out, "results.json")
        results = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                results = json.load(f)
        seconds, audio = self.trained
        results[self.test_split] = {
            "WER": round(stats["WER"], 2),
            "CER": round(stats["CER"], 2),
            "jiwer_WER": round(jiwer_wer, 2),
            "decoding": self.hparams.decoding,
            "utterances": len(refs),
            "selected_on": self.hparams.select_on,
            "steps_trained": self.steps_trained,
            "checkpoint_steps": self.optimizer_step,
            "train_seconds": round(seconds, 1),
            "train_audio_s_per_s": round(audio / max(seconds, 1e-9), 1),
            "checkpoint_train_seconds": round(self.clock.train_seconds, 1),
            "precision": self.precision,
            "torch_threads": torch.get_num_threads(),
            "device": str(self.device),
            "compiled": bool(self.compile),
            **self.warmup.report(),
            "peak_memory_mib": round(peak_memory_mib(self.device), 1),
            "peak_memory_kind": "cuda allocated" if str(self.device).startswith("cuda") else "process RSS",
        }
        if self.lm_decoder is not None:
            with open(os.path.join(out, f"wer_lm_{self.test_split}.txt"), "w", encoding="utf-8") as w:
                self.wer_lm_metric.write_stats(w)
            results[self.test_split].update(
                WER_lm=round(stats["WER_lm"], 2),
                CER_lm=round(stats["CER_lm"], 2),
                lm=self.lm_settings,
                lm_text_overlap={k: v for k, v in self.lm_overlap[self.test_split].items()
                                 if k != "out_of_lexicon"},
                lm_out_of_lexicon=self.lm_overlap[self.test_split]["out_of_lexicon"],
            )
        with open(path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


def make_tokenizer(hparams):
    """Characters (default) or sentencepiece units, built from the training transcripts."""
    if hparams["token_type"] == "char":
        ds = sb.dataio.dataset.DynamicItemDataset.from_csv(hparams["train_csv"])
        texts = [row["wrd"] for row in ds.data.values()] + [hparams["characters"]]
        return CharTokenizer.load_or_create(
            os.path.join(hparams["save_folder"], "tokenizer.txt"), texts
        )
    if hparams["token_type"] == "sentencepiece":
        return SentencePieceTokenizer(
            os.path.join(hparams["save_folder"], "sentencepiece"),
            hparams["sentencepiece_vocab"],
            hparams["train_csv"],
        )
    raise ConfigError(
        f"token_type must be 'char' or 'sentencepiece', got {hparams['token_type']!r}"
    )


def make_lm_decoder(hparams, tokenizer):
    """With ``lm_decoding``: the overlap of every test split with the LM text (logged, with a
    warning when not 0), the ARPA LM and lexicon (built once into save_folder) and their
    decoder. Returns (decoder or None, the LM settings, {test split: overlap})."""
    if not hparams["lm_decoding"]:
        return None, None, {}
    if hparams["token_type"] != "char":
        raise ConfigError(
            "lm_decoding: True needs token_type: char (the lexicon spells words in characters "
            f"ending with the space), got token_type: {hparams['token_type']!r}"
        )
    key = "lm_char_order" if hparams["lm_lexicon_free"] else "lm_order"
    order = hparams[key]
    if not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
        raise ConfigError(f"{key} must be an integer from 1 to {MAX_ORDER} (the decoder's KenLM reads no "
                          f"longer n-grams), got {order!r}")
    if not isinstance(hparams["lm_prune"], int) or hparams["lm_prune"] < 0:
        raise ConfigError(f"lm_prune must be an integer >= 0, got {hparams['lm_prune']!r}")
    sentences, source = lm_sentences(default_lm_text(hparams["lm_text"], hparams["data_folder"]),
                                     hparams["train_csv"])
    logger.info("LM text: %s (%d sentences, %d words)", source, len(sentences),
                sum(len(s.split()) for s in sentences))
    words = {w for s in sentences for w in s.split()}
    overlap = {
        name: {**check_overlap(sentences, csv, name, source),
               "out_of_lexicon": out_of_lexicon(words, transcripts(csv))}
        for name, csv in hparams["test_csvs"].items()
    }
    files = {"folder": hparams["save_folder"], "sentences": sentences, "tokenizer": tokenizer,
             "order": order, "source": source, "prune": hparams["lm_prune"]}
    build = build_char_lm if hparams["lm_lexicon_free"] else build_lm_files
    run_on_main(build, kwargs=files)
    arpa, lexicon = (build(**files), None) if hparams["lm_lexicon_free"] else build(**files)
    settings = {"text": source, "words": sum(len(s.split()) for s in sentences), "order": order,
                "units": "char, lexicon-free" if hparams["lm_lexicon_free"] else "word",
                "prune": hparams["lm_prune"], "lm_weight": hparams["lm_weight"],
                "word_score": hparams["word_score"], "beam_size": hparams["lm_beam_size"]}
    decoder = LMDecoder(tokenizer, arpa, lexicon, lm_weight=settings["lm_weight"],
                        word_score=settings["word_score"], beam_size=settings["beam_size"])
    return decoder, settings, overlap


def transcripts(csv):
    """The transcripts (``wrd``) of a manifest."""
    return [str(row["wrd"]) for row in sb.dataio.dataset.DynamicItemDataset.from_csv(csv).data.values()]


def make_wav_augmenter(hparams):
    """With ``add_reverb`` and/or ``add_noise``: the noise and RIR files (made once from the
    training CSV on the main process) and SpeechBrain's Augmenter applying the switched-on
    corruptions in turn (reverberation first) with probability ``wav_augment_prob``."""
    augmentations = [hparams[key] for key, on in (("reverb_adder", hparams["add_reverb"]),
                                                  ("noise_adder", hparams["add_noise"])) if on]
    if not augmentations:
        return None
    if not 0 < hparams["wav_augment_prob"] <= 1:
        raise ConfigError(f"wav_augment_prob must be in (0, 1], got {hparams['wav_augment_prob']!r}")
    run_on_main(make_corruptions, kwargs={"folder": hparams["corruptions_folder"],
                                          "train_csv": hparams["train_csv"], "seed": hparams["seed"]})
    return Augmenter(augmentations=augmentations, min_augmentations=len(augmentations),
                     max_augmentations=len(augmentations), augment_prob=hparams["wav_augment_prob"])


def dataio_prepare(hparams, tokenizer):
    """Train, valid and test datasets, each item with checked audio and CTC targets."""
    min_samples = min_samples_for_patch(hparams["patch_frames"], sample_rate=hparams["sample_rate"])
    rate = hparams["sample_rate"]
    train = audio_dataset(hparams["train_csv"], rate, min_samples, sort=hparams["sorting"])
    valid = audio_dataset(hparams["valid_csv"], rate, min_samples, sort="ascending")
    tests = {
        name: audio_dataset(csv, rate, min_samples, sort="ascending")
        for name, csv in hparams["test_csvs"].items()
    }
    datasets = [train, valid, *tests.values()]

    @sb.utils.data_pipeline.takes("id", "wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens")
    def text_pipeline(uid, wrd):
        text = " ".join(str(wrd).split())
        if not text:
            raise TranscriptError(f"utterance {uid}: empty transcript")
        yield text
        try:
            yield torch.LongTensor(tokenizer.encode(text))
        except TranscriptError as err:
            raise TranscriptError(f"utterance {uid}: {err}") from err

    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens"])
    return train, valid, tests


def load_pretrained(hparams):
    """Load pretrain.py's encoder into this recipe's encoder (strictly; PE may be new)."""
    path = hparams["pretrained_encoder"]
    if not path:
        return
    if hparams["frontend"] != "patch":
        raise ConfigError(
            f"pretrained encoders use the patch front-end: add --frontend=patch (got "
            f"frontend: {hparams['frontend']!r} with pretrained_encoder {path})"
        )
    load_encoder_state(hparams["encoder"], path)
    if hparams["encoder_kind"] == "conformer" and hparams["pretrained_conv_mode"] == "off":
        set_convolution_mode(hparams["encoder"], hparams["conv_mode"], zero_init=True)


def freeze_encoder(hparams):
    """With ``freeze_encoder``, the encoder's weights get no gradient (a linear CTC probe)."""
    if hparams["freeze_encoder"]:
        for param in hparams["encoder"].parameters():
            param.requires_grad_(False)


def train_loader_kwargs(hparams, train):
    """With ``train_samples_per_epoch``, an "epoch" is that many utterances drawn with
    replacement (small label budgets then validate every N utterances, not every few steps);
    otherwise batches of ``max_batch_length_train`` seconds when ``dynamic_batching`` is set."""
    if not hparams["train_samples_per_epoch"]:
        return train_loader_options(hparams, train)
    sampler = ReproducibleRandomSampler(
        train, seed=hparams["seed"], replacement=True, num_samples=hparams["train_samples_per_epoch"]
    )
    return {**hparams["train_dataloader_opts"], "sampler": sampler}


def main(argv):
    run_opts, hparams = start_experiment(argv, __file__, "hparams/ctc.yaml")
    if hparams["select_on"] not in ("WER", "CER"):
        raise ConfigError(f"select_on must be 'WER' or 'CER', got {hparams['select_on']!r}")
    drop_missing_test_splits(hparams)
    run_on_main(
        prepare_speech_data,
        kwargs={"hparams": hparams, "test_splits": hparams["test_splits"], "low_label": hparams["low_label"]},
    )
    tokenizer = make_tokenizer(hparams)
    hparams["ctc_lin"] = hparams["ctc_lin_builder"](n_neurons=len(tokenizer))
    hparams["modules"]["ctc_lin"] = hparams["ctc_lin"]
    hparams["checkpointer"].add_recoverable("ctc_lin", hparams["ctc_lin"])
    train, valid, tests = dataio_prepare(hparams, tokenizer)

    brain = CTCFineTune(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.tokenizer = tokenizer
    brain.beam_searcher = make_beam_searcher(tokenizer, hparams["beam_size"])
    brain.lm_decoder, brain.lm_settings, brain.lm_overlap = make_lm_decoder(hparams, tokenizer)
    brain.wav_augmenter = make_wav_augmenter(hparams)
    if not brain.checkpointer.find_checkpoints():
        load_pretrained(hparams)
    freeze_encoder(hparams)

    loader_kwargs = train_loader_kwargs(hparams, train)
    brain.train_sampler = loader_kwargs.get("sampler")  # so Brain calls set_epoch on it
    brain.fit(
        brain.hparams.epoch_counter,
        train,
        valid,
        train_loader_kwargs=loader_kwargs,
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    # evaluate() restores the chosen checkpoint's step count and training clock: keep the totals.
    brain.steps_trained = brain.optimizer_step
    brain.trained = (brain.clock.train_seconds, brain.clock.audio_seconds)
    for name, test_set in tests.items():
        brain.test_split = name
        brain.evaluate(test_set, min_key=hparams["select_on"], test_loader_kwargs=hparams["test_dataloader_opts"])


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except user_errors() as err:
        die(str(err))
