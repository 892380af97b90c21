#!/usr/bin/env python3
"""Tune the n-gram LM decoding of a finished ``asr_ctc.py`` run on dev: for each LM (word n-gram
of each ``--orders`` x ``--prune``, and with ``--lexicon-free`` a character n-gram of each
``--char-orders``), a grid of ``lm_weight`` x ``word_score``, then ``--beam_sizes`` at the best
pair; the CTC log-probabilities are computed once. Prints the dev WER of each cell (greedy's
for reference), the best setting, the out-of-lexicon rate of dev and of every test split (the
share of running words that the lexicon lacks: a lexicon decoder gets each of them wrong), and
the decoding real-time factor (decoding seconds per audio second, one thread, LM loading
excluded) beside each WER. With ``--test`` each LM's best setting is also scored on the run's
test splits. With ``--docs DIR`` the tables go to ``DIR/lm_tuning.md`` and ``.json`` (``--report``
names other files, e.g. for a lexicon-free comparison beside the main tuning).

The LM text is ``--lm-text`` if given, else the run's ``lm_text``, else the corpus's LM text
(``<data_folder>/librispeech-lm-norm.txt``), else the run's training transcripts: as
``asr_ctc.py --lm_decoding=True`` chooses it.

Usage::

    .venv/bin/python tools/studies/tune_lm.py results/ctc/conformer/1234 [--csv <prep>/dev-clean.csv]
        [--lm_weights 0.5 1 2 3 4] [--word_scores -2 -1 -0.5 0 1] [--beam_sizes 10 25 50 100]
        [--orders 3 4] [--prune 0 1] [--lexicon-free --char-orders 6] [--test] [--docs docs]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import speechbrain as sb  # noqa: E402
import torch  # noqa: E402
from speechbrain.utils.metric_stats import ErrorRateStats  # noqa: E402

from speechpos.experiments.plots import repo_relative, tool_command  # noqa: E402
from speechpos.experiments.runs import cpu_name  # noqa: E402
from speechpos.inference import RunError, SpeechModel  # noqa: E402
from speechpos.recipes import user_errors  # noqa: E402
from speechpos.speech.ctc import greedy_decode  # noqa: E402
from speechpos.speech.data.dataio import audio_dataset, load_manifest  # noqa: E402
from speechpos.speech.lm import out_of_lexicon  # noqa: E402
from speechpos.speech.lm_decoding import (  # noqa: E402
    LMDecoder,
    build_char_lm,
    build_lm_files,
    default_lm_text,
    lm_sentences,
)


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


def audio_seconds(csv: str) -> float:
    """Total duration (s) of a manifest's utterances."""
    return sum(float(r["duration"]) for r in load_manifest(csv).data.values())


def wer(batches, decode, cer: bool = False) -> float:
    """WER (%) of ``decode(log_probs, lengths)`` over the batches (SpeechBrain's ErrorRateStats);
    CER with ``cer``."""
    stats = ErrorRateStats(split_tokens=cer)
    for ids, refs, log_probs, lengths in batches:
        hyps = decode(log_probs, lengths)
        stats.append(ids, [h.split() for h in hyps], [r.split() for r in refs])
    return stats.summarize("error_rate")


def timed_wer(batches, decode) -> tuple[float, float, float]:
    """(WER, CER, decoding seconds) of one decoding pass over the batches."""
    hyps, start = [], time.perf_counter()
    for _, _, log_probs, lengths in batches:
        hyps.append(decode(log_probs, lengths))
    seconds = time.perf_counter() - start
    stats = {cer: ErrorRateStats(split_tokens=cer) for cer in (False, True)}
    for (ids, refs, _, _), h in zip(batches, hyps, strict=True):
        for s in stats.values():
            s.append(ids, [x.split() for x in h], [r.split() for r in refs])
    return stats[False].summarize("error_rate"), stats[True].summarize("error_rate"), seconds


def lm_text_of(model: SpeechModel, lm_text: str | None = None) -> tuple[list[str], str]:
    """The LM sentences and their source, chosen as ``asr_ctc.py`` chooses them."""
    hp = model.hparams
    return lm_sentences(default_lm_text(lm_text or hp.get("lm_text"), hp.get("data_folder")), hp["train_csv"])


def run_lm(model: SpeechModel, run: str | Path, lm_text: str | None = None):
    """(arpa, lexicon, source) of a run's word LM, built as ``asr_ctc.py --lm_decoding=True``
    builds it (the run's order and pruning)."""
    hp = model.hparams
    sentences, source = lm_text_of(model, lm_text)
    arpa, lexicon = build_lm_files(str(Path(run) / "save"), sentences, model.tokenizer,
                                   hp.get("lm_order", 3), source, hp.get("lm_prune", 0))
    return arpa, lexicon, source


def build_lm(model, folder: Path, sentences, source, units: str, order: int, prune: int):
    """(arpa, lexicon or None) of one LM to tune, cached in its own folder."""
    sub = str(folder / f"{units}_{order}gram_prune{prune}")
    if units == "char":
        return build_char_lm(sub, sentences, model.tokenizer, order, source, prune), None
    return build_lm_files(sub, sentences, model.tokenizer, order, source, prune)


def grid(model, batches, arpa, lexicon, weights, scores, beam_size=50) -> dict:
    """{(lm_weight, word_score): WER} over ``batches``."""
    return {
        (w, s): wer(batches, LMDecoder(model.tokenizer, arpa, lexicon, w, s, beam_size))
        for w in weights
        for s in scores
    }


def arpa_sizes(path: str) -> dict[int, int]:
    """{order: n-grams} of an ARPA file's header."""
    sizes = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("ngram "):
                n, count = line.split()[1].split("=")
                sizes[int(n)] = int(count)
            elif line.startswith("\\1-grams"):
                break
    return sizes


def md_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def grid_scores(word_scores: list[float], lexicon) -> list[float]:
    """The word scores worth a grid column: all of them with a lexicon; without one (a
    character LM, lexicon-free) the word score changes no hypothesis (measured: identical grid
    columns), so one column, at 0.

    >>> grid_scores([-1.0, 0.0, 1.0], "lexicon.txt"), grid_scores([-1.0, 0.0, 1.0], None)
    ([-1.0, 0.0, 1.0], [0.0])
    """
    return list(word_scores) if lexicon is not None else [0.0]


def tune_one(model, dev, dev_seconds, arpa, lexicon, args) -> dict:
    """The weight x score grid at the first beam size, then the beam sizes at the best pair."""
    beam0 = args.beam_sizes[0]
    cells = []
    for w in args.lm_weights:
        for s in grid_scores(args.word_scores, lexicon):
            dec = LMDecoder(model.tokenizer, arpa, lexicon, w, s, beam0)
            w_, c_, sec = timed_wer(dev, dec)
            cells.append({"lm_weight": w, "word_score": s, "beam_size": beam0, "dev_WER": round(w_, 2),
                          "dev_CER": round(c_, 2), "rtf": round(sec / dev_seconds, 4)})
    best = min(cells, key=lambda c: (c["dev_WER"], c["dev_CER"]))
    beams = [best]
    for beam in args.beam_sizes[1:]:
        dec = LMDecoder(model.tokenizer, arpa, lexicon, best["lm_weight"], best["word_score"], beam)
        w_, c_, sec = timed_wer(dev, dec)
        beams.append({**best, "beam_size": beam, "dev_WER": round(w_, 2), "dev_CER": round(c_, 2),
                      "rtf": round(sec / dev_seconds, 4)})
    best = min(beams, key=lambda c: (c["dev_WER"], c["rtf"]))
    return {"grid": cells, "beams": beams, "best": best}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="output folder of asr_ctc.py")
    p.add_argument("--csv", help="dev manifest (default: the run's valid_csv)")
    p.add_argument("--lm-text", help="LM text (default: as asr_ctc.py chooses it)")
    p.add_argument("--lm_weights", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0, 4.0])
    p.add_argument("--word_scores", type=float, nargs="+", default=[-2.0, -1.0, -0.5, 0.0, 1.0])
    p.add_argument("--beam_sizes", type=int, nargs="+", default=[50],
                   help="the first for the grid, the others tried at its best pair")
    p.add_argument("--beam_size", type=int, help=argparse.SUPPRESS)  # the former single beam
    p.add_argument("--orders", type=int, nargs="+", default=[3], help="word n-gram orders")
    p.add_argument("--prune", type=int, nargs="+", default=[0],
                   help="count cut-offs: n-grams (order >= 2) seen at most this often are dropped")
    p.add_argument("--lexicon-free", action="store_true", help="also a character LM, lexicon-free")
    p.add_argument("--char-orders", type=int, nargs="+", default=[6])
    p.add_argument("--test", action="store_true", help="score each LM's best setting on the test splits")
    p.add_argument("--docs", help="write <report>.md and .json here")
    p.add_argument("--report", default="lm_tuning", help="name of the report files in --docs (default lm_tuning)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.beam_size:
        args.beam_sizes = [args.beam_size]
    torch.set_num_threads(1)

    model = SpeechModel.from_run(args.run, args.device)
    if model.tokenizer is None:
        raise RunError(f"{args.run}: a pretraining run has no CTC layer to decode")
    hp = model.hparams
    dev_csv = args.csv or hp["valid_csv"]
    sentences, source = lm_text_of(model, args.lm_text)
    lexicon_words = {w for s in sentences for w in s.split()}
    tests = {k: v for k, v in hp.get("test_csvs", {}).items() if v != dev_csv and Path(v).is_file()}
    dev = dev_log_probs(model, dev_csv, args.batch_size)
    dev_seconds = audio_seconds(dev_csv)
    greedy = lambda lp, n: greedy_decode(lp, n, model.tokenizer)  # noqa: E731
    g_wer, g_cer, g_sec = timed_wer(dev, greedy)
    oov = {"dev": out_of_lexicon(lexicon_words, [r for _, refs, _, _ in dev for r in refs])}
    for name, csv in tests.items():
        oov[name] = out_of_lexicon(lexicon_words, [str(r["wrd"]) for r in load_manifest(csv).data.values()])
    print(f"dev: {dev_csv} ({dev_seconds / 60:.1f} min of audio); LM text: {source} "
          f"({len(sentences)} sentences, {sum(len(s.split()) for s in sentences)} words, "
          f"{len(lexicon_words)} distinct)")
    print("out-of-lexicon rate: " + ", ".join(f"{k} {v['percent']} %" for k, v in oov.items()))
    print(f"greedy: dev WER {g_wer:.2f}, CER {g_cer:.2f}")

    configs = [("word", o, pr) for o in args.orders for pr in args.prune]
    if args.lexicon_free:
        configs += [("char", o, pr) for o in args.char_orders for pr in args.prune]
    folder = Path(args.run) / "save" / "lm_tune"
    results = []
    for units, order, prune in configs:
        start = time.perf_counter()
        arpa, lexicon = build_lm(model, folder, sentences, source, units, order, prune)
        built = time.perf_counter() - start
        tuned = tune_one(model, dev, dev_seconds, arpa, lexicon, args)
        entry = {"units": units, "order": order, "prune": prune, "ngrams": arpa_sizes(arpa),
                 "build_seconds": round(built, 1), **tuned}
        name = f"{'character' if units == 'char' else 'word'} {order}-gram, prune {prune}"
        print(f"\n## {name} ({sum(entry['ngrams'].values())} n-grams)\n")
        scores = grid_scores(args.word_scores, lexicon)
        print("| lm_weight \\ word_score | " + " | ".join(f"{s:g}" for s in scores) + " |")
        print("|---" * (len(scores) + 1) + "|")
        for w in args.lm_weights:
            row = [c for c in tuned["grid"] if c["lm_weight"] == w]
            print(f"| {w:g} | " + " | ".join(f"{c['dev_WER']:.2f}" for c in row) + " |")
        print("\n" + md_table(["beam", "dev WER", "dev CER", "real-time factor"],
                              [[c["beam_size"], c["dev_WER"], c["dev_CER"], c["rtf"]] for c in tuned["beams"]]))
        b = tuned["best"]
        print(f"best: --lm_weight={b['lm_weight']:g} --word_score={b['word_score']:g} "
              f"--lm_beam_size={b['beam_size']} (dev WER {b['dev_WER']:.2f}, RTF {b['rtf']})")
        if args.test:
            entry["test"] = {}
            dec = LMDecoder(model.tokenizer, arpa, lexicon, b["lm_weight"], b["word_score"], b["beam_size"])
            for split, csv in tests.items():
                batches = dev_log_probs(model, csv, args.batch_size)
                gw, gc, _ = timed_wer(batches, greedy)
                lw, lc, sec = timed_wer(batches, dec)
                entry["test"][split] = {"WER_greedy": round(gw, 2), "CER_greedy": round(gc, 2),
                                        "WER_lm": round(lw, 2), "CER_lm": round(lc, 2),
                                        "rtf": round(sec / audio_seconds(csv), 4)}
                print(f"{split}: greedy WER {gw:.2f} CER {gc:.2f}; LM WER {lw:.2f} CER {lc:.2f}")
        results.append(entry)

    overall = min(results, key=lambda r: r["best"]["dev_WER"])
    print(f"\nbest on dev: {overall['units']} {overall['order']}-gram, prune {overall['prune']}: "
          f"--lm_order={overall['order']} --lm_prune={overall['prune']}"
          f"{' --lm_lexicon_free=True --lm_char_order=' + str(overall['order']) if overall['units'] == 'char' else ''}"
          f" --lm_weight={overall['best']['lm_weight']:g} --word_score={overall['best']['word_score']:g}"
          f" --lm_beam_size={overall['best']['beam_size']}")
    if args.docs:
        write_docs(Path(args.docs), args, argv, source, sentences, oov, (g_wer, g_cer), results, dev_csv)
    return 0


def write_docs(docs: Path, args, argv, source, sentences, oov, greedy, results, dev_csv) -> None:
    """<report>.md and .json: every LM's best setting, its beams, and its test scores."""
    rows = []
    for r in results:
        b = r["best"]
        test = r.get("test", {})
        rows.append([f"{r['units']} {r['order']}-gram", r["prune"], sum(r["ngrams"].values()), r["build_seconds"],
                     b["lm_weight"], b["word_score"], b["beam_size"], b["dev_WER"], b["dev_CER"], b["rtf"],
                     *[f"{t['WER_lm']} / {t['CER_lm']}" for t in test.values()]])
    splits = list(results[0].get("test", {}))
    table = md_table(["LM", "prune", "n-grams", "build s", "lm_weight", "word_score", "beam", "dev WER",
                      "dev CER", "real-time factor", *[f"{s} WER / CER" for s in splits]], rows)
    greedy_test = {s: results[0]["test"][s] for s in splits}
    setup = (f"`{tool_command(__file__, argv if argv is not None else sys.argv[1:])}` on "
             f"{cpu_name()}, one thread; dev `{Path(dev_csv).name}`; LM text "
             f"{source} ({sum(len(s.split()) for s in sentences)} words). Real-time factor: decoding "
             "seconds per audio second (LM loading excluded).")
    text = (f"# LM decoding tuned on dev\n\n{setup}\n\n"
            f"Greedy: dev WER {greedy[0]:.2f}, CER {greedy[1]:.2f}"
            + "".join(f"; {s} WER {t['WER_greedy']}, CER {t['CER_greedy']}" for s, t in greedy_test.items())
            + ".\n\nOut-of-lexicon rate (running words the LM text lacks): "
            + ", ".join(f"{k} {v['percent']} %" for k, v in oov.items()) + ".\n\n" + table + "\n")
    docs.mkdir(parents=True, exist_ok=True)
    # files named relative to the repository (or by their last folder), never where one machine kept them
    (docs / f"{args.report}.md").write_text(repo_relative(text))
    (docs / f"{args.report}.json").write_text(repo_relative(json.dumps(
        {"setup": setup, "greedy_dev": {"WER": round(greedy[0], 2), "CER": round(greedy[1], 2)},
         "out_of_lexicon": oov, "lms": results}, indent=1)))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (*user_errors(), RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
