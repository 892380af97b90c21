#!/usr/bin/env python3
"""The from-scratch CTC baseline on the ``bench`` corpus: train, test, and report.

Runs ``recipes/LibriSpeech/asr_ctc.py`` with ``hparams/ctc.yaml`` as it is (conformer with its
convolution, SpeechBrain's convolutional front-end, sinusoidal positions, characters,
duration batches, warm-up + decay in ``--steps`` steps) on the 10 h ``bench`` corpus (made
first if missing), validating once per epoch. Then it writes:

* ``docs/ctc_baseline.md`` and ``.json``: test WER/CER greedy and with the n-gram LM (built
  from the training transcripts; its overlap with dev/test is reported), the training time,
  throughput, machine and precision, and a few reference/hypothesis pairs of test-clean;
* ``docs/ctc_wer_vs_time.png``: dev WER and CER (greedy) against training time.

A finished run is not trained again (the recipe also resumes from its last checkpoint).

    python tools/ctc_baseline.py                          # ~1 h on 2 CPU cores
    python tools/ctc_baseline.py --steps 20 --corpus data/LibriSpeech-tiny --size tiny \\
        --out /tmp/ctc --docs /tmp/docs --model-args --num_layers=2 --d_model=32   # plumbing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "LibriSpeech"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from speechpos.plots import (  # noqa: E402
    example_pairs,
    markdown_table,
    plot_quality_vs_time,
    read_train_log,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(ROOT / "data" / "LibriSpeech-bench"))
    p.add_argument("--size", default="bench", help="corpus size made if --corpus is missing")
    p.add_argument("--out", default=str(ROOT / "results" / "ctc_baseline"))
    p.add_argument("--docs", default=str(ROOT / "docs"))
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (the schedule's length)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--examples", type=int, default=5, help="reference/hypothesis pairs shown")
    p.add_argument("--model-args", nargs=argparse.REMAINDER, default=[],
                   help="further asr_ctc.py overrides (last on the line)")
    args = p.parse_args(argv)

    from speechpos.data.corpus import make_corpus
    from speechpos.data.librispeech import prepare_librispeech

    corpus, out, docs = Path(args.corpus).resolve(), Path(args.out).resolve(), Path(args.docs)
    make_corpus(corpus, size=args.size, seed=args.seed, jobs=args.threads, progress=False)
    prep = out / "prep"
    prepare_librispeech(corpus, prep, tr_splits=["train-clean-100"], dev_splits=["dev-clean"],
                        te_splits=["test-clean"], progress=False)
    run = out / "run"
    cmd = [
        sys.executable, str(RECIPES / "asr_ctc.py"), "hparams/ctc.yaml", f"--data_folder={corpus}",
        f"--prep_folder={prep}", "--skip_prep=True", f"--output_folder={run}",
        f"--seed={args.seed}", f"--number_of_steps={args.steps}", "--lm_decoding=True",
        *args.model_args,
    ]
    if not (run / "results.json").is_file():
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        start = time.time()
        with open(out / "asr_ctc.log", "a") as log:
            proc = subprocess.run(cmd, cwd=RECIPES, stdout=log, stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0:
            sys.exit(f"asr_ctc.py failed (exit {proc.returncode}); see {out / 'asr_ctc.log'}")
        print(f"trained and tested in {time.time() - start:.0f} s wall", flush=True)

    results = json.loads((run / "results.json").read_text())
    records = [r for r in read_train_log(run / "train_log.txt") if "epoch" in r and "valid" in r]
    curve = [(r["train_time_s"], r["valid"]["WER"], r["valid"]["CER"]) for r in records]
    docs.mkdir(parents=True, exist_ok=True)
    plot_quality_vs_time(
        {"dev-clean, greedy": curve}, docs / "ctc_wer_vs_time.png",
        title=f"From-scratch CTC baseline, bench corpus, {args.threads} CPU threads",
        xlabel="training time (min, validation excluded)",
    )
    test = results["test-clean"]
    rows = [
        [split, r["WER"], r["CER"], r.get("WER_lm", ""), r.get("CER_lm", ""),
         r.get("lm_text_overlap", {}).get("percent", "") if isinstance(r.get("lm_text_overlap"), dict)
         else r.get("lm_text_overlap", ""), r["utterances"]]
        for split, r in results.items()
    ]
    table = markdown_table(
        ["split", "WER greedy", "CER greedy", "WER LM", "CER LM", "LM-text overlap", "utterances"], rows
    )
    curve_table = markdown_table(
        ["epoch", "steps", "training time (min)", "train audio s/s", "dev WER", "dev CER"],
        [[r["epoch"], r.get("steps", ""), round(r["train_time_s"] / 60, 1),
          r["train"].get("audio_s_per_s", ""), r["valid"]["WER"], r["valid"]["CER"]] for r in records],
    )
    pairs = example_pairs(run / "wer_test-clean.txt", args.examples)
    examples = "\n".join(f"- `{uid}`\n  - REF: {ref}\n  - HYP: {hyp}" for uid, ref, hyp in pairs)
    setup = (
        f"`python tools/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" -> `asr_ctc.py hparams/ctc.yaml --number_of_steps={args.steps}"
        f"{' ' + ' '.join(args.model_args) if args.model_args else ''}` on `{corpus.name}` "
        f"({args.threads} torch threads, {platform.machine()} {platform.processor()}, precision "
        f"{test.get('precision')}); {test['steps_trained']} steps in "
        f"{test.get('train_seconds', 0) / 60:.1f} min of training "
        f"({test.get('train_audio_s_per_s')} audio-s/s); tested checkpoint: best dev "
        f"{test['selected_on']} (step {test['checkpoint_steps']})."
    )
    text = (
        f"# From-scratch CTC baseline\n\n{setup}\n\n## Test\n\n{table}\n\n"
        f"## Dev during training\n\n{curve_table}\n\n![WER vs time](ctc_wer_vs_time.png)\n\n"
        f"## test-clean examples (greedy)\n\n{examples}\n"
    )
    (docs / "ctc_baseline.md").write_text(text)
    (docs / "ctc_baseline.json").write_text(json.dumps(
        {"setup": setup, "results": results, "curve": [dict(zip(
            ("train_seconds", "dev_WER", "dev_CER"), c, strict=True)) for c in curve],
         "examples": [dict(zip(("id", "ref", "hyp"), e, strict=True)) for e in pairs]}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
