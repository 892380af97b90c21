"""Pretraining step throughput of BEST-RQ, BEST-RQ with dropped masked tokens and a position
pretext, as the pretraining study trains them: one interleaved run, on 1 and 2 threads.

Each model is built from its recipe's hparams with the study's overrides (the 6-layer conformer
body, d 144, 40-ms patches, null key), see :mod:`speechpos.experiments.bench_objectives`.
Writes ``<out>.md`` and ``<out>.json`` (default ``docs/bench_objectives``).

Usage::

    .venv/bin/python tools/bench/bench_objectives.py                       # the report in docs/
    .venv/bin/python tools/bench/bench_objectives.py --quick --out /tmp/b  # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from speechpos.experiments.bench import describe_machine
from speechpos.experiments.bench_objectives import (
    OBJECTIVE_HEADERS,
    bench_objectives,
    objective_table_rows,
)
from speechpos.experiments.plots import markdown_table

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PRETRAINERS = ["BEST-RQ", "BEST-RQ, dropped", "BEST-RQ, dropped + position", "MP3 + anchors, coarse 4"]
QUICK = dict(num_layers=1, d_model=16, nhead=2, d_ffn=32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrainers", nargs="+", default=DEFAULT_PRETRAINERS)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=8.0, help="utterance length of the whole-utterance batches")
    parser.add_argument("--batch", type=int, default=8, help="utterances per whole-utterance batch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: the forward pass under CPU autocast (the recipes' precision: bf16)")
    parser.add_argument("--quick", action="store_true", help="tiny model and batches (a smoke test)")
    parser.add_argument("--note", default="", help="conditions to state in the report (e.g. what else ran)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_objectives",
                        help="report path without suffix (.md and .json are written)")
    args = parser.parse_args(argv)
    model = QUICK if args.quick else None
    if args.quick:
        args.seconds, args.batch, args.repeats, args.warmup = 1.0, 2, 1, 1

    machine = describe_machine()
    start = time.time()
    rows = bench_objectives(args.pretrainers, tuple(args.threads), args.seconds, args.batch,
                            args.repeats, args.warmup, model=model, dtype=args.dtype)
    elapsed = time.time() - start
    speed = {(r["threads"], r["pretrainer"]): r["audio_s_per_s"] for r in rows}
    lines = [
        "# Pretraining step throughput: BEST-RQ, BEST-RQ with dropped masked tokens, position prediction",
        "",
        f"Machine: {machine}. torch {torch.__version__}, {args.dtype}. Whole run {elapsed:.0f} s. {args.note}".strip(),
        "",
        "Each model is built from its recipe's hparams with the pretraining study's overrides (6-layer "
        "conformer, d 144, 4 heads, 40-ms patches, null key; convolution on for BEST-RQ, off for the "
        "others) on random normalised filterbank features shaped as the recipe's batches: "
        f"{args.batch} whole utterances of {args.seconds:g} s for the BEST-RQ rows (the one-pass joint row "
        "too), the recipe's own crops "
        "for position prediction. One step: forward, loss, backward, AdamW. After "
        f"{args.warmup} warm-up steps, {args.repeats} rounds each time one step of every row in turn "
        "(interleaved); the median is kept. 'patches through the encoder': share of the patches the "
        "encoder runs on (position prediction runs every token as a query, keys and values from a "
        "quarter of them; the one-pass joint row runs the kept patches and a third of the masked ones).",
        "",
        markdown_table(list(OBJECTIVE_HEADERS), objective_table_rows(rows)),
    ]
    for row, label in (("BEST-RQ, dropped", "Dropped BEST-RQ"),
                       ("BEST-RQ, dropped + position", "Dropped BEST-RQ + position prediction (one pass)")):
        if "BEST-RQ" in args.pretrainers and row in args.pretrainers:
            ratios = ", ".join(f"{speed[(t, row)] / speed[(t, 'BEST-RQ')]:.2f}x on {t} thread(s)" for t in args.threads)
            lines += ["", f"{label} against BEST-RQ, audio-s/s: {ratios}."]
    command = "python tools/bench/bench_objectives.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines += ["", "Command:", "", "```bash", command.strip(), "```", ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"machine": machine, "note": args.note, "torch": torch.__version__, "seconds": elapsed, "command": command.strip(),
         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
