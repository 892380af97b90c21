#!/usr/bin/env python3
"""One harness for the project's claim: MP3 against from-scratch and BEST-RQ, same data, same
machine, same compute.

On a generated LibriSpeech-layout corpus (``make_corpus --size bench``: 10 h train, 30 min dev
and test) it runs, with the recipes in ``recipes/LibriSpeech``:

1. pretraining, every run given the same *training* wall time (``--pretrain-minutes``, validation
   excluded): MP3 (``pretrain.py``, context ``--context`` = 1 - masking ratio) and BEST-RQ
   (``pretrain_bestrq.py``), the same 6-layer encoder; each also keeps the encoder it had
   at half time. The masking-ratio sweep adds MP3 runs at the ``--sweep`` context ratios.
2. CTC fine-tuning (``asr_ctc.py``, characters, greedy decoding), the same number of optimizer
   steps (``--ctc-steps``) for every run: from scratch, from MP3 and from BEST-RQ, at each label
   budget (``--budgets``, Libri-light-style subsets drawn by speaker); at the largest budget also
   the sweep's encoders, the half-time encoders (for the WER-vs-time plot) and the paper's no-PE
   rows (fine-tuned without any position embedding).

Runs go ``--jobs`` at a time, each with ``--threads`` torch threads (default: 2 x 1 on a 2-core
machine); the two main pretrainers always run side by side, so machine load hits both alike.
It writes ``<out>/results.md`` (printed too) and ``results.json``: dev/test WER and CER,
pretraining throughput (audio-seconds per second of training), peak memory (process RSS,
or CUDA allocated), the fraction of the machine's measured matmul ceiling the pretraining
step reached (FLOPs of one step counted by ``torch.utils.flop_counter``), pretext accuracy;
and ``<out>/wer_vs_pretraining_time.png``. Finished runs are kept: rerunning resumes.

    python tools/benchmark.py                      # ~1 h on 2 CPU cores (the README's table)
    python tools/benchmark.py --preset quick       # tiny corpus and model: checks the plumbing
    python tools/benchmark.py --pretrain-minutes 30 --ctc-steps 3000 --device cuda:0 --jobs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from speechpos.plots import (  # noqa: E402
    markdown_table,
    plot_quality_vs_time,
    read_train_log,
    write_report,
)
from speechpos.recipes import PRETRAINED_ARCHITECTURE  # noqa: E402
from speechpos.runs import Run, made_corpus, run_all  # noqa: E402

PRESETS = {
    # 2 CPU cores, about an hour: 6-layer d144 encoder, 7 min pretraining, 500 CTC steps.
    "cpu": dict(size="bench", pretrain_minutes=7.0, ctc_steps=500, budgets=["10min", "1h"],
                sweep=[0.5, 0.1], model=[], ctc_every=800, batch=8),
    # Plumbing check (tests): tiny corpus and model, seconds per run.
    "quick": dict(size="tiny", pretrain_minutes=0.05, ctc_steps=6, budgets=["10s", "30s"],
                  sweep=[0.5], ctc_every=12, batch=4,
                  model=["--num_layers=2", "--d_model=32", "--nhead=4", "--d_ffn=64"]),
}
LOW_LABEL_SECONDS = {"10s": 10.0, "30s": 30.0, "10min": 600.0, "1h": 3600.0, "10h": 36000.0}


def pretext_accuracy(out: Path) -> tuple[float | None, float | None]:
    """(valid pretext accuracy, its chance level) from the last line of a pretraining log."""
    records = read_train_log(out / "train_log.txt")
    valid = [r["valid"] for r in records if "valid" in r]
    if not valid:
        return None, None
    last = valid[-1]
    if "pos_acc" in last:
        return last["pos_acc"], last.get("chance_acc")
    return last.get("code_acc"), None


def pretext_cell(pre: dict | None) -> str:
    if not pre or pre["pretext_acc"] is None:
        return ""
    chance = pre["pretext_chance"]
    return f"{100 * pre['pretext_acc']:.1f}" + ("" if chance is None else f" ({100 * chance:.1f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--out", default="results/benchmark")
    p.add_argument("--corpus", default=None, help="LibriSpeech-layout folder (default: data/LibriSpeech-<size>)")
    p.add_argument("--pretrain-minutes", type=float, help="training time of every pretraining run")
    p.add_argument("--ctc-steps", type=int, help="optimizer steps of every CTC run")
    p.add_argument("--budgets", nargs="+", help=f"label budgets, from {sorted(LOW_LABEL_SECONDS)}")
    p.add_argument("--context", type=float, default=0.25, help="MP3 context ratio (1 - masking ratio)")
    p.add_argument("--sweep", type=float, nargs="*", help="extra MP3 context ratios (masking-ratio sweep)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--device", default="cpu", help="cpu, or cuda:0 for a GPU column")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 only where the device has native bf16 (speechpos.precision)")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)

    preset = PRESETS[args.preset]
    from speechpos.precision import choose_precision

    args.precision, reason = choose_precision(args.precision, args.device)
    print(f"precision {args.precision} ({reason})", flush=True)
    minutes = args.pretrain_minutes or preset["pretrain_minutes"]
    steps = args.ctc_steps or preset["ctc_steps"]
    budgets = args.budgets or preset["budgets"]
    sweep = preset["sweep"] if args.sweep is None else args.sweep
    unknown = [b for b in budgets if b not in LOW_LABEL_SECONDS]
    if unknown:
        p.error(f"unknown label budget(s) {unknown}; choose from {sorted(LOW_LABEL_SECONDS)}")
    out = (ROOT / args.out).resolve()
    corpus = Path(args.corpus or ROOT / "data" / f"LibriSpeech-{preset['size']}").resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    from speechpos.bench import matmul_ceiling

    print(f"[1/4] corpus ({preset['size']}) -> {corpus}", flush=True)
    prep = made_corpus(corpus, preset["size"], args.seed, max(args.jobs * args.threads, 1),
                       out / "prep", low_label={b: LOW_LABEL_SECONDS[b] for b in budgets})

    import torch

    torch.set_num_threads(args.threads)
    ceiling_dtype = "bf16" if args.precision == "bf16" else "fp32"
    ceiling = matmul_ceiling(dtype=ceiling_dtype, device=args.device)
    print(f"      matmul ceiling {ceiling:.0f} GFLOP/s ({ceiling_dtype}, {args.threads} thread(s))",
          flush=True)

    common = [f"--data_folder={corpus}", f"--prep_folder={prep}", "--skip_prep=True",
              f"--seed={args.seed}", f"--batch_size={preset['batch']}", f"--device={args.device}",
              f"--precision={args.precision}", *preset["model"]]
    budget_s = minutes * 60
    pretrain_common = [*common, "--number_of_epochs=100000", f"--max_train_seconds={budget_s:g}",
                       f"--snapshot_seconds=[{budget_s / 2:g}]", "--lr=0.002", "--warmup_steps=200",
                       "--ckpt_interval_minutes=0"]
    mp3_args = ["--sigma_start=8", "--sigma_end=1"]
    pretrains = {
        "mp3": Run("pretrain_mp3", "pretrain.py", "hparams/pp.yaml",
                   [*pretrain_common, *mp3_args, f"--context_ratio={args.context}"],
                   out / "pretrain_mp3", "pretrain_done.json",
                   {"method": "MP3", "context": args.context}),
        "bestrq": Run("pretrain_bestrq", "pretrain_bestrq.py", "hparams/bestrq.yaml",
                      pretrain_common, out / "pretrain_bestrq", "pretrain_done.json",
                      {"method": "BEST-RQ"}),
    }
    for ratio in sweep:
        pretrains[f"mp3_c{ratio:g}"] = Run(
            f"pretrain_mp3_c{ratio:g}", "pretrain.py", "hparams/pp.yaml",
            [*pretrain_common, *mp3_args, f"--context_ratio={ratio}"],
            out / f"pretrain_mp3_c{ratio:g}", "pretrain_done.json",
            {"method": "MP3", "context": ratio})
    print(f"[2/4] pretraining: {len(pretrains)} runs of {minutes:g} min training time", flush=True)
    run_all(list(pretrains.values()), args.jobs, args.threads, logs)

    half = f"encoder_at_{budget_s / 2:g}s.ckpt"
    largest = max(budgets, key=LOW_LABEL_SECONDS.get)
    # Every CTC row fine-tunes the pretraining architecture (same encoder body for all rows).
    architecture = [a for a in PRETRAINED_ARCHITECTURE if not a.startswith("--position_embedding")]
    ctc_common = [*common, *architecture, "--number_of_epochs=100000", f"--number_of_steps={steps}",
                  f"--train_samples_per_epoch={preset['ctc_every']}", "--lr=0.002",
                  f"--warmup_steps={max(steps // 6, 1)}", "--select_on=CER", "--ckpt_interval_minutes=0"]

    def ctc(name, budget, encoder=None, pe=True, **info):
        extra = [f"--pretrained_encoder={encoder}"] if encoder else []
        return Run(f"ctc_{name}_{budget}", "asr_ctc.py", "hparams/ctc.yaml",
                   [*ctc_common, f"--train_csv={prep / f'train-{budget}.csv'}",
                    f"--position_embedding={pe}", *extra],
                   out / f"ctc_{name}_{budget}", "results.json",
                   {"budget": budget, "pe": "zero-init" if pe else "none", **info})

    ctcs = []
    for budget in budgets:
        ctcs += [
            ctc("scratch", budget, method="none", pretrain_s=0.0),
            ctc("mp3", budget, out / "pretrain_mp3" / "encoder.ckpt", pretrain="mp3"),
            ctc("bestrq", budget, out / "pretrain_bestrq" / "encoder.ckpt", pretrain="bestrq"),
        ]
    ctcs += [ctc(f"mp3_c{r:g}", largest, out / f"pretrain_mp3_c{r:g}" / "encoder.ckpt",
                 pretrain=f"mp3_c{r:g}") for r in sweep]
    ctcs += [
        ctc("mp3_half", largest, out / "pretrain_mp3" / half, pretrain="mp3", half=True),
        ctc("bestrq_half", largest, out / "pretrain_bestrq" / half, pretrain="bestrq", half=True),
        ctc("scratch_noPE", largest, pe=False, method="none", pretrain_s=0.0),
        ctc("mp3_noPE", largest, out / "pretrain_mp3" / "encoder.ckpt", pe=False, pretrain="mp3"),
    ]
    print(f"[3/4] CTC fine-tuning: {len(ctcs)} runs of {steps} steps", flush=True)
    run_all(ctcs, args.jobs, args.threads, logs)

    print("[4/4] table and plot", flush=True)
    summaries = {}
    for key, r in pretrains.items():
        s = json.loads((r.out / "pretrain_done.json").read_text())
        acc, chance = pretext_accuracy(r.out)
        gflops = s.get("achieved_gflop_per_s")
        summaries[key] = {**r.info, **s, "pretext_acc": acc, "pretext_chance": chance,
                          "ceiling_fraction": None if gflops is None else gflops / ceiling}
    rows, records = [], []
    for r in ctcs:
        res = json.loads((r.out / "results.json").read_text())
        pre = summaries.get(r.info.get("pretrain"))
        method = pre["method"] if pre else "none"
        if pre and pre["method"] == "MP3":
            method = f"MP3 (context {pre['context']:g})"
        pretrain_s = 0.0 if not pre else (budget_s / 2 if r.info.get("half") else pre["train_seconds"])
        rec = {"run": r.name, "pretraining": method, "pretrain_s": pretrain_s,
               "budget": r.info["budget"], "pe": r.info["pe"], "ctc_steps": steps,
               "results": res, "pretrain_summary": pre}
        records.append(rec)
        rows.append([
            r.name, method, round(pretrain_s), r.info["budget"], r.info["pe"],
            res["dev-clean"]["WER"], res["dev-clean"]["CER"],
            res["test-clean"]["WER"], res["test-clean"]["CER"],
            "" if not pre else pre["audio_s_per_s"],
            "" if not pre else round(pre["peak_memory_mib"]),
            "" if not pre or pre["ceiling_fraction"] is None else f"{100 * pre['ceiling_fraction']:.1f}",
            "" if r.info.get("half") else pretext_cell(pre),  # measured at the end only
        ])
    headers = ["run", "pretraining", "pretrain s", "labels", "PE", "dev WER", "dev CER",
               "test WER", "test CER", "pretrain audio-s/s", "peak MiB", "% matmul ceiling",
               "pretext acc % (chance)"]
    setup = (
        f"Corpus {corpus.name} ({preset['size']}); pretraining {minutes:g} min of training time per "
        f"run; CTC {steps} optimizer steps per run (batch {preset['batch']}, checkpoint chosen on "
        f"dev CER, greedy decoding); {args.jobs} run(s) at a time x {args.threads} torch thread(s) on "
        f"{args.device} ({platform.machine()}, {os.cpu_count()} cores), {args.precision}; matmul "
        f"ceiling {ceiling:.0f} GFLOP/s; total wall {time.time() - t0:.0f} s. Pretext accuracy: "
        "position (MP3, chance in results.json) or masked-code (BEST-RQ) accuracy on dev-clean."
    )
    table = markdown_table(headers, rows)
    points = {"from scratch": [], "MP3": [], "BEST-RQ": []}
    for rec in records:
        if rec["budget"] != largest or rec["pe"] != "zero-init":
            continue
        name = {"none": "from scratch", "BEST-RQ": "BEST-RQ"}.get(rec["pretraining"], None)
        if name is None and rec["pretraining"] == f"MP3 (context {args.context:g})":
            name = "MP3"
        if name:
            res = rec["results"]["test-clean"]
            points[name].append((rec["pretrain_s"], res["WER"], res["CER"]))
    plot = plot_quality_vs_time(points, out / "wer_vs_pretraining_time.png",
                                title=f"test-clean, {largest} of labels, {steps} CTC steps")
    (out / "results.json").write_text(json.dumps(
        {"setup": setup, "ceiling_gflop_per_s": ceiling, "pretraining": summaries, "runs": records},
        indent=1, default=str))
    print()
    write_report(setup, table, out / "results.md")
    print(f"\nwritten: {out / 'results.md'}, {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
