#!/usr/bin/env python3
"""The from-scratch CTC baseline on the ``bench`` corpus: train, test, and report.

Runs ``recipes/LibriSpeech/asr_ctc.py`` with ``hparams/ctc.yaml`` as it is (6-layer conformer
with its convolution, 40-ms patch tokens, sinusoidal positions, characters, 40-s duration
batches, warm-up + decay in ``--steps`` steps) on the 10 h ``bench`` corpus (made first if
missing), validating once per epoch. Then it writes:

* ``docs/ctc_baseline.md`` and ``.json``: WER/CER of test-clean and test-other (engines and
  voices no training split uses), greedy and with the n-gram LM (built from the corpus's LM
  text ``librispeech-lm-norm.txt`` where there is one, else the training transcripts; its
  overlap with dev/test and the out-of-lexicon rate are reported) at the recipe's default
  weights and at the ``lm_weight`` x ``word_score`` pair that is best on dev
  (``tools/studies/tune_lm.py``'s grid), the training time, throughput, CPU model and precision, and a
  few reference/hypothesis pairs of test-clean;
* ``docs/ctc_wer_vs_time.png``: dev WER and CER (greedy) against training time.

With ``--previous <an earlier ctc_baseline.json>`` (read before anything is written, so it may be
the file this run replaces) the earlier run's curve is drawn beside this one, its test results
are set against this run's, and the earlier report is kept inside the new JSON (``previous``).

A finished run is not trained again (the recipe also resumes from its last checkpoint).

    python tools/studies/ctc_baseline.py --steps 8000 --threads 1    # ~45 min on one CPU core
    python tools/studies/ctc_baseline.py --steps 20 --corpus data/LibriSpeech-tiny --size tiny \\
        --out /tmp/ctc --docs /tmp/docs --model-args --num_layers=2 --d_model=32   # plumbing
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "LibriSpeech"

from speechpos.experiments.plots import (  # noqa: E402
    dev_curve,
    example_pairs,
    markdown_table,
    plot_quality_vs_time,
    read_train_log,
    repo_relative,
    tool_command,
)
from speechpos.experiments.runs import Run, cpu_name, made_corpus, run_all  # noqa: E402
from speechpos.inference.asr import EXPORT_MARKER  # noqa: E402
from speechpos.speech.data.librispeech import split_references  # noqa: E402


def load_tool(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, next((ROOT / "tools").rglob(f"{name}.py")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tuned_lm(run: Path, weights, scores) -> dict:
    """Tune the LM weights on dev (the run's valid_csv), then score test-clean with the best
    pair; cached in ``<run>/lm_tuned.json``."""
    cache = run / "lm_tuned.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    from speechpos.inference import SpeechModel
    from speechpos.speech.lm_decoding import LMDecoder

    tune = load_tool("tune_lm")
    model = SpeechModel.from_run(run)
    arpa, lexicon, _ = tune.run_lm(model, run)
    dev = tune.dev_log_probs(model, model.hparams["valid_csv"])
    table = tune.grid(model, dev, arpa, lexicon, weights, scores)
    (weight, score), dev_wer = min(table.items(), key=lambda kv: kv[1])
    decoder = LMDecoder(model.tokenizer, arpa, lexicon, weight, score)
    tests = {}
    for split in ("test-clean", "test-other"):
        csv = model.hparams["test_csvs"].get(split)
        if csv and Path(csv).is_file():
            batches = tune.dev_log_probs(model, csv)
            with single_thread():
                wer_, cer_, seconds = tune.timed_wer(batches, decoder)
            tests[split] = {"WER_lm": round(wer_, 2), "CER_lm": round(cer_, 2),
                            "lm_search_rtf": round(seconds / tune.audio_seconds(csv), 4)}
    result = {
        "lm_weight": weight, "word_score": score, "dev_WER_lm": round(dev_wer, 2),
        "test_WER_lm": tests["test-clean"]["WER_lm"], "test_CER_lm": tests["test-clean"]["CER_lm"],
        "tests": tests,
        "grid": [{"lm_weight": w, "word_score": s, "dev_WER": round(v, 2)}
                 for (w, s), v in table.items()],
    }
    cache.write_text(json.dumps(result, indent=1))
    return result


@contextlib.contextmanager
def single_thread():
    """Torch on one thread inside the block (the beam search is timed as one core runs it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def export_check(run: Path, out: Path, corpus: Path) -> dict:
    """What a user gets: ``speechpos export`` of the run (its LM included, as by default), then
    ``speechpos transcribe --lm`` of every test-clean file on one thread, scored against the
    transcripts. Cached in ``<out>/export_check.json``."""
    import jiwer

    cache = out / "export_check.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    model_dir, listing, hyps = out / "export", out / "test-clean.list", out / "test-clean_lm.jsonl"
    cli = [sys.executable, "-m", "speechpos.cli"]
    subprocess.run([*cli, "export", str(run), str(model_dir)], check=True)
    refs = split_references(corpus / "test-clean")
    listing.write_text("".join(f"{f}\n" for f in refs))
    hyps.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run([*cli, "transcribe", str(model_dir), "--lm", "--list", str(listing), "--format",
                    "jsonl", "--output", str(hyps), "--no-progress"], check=True, env=env)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in hyps.read_text().splitlines()]
    text = {r["path"]: r["text"] for r in records}
    files = list(refs)
    audio = sum(float(r["seconds"]) for r in records)
    lm = json.loads((model_dir / EXPORT_MARKER).read_text())["lm"] or {}
    result = {"files": len(files), "WER_lm": round(100 * jiwer.wer([refs[f] for f in files],
                                                                    [text.get(f, "") for f in files]), 2),
              "wall_s": round(seconds, 1), "audio_s": round(audio, 1),
              "rtf_one_thread": round(seconds / audio, 4) if audio else None,
              "lm": {k: v for k, v in lm.items() if k not in ("arpa", "lexicon")}}
    cache.write_text(json.dumps(result, indent=1))
    return result


def comparison_table(reports: list[tuple[str, dict]]) -> str:
    """Test-clean results of several baseline reports (``ctc_baseline.json`` contents), a row each.

    >>> r = {"results": {"test-clean": {"WER": 56.5, "CER": 18.2, "steps_trained": 8000,
    ...      "train_seconds": 2958.0, "torch_threads": 1, "train_audio_s_per_s": 91.4}},
    ...      "lm_tuned_on_dev": {"test_WER_lm": 36.9, "test_CER_lm": 17.1}}
    >>> print(comparison_table([("before", r)]))
    | run | torch threads | steps | training (min) | train audio s/s | test WER greedy | test CER greedy | test WER, tuned LM | test CER, tuned LM |
    |---|---|---|---|---|---|---|---|---|
    | before | 1 | 8000 | 49.3 | 91.4 | 56.5 | 18.2 | 36.9 | 17.1 |
    """
    rows = []
    for name, report in reports:
        test, lm = report["results"]["test-clean"], report["lm_tuned_on_dev"]
        rows.append([name, test.get("torch_threads", ""), test["steps_trained"],
                     round(test["train_seconds"] / 60, 1), test.get("train_audio_s_per_s", ""),
                     test["WER"], test["CER"], lm["test_WER_lm"], lm["test_CER_lm"]])
    return markdown_table(["run", "torch threads", "steps", "training (min)", "train audio s/s",
                           "test WER greedy", "test CER greedy", "test WER, tuned LM",
                           "test CER, tuned LM"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(ROOT / "data" / "LibriSpeech-bench"))
    p.add_argument("--size", default="bench", help="corpus size made if --corpus is missing")
    p.add_argument("--out", default=str(ROOT / "results" / "ctc_baseline"))
    p.add_argument("--docs", default=str(ROOT / "docs"))
    p.add_argument("--steps", type=int, default=8000, help="optimizer steps (the schedule's length)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--examples", type=int, default=5, help="reference/hypothesis pairs shown")
    p.add_argument("--lm-weights", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 3.0])
    p.add_argument("--word-scores", type=float, nargs="+", default=[-1.0, 0.0, 1.0, 2.0])
    p.add_argument("--previous", type=Path, default=None,
                   help="an earlier run's ctc_baseline.json, to compare with (read before writing)")
    p.add_argument("--previous-label", default="previous run", help="its name in the plot and table")
    p.add_argument("--model-args", nargs=argparse.REMAINDER, default=[],
                   help="further asr_ctc.py overrides (last on the line)")
    args = p.parse_args(argv)

    corpus, out, docs = Path(args.corpus).resolve(), Path(args.out).resolve(), Path(args.docs)
    previous = None
    if args.previous is not None:
        previous = json.loads(args.previous.read_text())
        previous.pop("previous", None)
        previous["label"] = args.previous_label
    prep = made_corpus(corpus, args.size, args.seed, args.threads, out / "prep")
    run = out / "run"
    # run_all: stopping this tool stops the recipe, and a second invocation on the same folder
    # waits for the first rather than training beside it.
    recipe = Run("asr_ctc", "asr_ctc.py", "hparams/ctc.yaml", [
        f"--data_folder={corpus}", f"--prep_folder={prep}", "--skip_prep=True",
        f"--seed={args.seed}", f"--number_of_steps={args.steps}", "--lm_decoding=True",
        *args.model_args,
    ], run, "results.json")
    run_all([recipe], jobs=1, threads=args.threads, logs=out)

    results = json.loads((run / "results.json").read_text())
    tuned = tuned_lm(run, args.lm_weights, args.word_scores)
    exported = export_check(run, out, corpus)
    records = [r for r in read_train_log(run / "train_log.txt") if "epoch" in r and "valid" in r]
    curve = dev_curve(records)
    docs.mkdir(parents=True, exist_ok=True)
    lines = {f"dev-clean, greedy ({args.threads} thread(s), {args.steps}-step schedule)" if previous
             else "dev-clean, greedy": curve}
    if previous:
        lines[f"dev-clean, greedy ({args.previous_label})"] = [
            (c["train_seconds"], c["dev_WER"], c["dev_CER"]) for c in previous["curve"]]
    plot_quality_vs_time(
        lines, docs / "ctc_wer_vs_time.png",
        title=f"From-scratch CTC baseline, bench corpus, {args.threads} CPU thread(s)",
        xlabel="training time (min, validation excluded)",
    )
    test = results["test-clean"]
    rows = [
        [split, r["WER"], r["CER"], r.get("WER_lm", ""), r.get("CER_lm", ""),
         tuned.get("tests", {}).get(split, {}).get("WER_lm", ""),
         tuned.get("tests", {}).get(split, {}).get("CER_lm", ""),
         r.get("lm_out_of_lexicon", {}).get("percent", ""),
         r.get("lm_text_overlap", {}).get("percent", "") if isinstance(r.get("lm_text_overlap"), dict)
         else r.get("lm_text_overlap", ""), r["utterances"]]
        for split, r in results.items()
    ]
    table = markdown_table(
        ["split", "WER greedy", "CER greedy", "WER LM", "CER LM", "WER tuned LM", "CER tuned LM",
         "out of lexicon (%)", "LM-text overlap (%)", "utterances"],
        rows,
    )
    lm_default = results["test-clean"].get("lm", {})
    tuned_text = (
        f"n-gram LM ({lm_default.get('order')}-gram of {lm_default.get('text')}, "
        f"{lm_default.get('words')} words): the LM columns use the recipe's weights (lm_weight "
        f"{lm_default.get('lm_weight')}, word_score {lm_default.get('word_score')}), the tuned LM "
        f"columns the pair tuned on dev-clean (best over lm_weight {args.lm_weights} x word_score "
        f"{args.word_scores}: lm_weight {tuned['lm_weight']}, word_score {tuned['word_score']}: dev "
        f"WER {tuned['dev_WER_lm']}): **test-clean WER {tuned['test_WER_lm']}, CER "
        f"{tuned['test_CER_lm']}** (greedy: WER {test['WER']}, CER {test['CER']})"
        + (f"; test-other (engines and voices no training split uses) WER "
           f"{tuned['tests']['test-other']['WER_lm']} with the tuned LM, {results['test-other']['WER']} greedy"
           if "test-other" in tuned.get("tests", {}) and "test-other" in results else "")
        + ". Out of lexicon: the share of the split's running words that the LM text lacks."
    )
    rtf = tuned.get("tests", {}).get("test-clean", {}).get("lm_search_rtf")
    export_text = (
        f"The user's path: `speechpos export` of this run (LM included: {exported['lm'].get('source')}; "
        f"lm_weight {exported['lm'].get('lm_weight')}, word_score "
        f"{exported['lm'].get('word_score')}), then `speechpos transcribe --lm` of the {exported['files']} "
        f"test-clean files on one thread: **WER {exported['WER_lm']}** against the recipe's "
        f"{test.get('WER_lm', '')} with the same weights; {exported['wall_s']} s for {exported['audio_s']} s "
        f"of audio (real-time factor {exported['rtf_one_thread']}, model and LM loading included). "
        f"The beam search alone, at the tuned weights on one thread: real-time factor {rtf} on test-clean."
    )
    curve_table = markdown_table(
        ["epoch", "steps", "training time (min)", "train audio s/s", "dev WER", "dev CER"],
        [[r["epoch"], r.get("steps", ""), round(r["train_time_s"] / 60, 1),
          r["train"].get("audio_s_per_s", ""), r["valid"]["WER"], r["valid"]["CER"]] for r in records],
    )
    pairs = example_pairs(run / "wer_test-clean.txt", args.examples)
    examples = "\n".join(f"- `{uid}`\n  - REF: {ref}\n  - HYP: {hyp}" for uid, ref, hyp in pairs)
    command = tool_command(__file__, argv if argv is not None else sys.argv[1:])
    setup = (
        f"`asr_ctc.py hparams/ctc.yaml --number_of_steps={args.steps}"
        f"{' ' + ' '.join(args.model_args) if args.model_args else ''}` on `{corpus.name}` "
        f"({args.threads} torch thread(s), {cpu_name()}, precision "
        f"{test.get('precision')}); {test['steps_trained']} steps in "
        f"{test.get('train_seconds', 0) / 60:.1f} min of training "
        f"({test.get('train_audio_s_per_s')} audio-s/s); tested checkpoint: best dev "
        f"{test['selected_on']} (step {test['checkpoint_steps']})."
    )
    against = ""
    if previous:
        against = "## Against the previous run\n\n" + comparison_table(
            [("this run", {"setup": setup, "results": results, "lm_tuned_on_dev": tuned}),
             (args.previous_label, previous)]) + f"\n\n{args.previous_label}: {previous['setup']}\n\n"
    text = (
        f"# From-scratch CTC baseline\n\n{setup}\n\n## Test\n\n{table}\n\n{tuned_text}\n\n{export_text}\n\n{against}"
        f"## Dev during training\n\n{curve_table}\n\n![WER vs time](ctc_wer_vs_time.png)\n\n"
        f"## test-clean examples (greedy)\n\n{examples}\n\n## Command\n\n```bash\n{command}\n```\n"
    )
    # a report names files relative to the repository (or by their last folder), never where one machine kept them
    text = repo_relative(text)
    (docs / "ctc_baseline.md").write_text(text)
    (docs / "ctc_baseline.json").write_text(repo_relative(json.dumps(
        {"setup": setup, "command": command, "results": results, "lm_tuned_on_dev": tuned,
         "export_check": exported, "curve": [dict(zip(
            ("train_seconds", "dev_WER", "dev_CER"), c, strict=True)) for c in curve],
         "examples": [dict(zip(("id", "ref", "hyp"), e, strict=True)) for e in pairs],
         **({"previous": previous} if previous else {})}, indent=1)))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
