#!/usr/bin/env python3
"""Does the speech pretext learn? Short position-prediction pretrainings, one per setting.

Every setting pretrains the study's encoder (``hparams/pp_conformer.yaml``: 6-layer conformer,
d 144, convolution off) for the same training wall time (``--seconds``, validation excluded)
on the bench corpus's 10 h of training audio, and is scored on dev-clean crops: accuracy on
its own target and mean absolute error (in patches, or in offset classes for relative
targets) beside their chance levels. Settings:

* the pretext as built before (whole utterances), and fixed-length random crops swept over
  crop length, patch size and context ratio (MP3's masking ratio is 1 - context ratio);
* variants on 2-s crops: DropPos-style anchors (a fraction of the context keeps a sinusoidal
  position signal, no loss on them), 1-D position smoothing, relative targets (offset within
  ±k of a context token), and the faster step (only the context and a third of the other
  tokens through the encoder).

Writes ``<docs>/pretext_sweep.md``, ``<docs>/pretext_sweep.json`` and
``<docs>/pretext_sweep.png`` (accuracy / chance and error / chance per setting). Finished runs
are kept: rerunning resumes.

Usage::

    .venv/bin/python tools/studies/pretext_sweep.py --jobs 1 --seconds 150   # 36 min; the docs' table
    .venv/bin/python tools/studies/pretext_sweep.py --settings crop2 anchors0.25    # a subset
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from speechpos.experiments.plots import (  # noqa: E402
    _pyplot,
    _save,
    markdown_table,
    read_train_log,
    tool_command,
    write_report,
)
from speechpos.experiments.runs import Run, made_corpus, run_all  # noqa: E402

AUDIO_PER_BATCH = 64.0  # seconds of audio per batch for crops (batch = this / crop)

# name -> (description, overrides). Crops of 2 s, 40-ms patches, context 0.25 unless said.
SETTINGS = {
    "whole": ("as built before: whole utterances", {"crop_seconds": None, "batch_size": 8}),
    "crop1": ("crops 1 s", {"crop_seconds": 1.0}),
    "crop2": ("crops 2 s", {}),
    "crop4": ("crops 4 s", {"crop_seconds": 4.0}),
    "crop2_context0.5": ("crops 2 s, context 0.5", {"context_ratio": 0.5}),
    "crop2_patch8": ("crops 2 s, 80-ms patches", {"patch_frames": 8}),
    "smoothing": ("smoothing sigma 2 -> 0", {"sigma_start": 2.0, "sigma_end": 0.0}),
    "anchors0.25": ("anchors 25 % of context", {"anchor_ratio": 0.25}),
    "anchors0.5": ("anchors 50 % of context", {"anchor_ratio": 0.5}),
    "anchors1.0": ("anchors: all context positioned", {"anchor_ratio": 1.0}),
    "anchors1.0_fast": ("anchors 100 %, 1/3 of targets encoded", {"anchor_ratio": 1.0, "target_ratio": 0.33}),
    "relative8": ("relative offsets, k = 8", {"position_target": "relative", "max_offset": 8}),
    "relative8_fast": ("relative k = 8, 1/3 of targets encoded", {"position_target": "relative", "max_offset": 8, "target_ratio": 0.33}),
}
BASE = {"crop_seconds": 2.0, "patch_frames": 4, "context_ratio": 0.25, "dropout": 0.0,
        "lr": 0.001, "warmup_steps": 100, "number_of_epochs": 1000}


def overrides(setting: dict, seconds: float, seed: int) -> list[str]:
    values = {**BASE, **setting}
    if values["crop_seconds"] is not None and "batch_size" not in setting:
        values["batch_size"] = int(AUDIO_PER_BATCH / values["crop_seconds"])
    args = [f"--{k}={'null' if v is None else v}" for k, v in values.items()]
    return args + [f"--max_train_seconds={seconds}", f"--seed={seed}"]


def score(out: Path) -> dict | None:
    """The last validation of a run: its accuracy and error beside their chance levels."""
    log = out / "train_log.txt"
    if not log.is_file():
        return None
    valid = [r for r in read_train_log(log) if "valid" in r]
    if not valid:
        return None
    v = valid[-1]["valid"]
    summary = json.loads((out / "pretrain_done.json").read_text())
    return {
        "dev_position_accuracy": round(100 * v["pos_acc"], 2),
        "chance_position_accuracy": round(100 * v["chance_acc"], 2),
        "accuracy_over_chance": round(v["pos_acc"] / max(v["chance_acc"], 1e-9), 2),
        "position_error": v["pos_err"],
        "chance_position_error": v["chance_err"],
        "error_over_chance": round(v["pos_err"] / max(v["chance_err"], 1e-9), 3),
        "train_seconds": summary["train_seconds"],
        "optimizer_steps": summary["optimizer_steps"],
        "audio_s_per_s": summary["audio_s_per_s"],
        "epochs": valid[-1]["epoch"],
    }


def plot(rows: list[dict], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(rows) + 1.5), sharey=True)
    names = [r["setting"] for r in rows]
    axes[0].barh(names, [r["accuracy_over_chance"] for r in rows], color="tab:blue")
    axes[0].axvline(1, color="k", lw=0.8)
    axes[0].axvline(10, color="tab:red", ls="--", lw=0.8, label="target 10x")
    axes[0].set_xlabel("dev accuracy / chance")
    axes[0].legend(loc="lower right")
    axes[1].barh(names, [r["error_over_chance"] for r in rows], color="tab:orange")
    axes[1].axvline(1, color="k", lw=0.8)
    axes[1].axvline(0.25, color="tab:red", ls="--", lw=0.8, label="target 1/4")
    axes[1].set_xlabel("dev position error / chance (lower is better)")
    axes[1].legend(loc="lower right")
    axes[0].invert_yaxis()
    return _save(fig, path, "Speech pretext: what makes position prediction learn")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seconds", type=float, default=150.0, help="training time per setting")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "LibriSpeech-bench")
    parser.add_argument("--size", default="bench", help="make_corpus size if the corpus is missing")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "pretext_sweep")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--model", nargs="*", default=[], help="extra overrides, e.g. --num_layers=2")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    prep = made_corpus(args.corpus, args.size, 1234, args.jobs, args.out / "prep")
    common = [f"--data_folder={args.corpus}", f"--prep_folder={prep}", "--skip_prep=True",
              f"--train_csv={prep / 'train-clean-100.csv'}", f"--valid_csv={prep / 'dev-clean.csv'}",
              "--ckpt_interval_minutes=0"]
    runs = [
        Run(name, "pretrain.py", "hparams/pp_conformer.yaml",
            common + overrides(SETTINGS[name][1], args.seconds, args.seed) + args.model,
            args.out / name, "pretrain_done.json")
        for name in args.settings
    ]
    run_all(runs, args.jobs, args.threads, args.out / "logs")

    rows = []
    for name in args.settings:
        s = score(args.out / name)
        if s is None:
            continue
        settings = {**BASE, **SETTINGS[name][1]}
        rows.append({"setting": name, "description": SETTINGS[name][0], **s,
                     "overrides": {k: v for k, v in settings.items() if k != "number_of_epochs"}})
    headers = ["setting", "what", "dev acc %", "chance %", "acc / chance", "error", "chance error",
               "error / chance", "steps", "audio s/s"]
    table = markdown_table(headers, [
        [r["setting"], r["description"], r["dev_position_accuracy"], r["chance_position_accuracy"],
         r["accuracy_over_chance"], r["position_error"], r["chance_position_error"],
         r["error_over_chance"], r["optimizer_steps"], r["audio_s_per_s"]] for r in rows])
    setup = (
        f"{args.seconds:g} s of training per setting ({args.threads} torch thread(s), "
        f"{args.jobs} run(s) at a time) on `{args.corpus.name}` train, scored on dev-clean "
        "(2-s crops from a fixed seed unless 'whole'); pp_conformer.yaml's 6-layer conformer d144 "
        f"{' '.join(args.model)}, convolution off, dropout 0, AdamW 1e-3; relative rows: accuracy and error on the offset class "
        "(chance = a guess drawn from the offsets' own distribution); error in patches (absolute) "
        "or offset steps (relative)."
    )
    args.docs.mkdir(parents=True, exist_ok=True)
    command = tool_command(__file__, sys.argv[1:] if argv is None else argv)
    write_report(setup, table, args.docs / "pretext_sweep.md", title="Position pretext settings",
                 command=command)
    (args.docs / "pretext_sweep.json").write_text(json.dumps({"setup": setup, "command": command, "rows": rows}, indent=1))
    if rows:
        plot(rows, args.docs / "pretext_sweep.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
