"""Digits benchmark of the ImageNet recipes: MP3 / DropPos pretraining vs training from scratch.

Writes sklearn's digits as an ImageFolder (``tools/make_digits_imagefolder.py``), pretrains a
small ViT with each position-prediction variant (``recipes/ImageNet/pretrain.py``) on the
train split, fine-tunes every row for the same number of epochs
(``recipes/ImageNet/finetune.py``) and prints a markdown table of val top-1, also written to
``<out>/table.md``. Every run is the recipe script itself in a subprocess, with one CPU thread;
finished runs (``results.json`` present) are reused, so an interrupted benchmark resumes.

Usage::

    .venv/bin/python tools/vision_benchmark.py --out results/vision_benchmark --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from make_digits_imagefolder import digits_or_existing  # noqa: E402

RECIPES = ROOT / "recipes" / "ImageNet"

# A small ViT on 32x32 digits: patch 4 -> an 8x8 grid of 64 positions.
MODEL = {
    "image_size": 32,
    "patch_size": 4,
    "d_model": 64,
    "nhead": 4,
    "d_ffn": 256,
    "num_layers": 4,
    "batch_size": 64,
    "num_workers": 0,
    "crop_scale": "[0.8,1.0]",
    "hflip": 0.0,
    "eval_resize_ratio": 1.0,
    "mean": "[0.5]",
    "std": "[0.5]",
    "weight_decay": 0.05,
}
PRETRAIN = {"lr": 0.001, "warmup_epochs": 2, "context_ratio": 0.25}
FINETUNE = {"lr": 0.001, "warmup_epochs": 1, "num_classes": 10}

PRETRAININGS = {
    "MP3": {},
    "DropPos smoothing": {"sigma_start": 1.0, "sigma_end": 0.0},
    "DropPos attentive": {"attentive": True},
    "DropPos smoothing + attentive": {"sigma_start": 1.0, "sigma_end": 0.0, "attentive": True},
}

# (row name, pretraining or None, fine-tune overrides)
ROWS = [
    ("scratch, PE", None, {"position_embedding": True}),
    ("scratch, no PE", None, {"position_embedding": False}),
    ("MP3, zero-init PE", "MP3", {"position_embedding": True}),
    ("MP3, no PE", "MP3", {"position_embedding": False}),
    ("DropPos smoothing, zero-init PE", "DropPos smoothing", {"position_embedding": True}),
    ("DropPos attentive, zero-init PE", "DropPos attentive", {"position_embedding": True}),
    (
        "DropPos smoothing + attentive, zero-init PE",
        "DropPos smoothing + attentive",
        {"position_embedding": True},
    ),
    (
        "DropPos smoothing + attentive, no PE",
        "DropPos smoothing + attentive",
        {"position_embedding": False},
    ),
    ("linear probe: random encoder", None, {"position_embedding": False, "linear_probe": True}),
    ("linear probe: MP3 encoder", "MP3", {"position_embedding": False, "linear_probe": True}),
]


def slug(name: str) -> str:
    """A folder name for a run."""
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def run_recipe(script: str, hparams: str, overrides: dict, output: Path, log) -> tuple[dict, float]:
    """Run a recipe unless its results exist; returns (results, wall seconds)."""
    results = output / "results.json"
    timing = output / "wall_seconds.txt"
    if results.is_file() and timing.is_file():
        return json.loads(results.read_text()), float(timing.read_text())
    cmd = [sys.executable, str(RECIPES / script), str(RECIPES / "hparams" / hparams)]
    cmd += [f"--{k}={v}" for k, v in {**overrides, "output_folder": output}.items()]
    cmd += ["--noprogressbar"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print("+", shlex.join(cmd), file=log, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise RuntimeError(f"{script} failed ({proc.returncode}) for {output}")
    timing.write_text(f"{wall:.1f}")
    return json.loads(results.read_text()), wall


def forward_seconds(pretrain_dir: Path) -> dict[str, float]:
    """Mean seconds per epoch of the masked forward and of the attentive no-grad pass."""
    text = (pretrain_dir / "train_log.txt").read_text()
    out = {}
    for key in ("masked_forward", "attentive_pass"):
        values = [float(v) for v in re.findall(rf"train {key}_s: ([0-9.e+-]+)", text)]
        out[key] = statistics.mean(values) if values else 0.0
    return out


def fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """mean (± population std over seeds) in percent."""
    if not values:
        return "-"
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.pstdev(values) * scale:.{digits}f}"


def forward_cell(seconds: list[dict[str, float]]) -> str:
    """Masked-forward seconds per epoch, with the attentive pass's if there is one."""
    if not seconds:
        return "-"
    masked = statistics.mean(s["masked_forward"] for s in seconds)
    attentive = statistics.mean(s["attentive_pass"] for s in seconds)
    return f"{masked:.2f} (+ {attentive:.2f})" if attentive else f"{masked:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/digits", help="ImageFolder: yours is used as it is; the digits are made if absent")
    parser.add_argument("--out", default="results/vision_benchmark")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--rows", nargs="*", help="only the rows whose name contains one of these")
    args = parser.parse_args()

    data = ROOT / args.data
    try:
        if digits_or_existing(data):
            print(f"{data}: an ImageFolder not made here, used as it is", file=sys.stderr)
    except ValueError as err:
        parser.error(str(err))
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in ROWS if not args.rows or any(s in r[0] for s in args.rows)]
    common = {**MODEL, "data_folder": data}
    log = sys.stderr

    pre_results: dict[str, list[tuple[dict, float, dict]]] = {}
    table = []
    for name, pretraining, overrides in rows:
        top1, ft_wall = [], []
        for seed in args.seeds:
            pre_path = None
            if pretraining is not None:
                pre_dir = out / "pretrain" / slug(pretraining) / str(seed)
                res, wall = run_recipe(
                    "pretrain.py",
                    "pretrain.yaml",
                    {
                        **common,
                        **PRETRAIN,
                        **PRETRAININGS[pretraining],
                        "seed": seed,
                        "number_of_epochs": args.pretrain_epochs,
                    },
                    pre_dir,
                    log,
                )
                runs = pre_results.setdefault(pretraining, [])
                if len(runs) < len(args.seeds):
                    runs.append((res, wall, forward_seconds(pre_dir)))
                pre_path = pre_dir
            res, wall = run_recipe(
                "finetune.py",
                "finetune.yaml",
                {
                    **common,
                    **FINETUNE,
                    **overrides,
                    "seed": seed,
                    "number_of_epochs": args.finetune_epochs,
                    "pretrained_path": pre_path if pre_path else "null",
                },
                out / "finetune" / slug(name) / str(seed),
                log,
            )
            top1.append(res["top1"])
            ft_wall.append(wall)
            print(
                f"{name} seed {seed}: top-1 {res['top1']:.4f} ({wall:.0f} s)", file=log, flush=True
            )
        pre = pre_results.get(pretraining, [])
        table.append(
            [
                name,
                fmt(top1),
                fmt([r["position_accuracy"] for r, _, _ in pre]) if pre else "-",
                f"{statistics.mean(w for _, w, _ in pre):.0f}" if pre else "-",
                forward_cell([s for _, _, s in pre]),
                f"{statistics.mean(ft_wall):.0f}",
            ]
        )

    header = [
        "fine-tuned model",
        "val top-1 %",
        "pretrain val position acc. % (chance 1.6)",
        "pretrain wall s",
        "pretrain forward s/epoch: masked (+ attentive pass)",
        "fine-tune wall s",
    ]
    lines = [
        f"Digits ImageFolder ({data.name}), ViT d_model {MODEL['d_model']}, {MODEL['num_layers']} layers, "
        f"patch {MODEL['patch_size']} on {MODEL['image_size']} px (8x8 grid); pretraining "
        f"{args.pretrain_epochs} epochs, fine-tuning {args.finetune_epochs} epochs; seeds {args.seeds}; "
        "1 CPU thread per run.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "table.md").write_text(text)


if __name__ == "__main__":
    main()
