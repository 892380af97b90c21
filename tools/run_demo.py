#!/usr/bin/env python3
"""The main job end to end on the default generated corpus, on CPU:

1. make the default corpus (LibriSpeech layout, text-to-speech, ~25 min of audio);
2. pretrain an unpositioned transformer by position prediction (recipes/LibriSpeech/pretrain.py);
3. fine-tune with CTC from scratch and from the pretrained encoder (asr_ctc.py);
4. print (and write to <out>/results.md) a WER/CER table, scratch vs pretrained.

    python tools/run_demo.py                 # ~20 min on 2 CPU cores
    python tools/run_demo.py --no-pe         # also the rows fine-tuned without position embedding
    python tools/run_demo.py --quick         # tiny corpus and model, ~2 min: checks the plumbing
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "LibriSpeech"
sys.path.insert(0, str(ROOT))


def run(script: str, hparams: str, args: list[str], log: Path) -> float:
    """Run a recipe, its output into ``log``; returns wall seconds; exits on failure."""
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, str(RECIPES / script), hparams, *args],
            cwd=RECIPES, stdout=f, stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        sys.exit(f"{script} failed (exit {proc.returncode}); see {log}")
    return time.time() - start


def table(rows: list[dict]) -> str:
    lines = [
        "| run | pretraining | PE at fine-tune | dev-clean WER | dev-clean CER | test-clean WER | test-clean CER | fine-tune wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        res = r["results"]
        lines.append(
            f"| {r['name']} | {r['pretraining']} | {r['pe']} | {res['dev-clean']['WER']:.1f} | "
            f"{res['dev-clean']['CER']:.1f} | {res['test-clean']['WER']:.1f} | "
            f"{res['test-clean']['CER']:.1f} | {r['wall']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/demo")
    p.add_argument("--corpus", default="data/LibriSpeech")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--quick", action="store_true", help="tiny corpus and model (plumbing check)")
    p.add_argument("--no-pe", action="store_true", help="also fine-tune without position embedding")
    p.add_argument("--pretrain-epochs", type=int, default=None)
    p.add_argument("--ctc-epochs", type=int, default=None)
    args = p.parse_args(argv)

    from speechpos.data.corpus import make_corpus

    out = (ROOT / args.out).resolve()
    corpus = (ROOT / args.corpus).resolve()
    if args.quick:
        corpus = corpus.with_name(corpus.name + "-tiny")
    out.mkdir(parents=True, exist_ok=True)
    size = "tiny" if args.quick else "default"
    model = (
        ["--num_layers=2", "--d_model=64", "--nhead=4", "--d_ffn=128", "--batch_size=4"]
        if args.quick
        else ["--num_layers=4", "--d_model=144", "--nhead=4", "--d_ffn=576", "--batch_size=8"]
    )
    pretrain_epochs = args.pretrain_epochs or (4 if args.quick else 40)
    ctc_epochs = args.ctc_epochs or (4 if args.quick else 40)
    common = [f"--data_folder={corpus}", f"--seed={args.seed}", *model]

    t0 = time.time()
    print(f"[1/3] corpus ({size}) -> {corpus}", flush=True)
    make_corpus(corpus, size=size, seed=args.seed, jobs=2, progress=False)
    print(f"      {time.time() - t0:.0f} s", flush=True)

    print(f"[2/3] position-prediction pretraining, {pretrain_epochs} epochs", flush=True)
    pp_out = out / "pretrain"
    wall = run(
        "pretrain.py", "hparams/pp.yaml",
        [*common, f"--output_folder={pp_out}", f"--number_of_epochs={pretrain_epochs}",
         "--warmup_steps=200", "--lr=0.002", "--context_ratio=0.5", "--sigma_start=8", "--sigma_end=1"],
        out / "pretrain.log",
    )
    print(f"      {wall:.0f} s; log {pp_out / 'train_log.txt'}", flush=True)

    variants = [("scratch", None, True), ("mp3", pp_out / "encoder.ckpt", True)]
    if args.no_pe:
        variants += [("scratch-noPE", None, False), ("mp3-noPE", pp_out / "encoder.ckpt", False)]
    rows = []
    for i, (name, ckpt, pe) in enumerate(variants):
        print(f"[3/3] CTC fine-tuning {i + 1}/{len(variants)}: {name}, {ctc_epochs} epochs", flush=True)
        run_out = out / f"ctc_{name}"
        extra = [f"--pretrained_encoder={ckpt}"] if ckpt else []
        wall = run(
            "asr_ctc.py", "hparams/ctc.yaml",
            [*common, f"--output_folder={run_out}", f"--number_of_epochs={ctc_epochs}",
             "--warmup_steps=200", "--lr=0.002", f"--position_embedding={pe}", *extra],
            out / f"ctc_{name}.log",
        )
        results = json.loads((run_out / "results.json").read_text())
        rows.append({"name": name, "pretraining": "MP3" if ckpt else "none",
                     "pe": "zero-init" if pe else "none", "results": results, "wall": wall})
        print(f"      {wall:.0f} s; test-clean WER {results['test-clean']['WER']:.1f}", flush=True)

    text = table(rows)
    (out / "results.md").write_text(text + f"\n\ntotal wall time {time.time() - t0:.0f} s\n")
    print("\n" + text + f"\n\ntotal wall time {time.time() - t0:.0f} s; written to {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
