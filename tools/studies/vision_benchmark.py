"""Digits benchmark of the ImageNet recipes: MP3 / DropPos pretraining vs training from scratch.

Writes sklearn's digits as an ImageFolder (``tools/data/make_digits_imagefolder.py``), pretrains a
small ViT with each position-prediction variant (``recipes/ImageNet/pretrain.py``) on the
train split, fine-tunes every row for the same number of epochs
(``recipes/ImageNet/finetune.py``) and writes ``<docs>/<report>.{md,json,png}`` (default
``docs/vision_results``): val top-1 as mean ± sample std over seeds. Every run is the recipe
script itself in a subprocess, with one CPU thread; finished runs (``results.json`` present)
are reused, so an interrupted benchmark resumes, and ``--report-only`` writes the report from
the runs already finished.

Usage::

    .venv/bin/python tools/studies/vision_benchmark.py --seeds 0 1 2
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

ROOT = Path(__file__).resolve().parents[2]

from speechpos.experiments.plots import (  # noqa: E402
    _pyplot,
    _save,
    markdown_table,
    mean_std,
    tool_command,
    write_report,
)
from speechpos.experiments.runs import cpu_name  # noqa: E402

RECIPES = ROOT / "recipes" / "ImageNet"


def digits_or_existing(folder: Path) -> bool:
    """tools/data/make_digits_imagefolder.py's ``digits_or_existing`` (a script, not a module of
    the package): the digits made in ``folder``, or a user's ImageFolder used as it is (True)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_digits_imagefolder", ROOT / "tools" / "data" / "make_digits_imagefolder.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.digits_or_existing(folder)


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


def run_recipe(script: str, hparams: str, overrides: dict, output: Path, log,
               report_only: bool = False) -> tuple[dict, float] | None:
    """Run a recipe unless its results exist; returns (results, wall seconds), or None for a
    run not finished when ``report_only``."""
    results = output / "results.json"
    timing = output / "wall_seconds.txt"
    if results.is_file() and timing.is_file():
        return json.loads(results.read_text()), float(timing.read_text())
    if report_only:
        return None
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
    """mean ± sample std over seeds, in percent."""
    return mean_std([v * scale for v in values], digits)


def plot_top1(rows: list[dict], path: Path) -> Path:
    """Val top-1 per fine-tuned model: mean with sample-std error bars, seeds as dots."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 0.45 * len(rows) + 1.2))
    for i, row in enumerate(rows):
        values = [100 * v for v in row["top1"]]
        if not values:
            continue
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        ax.barh(i, statistics.mean(values), xerr=sd, color="tab:blue", alpha=0.6)
        ax.plot(values, [i] * len(values), "k.", ms=4)
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("val top-1 % (bar: mean, line: sample std, dots: seeds)")
    return _save(fig, path, "Digits ViT: position-prediction pretraining vs scratch")


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
    parser.add_argument("--docs", default="docs", help="where <report>.{md,json,png} go")
    parser.add_argument("--report", default="vision_results")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write the report from the runs already finished")
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

    pre_results: dict[str, dict[int, tuple[dict, float, dict]]] = {}
    table, records = [], []
    for name, pretraining, overrides in rows:
        top1, ft_wall, seeds_done = [], [], []
        for seed in args.seeds:
            pre_path = None
            if pretraining is not None:
                pre_dir = out / "pretrain" / slug(pretraining) / str(seed)
                done = run_recipe(
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
                    args.report_only,
                )
                if done is None:
                    continue
                res, wall = done
                runs = pre_results.setdefault(pretraining, {})
                runs[seed] = (res, wall, forward_seconds(pre_dir))
                pre_path = pre_dir
            done = run_recipe(
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
                args.report_only,
            )
            if done is None:
                continue
            res, wall = done
            top1.append(res["top1"])
            seeds_done.append(seed)
            ft_wall.append(wall)
            print(
                f"{name} seed {seed}: top-1 {res['top1']:.4f} ({wall:.0f} s)", file=log, flush=True
            )
        pre = list(pre_results.get(pretraining, {}).values())
        records.append({
            "name": name,
            "seeds": seeds_done,
            "top1": top1,
            "pretrain_position_accuracy": [r["position_accuracy"] for r, _, _ in pre],
            "pretrain_wall_s": [w for _, w, _ in pre],
            "finetune_wall_s": ft_wall,
        })
        table.append(
            [
                name,
                fmt(top1),
                fmt([r["position_accuracy"] for r, _, _ in pre]) if pre else "-",
                f"{statistics.mean(w for _, w, _ in pre):.0f}" if pre else "-",
                forward_cell([s for _, _, s in pre]),
                f"{statistics.mean(ft_wall):.0f}" if ft_wall else "-",
                len(top1),
            ]
        )

    header = [
        "fine-tuned model",
        "val top-1 % (mean ± sample std)",
        "pretrain val position acc. % (chance 1.6)",
        "pretrain wall s",
        "pretrain forward s/epoch: masked (+ attentive pass)",
        "fine-tune wall s",
        "seeds",
    ]
    wall = sum(w for runs in pre_results.values() for _, w, _ in runs.values())
    wall += sum(sum(r["finetune_wall_s"]) for r in records)
    setup = (
        f"Digits ImageFolder ({data.name}, scikit-learn's 8x8 digits upscaled), ViT d_model "
        f"{MODEL['d_model']}, {MODEL['num_layers']} layers, patch {MODEL['patch_size']} on "
        f"{MODEL['image_size']} px (8x8 grid); pretraining {args.pretrain_epochs} epochs, fine-tuning "
        f"{args.finetune_epochs} epochs; seeds {args.seeds}. Every run one CPU thread on {cpu_name()}; "
        f"{wall / 60:.0f} min of runs in all. ± is the sample std over seeds (ddof 1)."
    )
    command = tool_command(__file__, sys.argv[1:])
    docs = ROOT / args.docs
    docs.mkdir(parents=True, exist_ok=True)
    plot_top1(records, docs / f"{args.report}.png")
    table_md = markdown_table(header, table) + f"\n\n![val top-1 per model]({args.report}.png)"
    write_report(setup, table_md, docs / f"{args.report}.md",
                 title="Vision: position-prediction pretraining on digits", command=command)
    (docs / f"{args.report}.json").write_text(json.dumps(
        {"setup": setup, "command": command, "cpu": cpu_name(), "seeds": args.seeds,
         "pretrain_epochs": args.pretrain_epochs, "finetune_epochs": args.finetune_epochs,
         "model": MODEL, "rows": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
