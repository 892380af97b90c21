"""Position-leak probe: can a linear head read token positions off a *random* speech encoder?

For each encoder variant (transformer; transformer with a null key; conformer with its
convolution on, shuffled, off; a transformer behind the patch or the convolutional front-end,
fed filterbank-like frames), a randomly initialised encoder is frozen (eval mode) and fed
inputs that carry no position information: i.i.d. Gaussian tokens, or one constant token
repeated, of random lengths (``--min-len``..``--max-len``). Only a linear ``PositionHead`` is
trained on its outputs (Adam, a fresh batch every step), then scored on fresh batches, with
full context and with a sampled fraction of the tokens as keys/values.

Columns: accuracy and its chance level (a guess uniform over the utterance's positions), z
(the excess over chance in binomial standard errors, tokens taken as independent), mean
position error and two baselines: chance (uniform guess) and blind (the utterance's median
position, the best a predictor can do from the length alone). An unpositioned encoder has
accuracy at chance and error no lower than blind; more is a leak.

Usage::

    .venv/bin/python tools/studies/measure_leak.py [--variants all] [--inputs gaussian constant]
        [--contexts full 0.25] [--steps 300] [--d-model 64] [--layers 4] [--out leak.md]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import torch  # noqa: E402

from speechpos.experiments.bench import INPUTS, LEAK_VARIANTS, measure_leak  # noqa: E402
from speechpos.experiments.plots import markdown_table, tool_command, write_report  # noqa: E402

HEADERS = [
    "encoder", "input", "context", "accuracy", "chance acc", "z", "pos. error",
    "chance error", "blind error", "head loss",
]
SHORT = {"transformer": 0, "transformer-null": 1, "conformer-on": 2, "conformer-shuffled": 3,
         "conformer-off": 4, "patch-frontend": 5, "conv-frontend": 6}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["all"],
                        help=f"all, or some of {', '.join(SHORT)}")
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    parser.add_argument("--contexts", nargs="+", default=["full", "0.25"],
                        help="'full' and/or context ratios in (0, 1)")
    parser.add_argument("--steps", type=int, default=300, help="head training steps")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--kernel-size", type=int, default=31, help="conformer convolution kernel")
    parser.add_argument("--min-len", type=int, default=20)
    parser.add_argument("--max-len", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steadier on a shared machine; 0: torch's)")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if "all" in args.variants:
        variants = list(LEAK_VARIANTS)
    else:
        unknown = [v for v in args.variants if v not in SHORT]
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {list(SHORT)}")
        variants = [LEAK_VARIANTS[SHORT[v]] for v in args.variants]
    contexts = []
    for c in args.contexts:
        ratio = None if c == "full" else float(c)
        if ratio is not None and not 0.0 < ratio <= 1.0:
            parser.error(f"context ratio must be in (0, 1], got {c}")
        contexts.append(ratio)

    rows = []
    for name, kind, conv_mode, null_key, frontend in variants:
        for inputs in args.inputs:
            for ratio in contexts:
                start = time.time()
                r = measure_leak(
                    kind, conv_mode, null_key, inputs, ratio, steps=args.steps,
                    d_model=args.d_model, nhead=args.heads, num_layers=args.layers,
                    kernel_size=args.kernel_size, min_len=args.min_len, max_len=args.max_len,
                    batch=args.batch, lr=args.lr, eval_batches=args.eval_batches, seed=args.seed,
                    frontend=frontend,
                )
                p = r["chance_accuracy"]
                z = (r["accuracy"] - p) / math.sqrt(max(p * (1 - p), 1e-12) / r["tokens"])
                rows.append([
                    name, inputs, "full" if ratio is None else f"{ratio:g}",
                    round(r["accuracy"], 4), round(p, 4), round(z, 1),
                    round(r["position_error"], 2), round(r["chance_position_error"], 2),
                    round(r["blind_position_error"], 2), round(r["final_loss"], 3),
                ])
                print(f"[{time.time() - start:5.1f} s] " + " | ".join(map(str, rows[-1])),
                      file=sys.stderr, flush=True)

    table = markdown_table(HEADERS, rows)
    setup = (
        f"Random frozen encoders, d_model {args.d_model}, {args.layers} layers, {args.heads} heads, "
        f"conformer kernel {args.kernel_size}; lengths {args.min_len}-{args.max_len} tokens; "
        f"linear head trained {args.steps} steps x {args.batch} utterances (lr {args.lr}), "
        f"scored on {args.eval_batches} x {args.batch} fresh utterances; seed {args.seed}; "
        f"{torch.get_num_threads()} torch thread(s)."
    )
    write_report(setup, table, args.out, title="Position leak of unpositioned encoders",
                 command=tool_command(__file__, sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
