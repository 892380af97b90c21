#!/usr/bin/env python3
"""Training throughput of the CTC recipe's model, in audio-seconds per second of training.

One step is what ``asr_ctc.py`` does per batch: filterbanks, normalisation, SpecAugment, the
encoder built from ``hparams/ctc.yaml`` (with the overrides of each variant), the CTC layer and
loss on random character targets, backward, gradient clipping, AdamW. Rows: variant x
precision (fp32, bf16 autocast) x torch threads (1, 2) x step implementation (before: SpeechBrain's
attention call; after: speechpos's fused attention; with ``--compile`` also under torch.compile),
the implementations timed interleaved on one model, with GFLOP/s and the fraction of the
machine's matmul ceiling. Input: ``--batch`` utterances of
``--seconds`` s of real speech from ``--csv`` (the first utterances of a manifest, cut or
tiled to length) or noise when no manifest is given. After ``--warmup`` steps the median of
``--repeats`` rounds is reported. Writes ``docs/ctc_throughput.md`` and ``.json``.

    .venv/bin/python tools/bench/bench_ctc_step.py [--csv results/bench_prep/dev-clean.csv]
    .venv/bin/python tools/bench/bench_ctc_step.py --quick         # small model, a few seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import torch  # noqa: E402
from hyperpyyaml import load_hyperpyyaml  # noqa: E402

from speechpos.experiments.plots import markdown_table, tool_command, write_report  # noqa: E402
from speechpos.precision import choose_precision, read_cpu_flags  # noqa: E402

HPARAMS = ROOT / "recipes" / "LibriSpeech" / "hparams" / "ctc.yaml"
VARIANTS = {
    "baseline (ctc.yaml)": {},
    "dropout 0.1": {"dropout": 0.1},
    "null key": {"null_key": True},
    "conv front-end": {"frontend": "conv"},
}
QUICK = {"num_layers": 2, "d_model": 32, "nhead": 4, "d_ffn": 64}


def load_audio(csv: str | None, batch: int, samples: int) -> torch.Tensor:
    """(batch, samples) waveforms: the manifest's first utterances, tiled or cut to length."""
    if csv is None:
        return 0.1 * torch.randn(batch, samples)
    from speechbrain.dataio.dataio import read_audio
    from speechbrain.dataio.dataset import DynamicItemDataset

    rows = list(DynamicItemDataset.from_csv(csv).data.values())[:batch]
    wavs = [read_audio(r["wav"]) for r in rows]
    return torch.stack([w.repeat(samples // len(w) + 1)[:samples] for w in wavs])


def build(overrides: dict, tmp: str):
    hp = load_hyperpyyaml(HPARAMS.read_text(), {**overrides, "output_folder": tmp})
    ctc_lin = torch.nn.Linear(hp["d_model"], 30)
    params = [*hp["encoder"].parameters(), *ctc_lin.parameters()]
    return hp, ctc_lin, params


IMPLEMENTATIONS = ("SpeechBrain attention", "fused attention")
COMPILED = "fused attention + torch.compile"


def train_step(hp, encoder, ctc_lin, params, opt, wavs, targets, precision) -> None:
    """One step of ``asr_ctc.py``'s training maths on a fixed batch."""
    lens = torch.ones(wavs.shape[0])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        feats = hp["normalize"](hp["compute_features"](wavs), lens)
        feats = hp["freq_drop"](hp["time_drop"](feats))
        enc, out_lens = encoder(feats, lens)
        log_probs = torch.log_softmax(ctc_lin(enc).float(), dim=-1)
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), targets, out_lens,
        torch.full((wavs.shape[0],), targets.shape[1], dtype=torch.long), blank=0, zero_infinity=True,
    )
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def time_implementations(hp, ctc_lin, params, wavs, precision, warmup, repeats, compile_too=False):
    """Seconds per step of each implementation, measured interleaved on one model.

    Every round runs one step of each implementation in turn (the attentions' ``fused``
    switch flipped between them, the same weights and optimizer), so load on a shared machine
    hits them alike. Returns ({implementation: [seconds]}, compile seconds or None)."""
    for m in (hp["encoder"], hp["normalize"], ctc_lin):
        m.train()
    opt = torch.optim.AdamW(params, lr=1e-4)
    targets = torch.randint(1, 30, (wavs.shape[0], int(wavs.shape[1] / 16000 * 12)))
    attentions = hp["encoder"].encoder.attentions
    impls = {name: (name != IMPLEMENTATIONS[0], hp["encoder"]) for name in IMPLEMENTATIONS}
    compile_s = None
    if compile_too:
        # Static shapes: one compile for the benchmark's one batch shape (see speechpos.compilation).
        impls[COMPILED] = (True, torch.compile(hp["encoder"], dynamic=False))
    times = {name: [] for name in impls}
    for i in range(warmup + repeats):
        for name, (fused, encoder) in impls.items():
            for att in attentions:
                att.fused = fused
            start = time.perf_counter()
            train_step(hp, encoder, ctc_lin, params, opt, wavs, targets, precision)
            took = time.perf_counter() - start
            if i == 0 and name == COMPILED:
                compile_s = took
            if i >= warmup:
                times[name].append(took)
    for att in attentions:
        att.fused = True
    return times, compile_s


def step_flops(hp, ctc_lin, params, wavs, precision) -> float:
    """FLOPs of one training step (forward and backward), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    opt = torch.optim.SGD(params, lr=0.0)
    targets = torch.randint(1, 30, (wavs.shape[0], int(wavs.shape[1] / 16000 * 12)))
    with FlopCounterMode(display=False) as counter:
        train_step(hp, hp["encoder"], ctc_lin, params, opt, wavs, targets, precision)
    return float(counter.get_total_flops())


def profile_step(hp, ctc_lin, params, wavs, precision, steps: int = 3, top: int = 10) -> list[dict]:
    """Where a (fused-attention) step's time goes: ``torch.profiler``'s operators by self CPU
    time, as shares of the profiled total."""
    from torch.profiler import ProfilerActivity, profile

    opt = torch.optim.AdamW(params, lr=1e-4)
    targets = torch.randint(1, 30, (wavs.shape[0], int(wavs.shape[1] / 16000 * 12)))
    train_step(hp, hp["encoder"], ctc_lin, params, opt, wavs, targets, precision)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            train_step(hp, hp["encoder"], ctc_lin, params, opt, wavs, targets, precision)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"operator": e.key, "self_cpu_pct": round(100 * e.self_cpu_time_total / total, 1),
             "calls_per_step": e.count // steps} for e in events[:top]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", help="manifest whose first utterances are the batch (default: noise)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true",
                   help="also time the encoder under torch.compile (baseline variant; minutes of compiling)")
    p.add_argument("--profile", action="store_true",
                   help="also profile the baseline's step (1st thread count, last precision) and list its top operators")
    p.add_argument("--note", default="", help="a sentence on the conditions, added to the report")
    p.add_argument("--quick", action="store_true", help="tiny model and batch (plumbing check)")
    p.add_argument("--out", default=str(ROOT / "docs" / "ctc_throughput.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.seconds, args.warmup, args.repeats = 2, 2.0, 1, 2

    import tempfile

    from speechpos.experiments.bench import matmul_ceiling

    tmp = tempfile.mkdtemp()
    wavs = load_audio(args.csv, args.batch, int(args.seconds * 16000))
    # One throw-away round first: thread pools and allocator caches warm up on it, not on row 1.
    hp, ctc_lin, params = build(QUICK if args.quick else {}, tmp)
    for threads in args.threads:
        torch.set_num_threads(threads)
        time_implementations(hp, ctc_lin, params, wavs, args.precisions[0], 1, 0)
    ceilings = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for precision in args.precisions:
            ceilings[threads, precision] = matmul_ceiling(512 if args.quick else 2048, precision)
    audio_s = args.batch * args.seconds
    rows, records = [], []
    for name in args.variants:
        overrides = {**VARIANTS[name], **(QUICK if args.quick else {})}
        torch.manual_seed(0)
        hp, ctc_lin, params = build(overrides, tmp)
        n_params = sum(x.numel() for x in hp["encoder"].parameters()) + sum(
            x.numel() for x in ctc_lin.parameters())
        for threads in args.threads:
            torch.set_num_threads(threads)
            for precision in args.precisions:
                flops = step_flops(hp, ctc_lin, params, wavs, precision)
                times, compile_s = time_implementations(
                    hp, ctc_lin, params, wavs, precision, args.warmup, args.repeats,
                    compile_too=args.compile and name == args.variants[0])
                before = statistics.median(times[IMPLEMENTATIONS[0]])
                for impl, steps in times.items():
                    median = statistics.median(steps)
                    gflops = flops / median / 1e9
                    rec = {"variant": name, "params_M": round(n_params / 1e6, 2), "threads": threads,
                           "precision": precision, "step": impl, "step_s": round(median, 3),
                           "audio_s_per_s": round(audio_s / median, 1),
                           "speedup": round(before / median, 2), "gflop_per_s": round(gflops, 1),
                           "ceiling_pct": round(100 * gflops / ceilings[threads, precision], 1),
                           "compile_s": round(compile_s, 1) if impl == COMPILED else None}
                    records.append(rec)
                    rows.append([name, rec["params_M"], threads, precision, impl, rec["step_s"],
                                 rec["audio_s_per_s"], f"{rec['speedup']:.2f}x", rec["gflop_per_s"],
                                 rec["ceiling_pct"], "" if rec["compile_s"] is None else rec["compile_s"]])
                    print(rec, flush=True)
    auto, reason = choose_precision("auto", "cpu")
    flags = sorted(f for f in read_cpu_flags() if "bf16" in f or f.startswith("amx") or f == "avx2")
    ceiling_text = ", ".join(f"{t} thread(s) {pr} {v:.0f}" for (t, pr), v in ceilings.items())
    setup = (
        f"CTC training step of `hparams/ctc.yaml` ({'quick sizes' if args.quick else 'as configured'}), "
        f"batch {args.batch} x {args.seconds:g} s ({'real speech' if args.csv else 'noise'}), "
        f"median of {args.repeats} steps after {args.warmup} warm-up; the step implementations of a "
        f"row group run interleaved, one step each per round, on the same model. `SpeechBrain "
        f"attention` is SpeechBrain's MultiheadAttention call (the step before), `fused attention` "
        f"speechpos's batch-first `scaled_dot_product_attention` on the same weights (the default)"
        f"{'; `torch.compile`: inductor, static shapes, the compile time is its first step' if args.compile else ''}. "
        f"GFLOP/s from torch's FLOP counter; ceiling = the best {512 if args.quick else 2048}^2 matmul "
        f"at the same threads and precision (GFLOP/s: {ceiling_text}). Machine: {platform.machine()} "
        f"{platform.processor() or ''}, torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, flags {', '.join(flags) or 'none'}; "
        f"`precision: auto` -> {auto} ({reason}). {args.note}"
    ).strip()
    command = tool_command(__file__, argv if argv is not None else sys.argv[1:])
    table = markdown_table(["variant", "params (M)", "threads", "precision", "step", "step (s)",
                            "audio s / s", "speed-up", "GFLOP/s", "% of matmul ceiling",
                            "compile (s)"], rows)
    profile = []
    if args.profile:
        torch.set_num_threads(args.threads[0])
        torch.manual_seed(0)
        hp, ctc_lin, params = build(QUICK if args.quick else {}, tmp)
        profile = profile_step(hp, ctc_lin, params, wavs, args.precisions[-1])
        table += (f"\n\nWhere the step's time goes (`{args.variants[0]}` with fused attention, "
                  f"{args.threads[0]} thread(s), {args.precisions[-1]}; torch.profiler, operators by "
                  "self CPU time over 3 steps):\n\n" + markdown_table(
                      ["operator", "% of self CPU time", "calls per step"],
                      [list(r.values()) for r in profile]))
    write_report(setup, table, args.out, title="CTC training step", command=command)
    Path(args.out).with_suffix(".json").write_text(
        json.dumps({"setup": setup, "command": command, "ceilings_gflop_per_s": {f"{t}x{pr}": round(v, 1) for (t, pr), v in
                                                             ceilings.items()}, "rows": records,
                    "profile": profile}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
