#!/usr/bin/env python3
"""Training throughput of the CTC recipe's model, in audio-seconds per second of training.

One step is what ``asr_ctc.py`` does per batch: filterbanks, normalisation, SpecAugment, the
encoder built from ``hparams/ctc.yaml`` (with the overrides of each variant), the CTC layer and
loss on random character targets, backward, gradient clipping, AdamW. Rows: variant x
precision (fp32, bf16 autocast) x torch threads (1, 2). Input: ``--batch`` utterances of
``--seconds`` s of real speech from ``--csv`` (the first utterances of a manifest, cut or
tiled to length) or noise when no manifest is given. After ``--warmup`` steps the median of
``--repeats`` steps is reported. Writes ``docs/ctc_throughput.md`` and ``.json``.

    .venv/bin/python tools/bench_ctc_step.py [--csv results/bench_prep/dev-clean.csv]
    .venv/bin/python tools/bench_ctc_step.py --quick         # small model, a few seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hyperpyyaml import load_hyperpyyaml  # noqa: E402

from speechpos.experiments.plots import markdown_table, write_report  # noqa: E402
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


def time_steps(hp, ctc_lin, params, wavs, precision, warmup, repeats) -> list[float]:
    """Seconds per training step (after ``warmup`` steps)."""
    modules = [hp["encoder"], hp["normalize"], ctc_lin]
    for m in modules:
        m.train()
    opt = torch.optim.AdamW(params, lr=1e-4)
    lens = torch.ones(wavs.shape[0])
    targets = torch.randint(1, 30, (wavs.shape[0], int(wavs.shape[1] / 16000 * 12)))
    target_lens = torch.ones(wavs.shape[0])
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            feats = hp["normalize"](hp["compute_features"](wavs), lens)
            feats = hp["freq_drop"](hp["time_drop"](feats))
            enc, out_lens = hp["encoder"](feats, lens)
            log_probs = torch.log_softmax(ctc_lin(enc).float(), dim=-1)
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1), targets, out_lens,
            torch.round(target_lens * targets.shape[1]).long(), blank=0, zero_infinity=True,
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


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
    p.add_argument("--quick", action="store_true", help="tiny model and batch (plumbing check)")
    p.add_argument("--out", default=str(ROOT / "docs" / "ctc_throughput.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.seconds, args.warmup, args.repeats = 2, 2.0, 1, 2

    import tempfile

    tmp = tempfile.mkdtemp()
    wavs = load_audio(args.csv, args.batch, int(args.seconds * 16000))
    # One throw-away round first: thread pools and allocator caches warm up on it, not on row 1.
    hp, ctc_lin, params = build(QUICK if args.quick else {}, tmp)
    for threads in args.threads:
        torch.set_num_threads(threads)
        time_steps(hp, ctc_lin, params, wavs, args.precisions[0], args.warmup, 1)
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
                times = time_steps(hp, ctc_lin, params, wavs, precision, args.warmup, args.repeats)
                median = statistics.median(times)
                rec = {"variant": name, "params_M": round(n_params / 1e6, 2), "threads": threads,
                       "precision": precision, "step_s": round(median, 3),
                       "audio_s_per_s": round(audio_s / median, 1)}
                records.append(rec)
                rows.append(list(rec.values()))
                print(rec, flush=True)
    auto, reason = choose_precision("auto", "cpu")
    flags = sorted(f for f in read_cpu_flags() if "bf16" in f or f.startswith("amx") or f == "avx2")
    setup = (
        f"CTC training step of `hparams/ctc.yaml` ({'quick sizes' if args.quick else 'as configured'}), "
        f"batch {args.batch} x {args.seconds:g} s ({'real speech' if args.csv else 'noise'}), "
        f"median of {args.repeats} steps after {args.warmup} warm-up. Machine: {platform.machine()} "
        f"{platform.processor() or ''}, torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, flags {', '.join(flags) or 'none'}; "
        f"`precision: auto` -> {auto} ({reason}). Command: `python tools/bench_ctc_step.py"
        f"{' ' + ' '.join(argv if argv is not None else sys.argv[1:])}`."
    )
    table = markdown_table(["variant", "params (M)", "threads", "precision", "step (s)",
                            "audio s / s"], rows)
    write_report(setup, table, args.out)
    Path(args.out).with_suffix(".json").write_text(
        json.dumps({"setup": setup, "rows": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
