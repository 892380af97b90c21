#!/usr/bin/env python3
"""Ablations of the from-scratch CTC baseline: each variant changes a few ``hparams/ctc.yaml``
keys and trains the same number of steps on the ``bench`` corpus; dev/test WER and CER (greedy)
side by side, so every default of the baseline has a measurement behind it.

Variants (``--variants``, default all): the baseline itself; output units (sentencepiece 128
instead of characters); SpeechBrain's convolutional front-end instead of patches; 12 layers
instead of 6; fp32 instead of ``precision: auto``. Runs go ``--jobs`` at a time with one torch thread each; finished runs are kept.
Writes ``docs/ctc_ablation.md`` and ``.json``.

    python tools/studies/ctc_ablation.py --steps 2000 --jobs 1      # ~50 min on one core
    python tools/studies/ctc_ablation.py --steps 6 --corpus data/LibriSpeech-tiny --size tiny \\
        --variants baseline sentencepiece --model-args --num_layers=1 --d_model=32   # plumbing
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from speechpos.experiments.plots import markdown_table, tool_command, write_report  # noqa: E402
from speechpos.experiments.runs import Run, made_corpus, run_all  # noqa: E402

VARIANTS = {
    "baseline": ("hparams/ctc.yaml as it is (characters)", []),
    "sentencepiece": ("sentencepiece unigram units, 128", ["--token_type=sentencepiece",
                                                            "--sentencepiece_vocab=128"]),
    "conv-frontend": ("SpeechBrain ConvolutionFrontEnd (x4) instead of patches", ["--frontend=conv"]),
    "12-layers": ("12 conformer layers instead of 6", ["--num_layers=12"]),
    "fp32": ("fp32 instead of precision: auto (bf16 on a CPU with native bf16)", ["--precision=fp32"]),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(ROOT / "data" / "LibriSpeech-bench"))
    p.add_argument("--size", default="bench", help="corpus size made if --corpus is missing")
    p.add_argument("--out", default=str(ROOT / "results" / "ctc_ablation"))
    p.add_argument("--docs", default=str(ROOT / "docs"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--model-args", nargs=argparse.REMAINDER, default=[],
                   help="further asr_ctc.py overrides for every variant (last on the line)")
    args = p.parse_args(argv)

    corpus, out, docs = Path(args.corpus).resolve(), Path(args.out).resolve(), Path(args.docs)
    prep = made_corpus(corpus, args.size, args.seed, args.jobs, out / "prep")
    common = [f"--data_folder={corpus}", f"--prep_folder={prep}", "--skip_prep=True",
              f"--seed={args.seed}", f"--number_of_steps={args.steps}"]
    runs = [Run(name, "asr_ctc.py", "hparams/ctc.yaml",
                [*common, *VARIANTS[name][1], *args.model_args], out / name, "results.json")
            for name in args.variants]
    out.mkdir(parents=True, exist_ok=True)
    run_all(runs, args.jobs, threads=1, logs=out)

    rows, records = [], []
    for run in runs:
        res = json.loads((run.out / "results.json").read_text())
        dev, test = res["dev-clean"], res["test-clean"]
        rec = {"variant": run.name, "change": VARIANTS[run.name][0],
               "overrides": VARIANTS[run.name][1], "steps": test["steps_trained"],
               "train_minutes": round(test["train_seconds"] / 60, 1),
               "audio_s_per_s": test["train_audio_s_per_s"], "dev_WER": dev["WER"],
               "dev_CER": dev["CER"], "test_WER": test["WER"], "test_CER": test["CER"]}
        records.append(rec)
        rows.append([rec[k] for k in ("variant", "change", "steps", "train_minutes", "audio_s_per_s",
                                      "dev_WER", "dev_CER", "test_WER", "test_CER")])
    table = markdown_table(["variant", "change", "steps", "train min", "audio s/s", "dev WER",
                            "dev CER", "test WER", "test CER"], rows)
    command = tool_command(__file__, argv if argv is not None else sys.argv[1:])
    setup = (
        f"`asr_ctc.py hparams/ctc.yaml --number_of_steps={args.steps}` plus each variant's "
        f"overrides on `{corpus.name}`, {args.jobs} run(s) at a time with one torch thread each "
        f"({platform.machine()}), greedy decoding, checkpoint chosen on dev WER."
    )
    docs.mkdir(parents=True, exist_ok=True)
    write_report(setup, table, docs / "ctc_ablation.md", title="CTC baseline ablations", command=command)
    (docs / "ctc_ablation.json").write_text(json.dumps({"setup": setup, "command": command, "rows": records},
                                                       indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
