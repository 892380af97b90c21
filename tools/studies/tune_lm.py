#!/usr/bin/env python3
"""Tune the n-gram LM decoding of a finished ``asr_ctc.py`` run on dev: a grid of ``lm_weight``
x ``word_score``, with the CTC log-probabilities computed once. Prints the dev WER of each pair
(greedy's for reference) and the best pair, to pass back as ``--lm_weight`` / ``--word_score``.

The LM and lexicon are the run's (``save/lm_*``), built here from its ``lm_text`` (or training
transcripts) when missing, as ``asr_ctc.py --lm_decoding=True`` does.

Usage::

    .venv/bin/python tools/studies/tune_lm.py results/ctc/conformer/1234 [--csv <prep>/dev-clean.csv]
        [--lm_weights 0.5 1 2 3 4] [--word_scores -2 -1 -0.5 0 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import speechbrain as sb  # noqa: E402
from speechbrain.utils.metric_stats import ErrorRateStats  # noqa: E402

from speechpos.inference import RunError, SpeechModel  # noqa: E402
from speechpos.recipes import user_errors  # noqa: E402
from speechpos.speech.ctc import greedy_decode  # noqa: E402
from speechpos.speech.data.dataio import audio_dataset  # noqa: E402
from speechpos.speech.lm_decoding import LMDecoder, build_lm_files, lm_sentences  # noqa: E402


def dev_log_probs(model: SpeechModel, csv: str, batch_size: int = 8):
    """[(ids, refs, log_probs on the CPU, relative lengths)] of the batches of ``csv``."""
    ds = audio_dataset(csv, model.sample_rate, model.min_samples, sort="ascending")
    ds.set_output_keys(["id", "sig", "wrd"])
    batches = []
    for batch in sb.dataio.dataloader.make_dataloader(ds, batch_size=batch_size):
        log_probs, lengths = model.ctc_log_probs(*batch.sig)
        refs = [" ".join(str(w).split()) for w in batch.wrd]
        batches.append((batch.id, refs, log_probs.float().cpu(), lengths.cpu()))
    return batches


def wer(batches, decode, cer: bool = False) -> float:
    """WER (%) of ``decode(log_probs, lengths)`` over the batches (SpeechBrain's ErrorRateStats);
    CER with ``cer``."""
    stats = ErrorRateStats(split_tokens=cer)
    for ids, refs, log_probs, lengths in batches:
        hyps = decode(log_probs, lengths)
        stats.append(ids, [h.split() for h in hyps], [r.split() for r in refs])
    return stats.summarize("error_rate")


def run_lm(model: SpeechModel, run: str | Path):
    """(arpa, lexicon) of a run's LM, built as ``asr_ctc.py --lm_decoding=True`` builds it."""
    hp = model.hparams
    sentences, source = lm_sentences(hp.get("lm_text"), hp["train_csv"])
    arpa, lexicon = build_lm_files(
        str(Path(run) / "save"), sentences, model.tokenizer, hp.get("lm_order", 3), source
    )
    return arpa, lexicon, source


def grid(model, batches, arpa, lexicon, weights, scores, beam_size=50) -> dict:
    """{(lm_weight, word_score): WER} over ``batches``."""
    return {
        (w, s): wer(batches, LMDecoder(model.tokenizer, arpa, lexicon, w, s, beam_size))
        for w in weights
        for s in scores
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="output folder of asr_ctc.py")
    p.add_argument("--csv", help="dev manifest (default: the run's valid_csv)")
    p.add_argument("--lm_weights", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0, 4.0])
    p.add_argument("--word_scores", type=float, nargs="+", default=[-2.0, -1.0, -0.5, 0.0, 1.0])
    p.add_argument("--beam_size", type=int, default=50)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    model = SpeechModel.from_run(args.run, args.device)
    if model.tokenizer is None:
        raise RunError(f"{args.run}: a pretraining run has no CTC layer to decode")
    hp = model.hparams
    arpa, lexicon, source = run_lm(model, args.run)
    batches = dev_log_probs(model, args.csv or hp["valid_csv"], args.batch_size)
    print(f"dev: {args.csv or hp['valid_csv']}, LM: {arpa} ({source})")
    print(f"greedy WER: {wer(batches, lambda lp, n: greedy_decode(lp, n, model.tokenizer)):.2f}")
    table = grid(model, batches, arpa, lexicon, args.lm_weights, args.word_scores, args.beam_size)
    print("| lm_weight \\ word_score | " + " | ".join(f"{s:g}" for s in args.word_scores) + " |")
    print("|---" * (len(args.word_scores) + 1) + "|")
    for weight in args.lm_weights:
        cells = " | ".join(f"{table[weight, s]:.2f}" for s in args.word_scores)
        print(f"| {weight:g} | {cells} |")
    (weight, score), best = min(table.items(), key=lambda kv: kv[1])
    print(f"best: --lm_weight={weight:g} --word_score={score:g} (dev WER {best:.2f})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (*user_errors(), RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
