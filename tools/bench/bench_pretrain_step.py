"""Throughput of one MP3 pretraining step, in audio-seconds per second, across context ratios.

One step = forward of patch embedding + unpositioned encoder + position head + position loss
(optionally under ``torch.autocast("cpu", dtype=torch.bfloat16)``), backward, AdamW step, on
random filterbank features of ``--batch`` utterances of ``--seconds`` s (100 frames/s,
``--patch-frames`` frames per token: 10 s = 250 tokens of 40 ms). Rows: context ratio
(1.0 = full attention, no context sampled) x gathered keys/values (the (T x C) attention) vs
masked (the (T x T) reference) x transformer vs conformer (convolution off) x fp32 vs bf16.

Per (kind, attention, precision) one model is built; after warm-up, ``--repeats`` rounds
each time one step of every ratio in turn (interleaved, so load changes hit all ratios
alike); the table gives the median and minimum step time, the throughput of the median, the
speed-up over ratio 1.0 of the same variant, the activation memory autograd saves for
backward (distinct tensor storages, parameters excluded; measured on the first warm-up step),
and the GFLOP/s reached with the fraction of the machine's matmul ceiling (the best
1024 x 1024 matmul at the same thread count and precision).
The machine may be shared: compare rows of one run, not runs of different times.

Usage::

    .venv/bin/python tools/bench/bench_pretrain_step.py [--layers 6 --d-model 144 --seconds 10
        --batch 8 --repeats 5] [--kinds transformer conformer] [--dtypes fp32 bf16]
        [--threads 1] [--out bench.md]
    .venv/bin/python tools/bench/bench_pretrain_step.py --quick       # small sizes, a few seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import torch  # noqa: E402

from speechpos.experiments.bench import (  # noqa: E402
    BENCH_HEADERS,
    bench_pretrain_step,
    bench_table_rows,
    matmul_ceiling,
)
from speechpos.experiments.plots import markdown_table, tool_command, write_report  # noqa: E402

QUICK = {"layers": 2, "d_model": 32, "heads": 4, "ffn": 64, "seconds": 2.0, "batch": 2,
         "repeats": 2, "warmup": 1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=144)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=None, help="feed-forward size (default 4 x d_model)")
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance duration")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch-frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per row (median kept)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per row")
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--target-ratios", nargs="+", default=["all"],
                        help="fractions of the non-context tokens that enter the encoder "
                             "('all': every token), timed for each context ratio below 1")
    parser.add_argument("--kinds", nargs="+", default=["transformer", "conformer"],
                        choices=["transformer", "conformer"])
    parser.add_argument("--attention", nargs="+", default=["gathered", "masked"],
                        choices=["gathered", "masked"])
    parser.add_argument("--calls", nargs="+", default=["fused"], choices=["fused", "speechbrain"],
                        help="attention call: speechpos's fused SDPA and/or SpeechBrain's own (the step before)")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--no-null-key", action="store_true", help="drop the null key (pp.yaml has it)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steadier on a shared machine; 0: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)

    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    d_ffn = args.ffn or 4 * args.d_model
    if 1.0 not in args.ratios:
        args.ratios = [1.0, *args.ratios]

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.time()
    rows = bench_pretrain_step(
        kinds=tuple(args.kinds), ratios=tuple(args.ratios),
        target_ratios=tuple(None if t == "all" else float(t) for t in args.target_ratios),
        gathers=tuple(a == "gathered" for a in args.attention), dtypes=tuple(args.dtypes),
        num_layers=args.layers, d_model=args.d_model, nhead=args.heads, d_ffn=d_ffn,
        seconds=args.seconds, batch=args.batch, repeats=args.repeats, warmup=args.warmup,
        patch_frames=args.patch_frames, null_key=not args.no_null_key, seed=args.seed,
        attention_calls=tuple(args.calls),
    )
    elapsed = time.time() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    tokens = rows[0]["tokens"]
    ceilings = {dtype: matmul_ceiling(dtype=dtype) for dtype in args.dtypes}
    setup = (
        f"d_model {args.d_model}, {args.layers} layers, {args.heads} heads, d_ffn {d_ffn}, "
        f"null key {not args.no_null_key}; batch {args.batch} x {args.seconds:g} s = {tokens} tokens "
        f"of {10 * args.patch_frames} ms per utterance; median of {args.repeats} steps after "
        f"{args.warmup} warm-up; {torch.get_num_threads()} torch thread(s), torch "
        f"{torch.__version__}, {platform.machine()}; whole run {elapsed:.0f} s, process max RSS "
        f"{rss_after / 1024:.0f} MiB (+{(rss_after - rss_before) / 1024:.0f} MiB during the "
        "benchmark). 'saved activations' = bytes autograd holds for backward after the forward; "
        "matmul ceiling (best 1024x1024 matmul) "
        + ", ".join(f"{d} {c:.0f} GFLOP/s" for d, c in ceilings.items())
        + "; GFLOP/s = FLOPs of the step (torch.utils.flop_counter) / median step time; attention "
        "call `speechbrain` = SpeechBrain's MultiheadAttention call (the step before), `fused` = "
        "speechpos's batch-first scaled_dot_product_attention on the same weights (the default)."
    )
    table = markdown_table(list(BENCH_HEADERS), bench_table_rows(rows, ceilings))
    command = tool_command(__file__, sys.argv[1:] if argv is None else argv)
    write_report(setup, table, args.out, title="Pretraining step: speed and memory", command=command)
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"setup": setup, "command": command, "ceilings_gflop_per_s": ceilings, "rows": rows}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
