"""Running recipes as subprocesses, a few at a time: what the demo and the benchmarks share.

A :class:`Run` is one recipe invocation with its output folder and the file that marks it done;
:func:`run_all` starts them in list order, ``jobs`` at a time with ``threads`` torch threads
each, skips finished ones (so a rerun resumes) and stops everything when one fails. A run
that needs another's output names it in ``needs``: it starts only once that one is done,
and runs listed after it may start first.

Example
-------
>>> r = Run("ctc", "asr_ctc.py", "hparams/ctc.yaml", ["--seed=1"], Path("/nonexistent"), "results.json")
>>> r.done
False
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "LibriSpeech"
# The CTC baseline's conformer body as the pretraining study and the demo pretrain and fine-tune
# it (``--frontend`` is a fine-tuning key only).
CONFORMER_BODY = ["--encoder_kind=conformer", "--null_key=True", "--patch_frames=4", "--frontend=patch"]
# The speech pretext that learns (tools/pretext_sweep.py): 2-s crops, every context token an anchor.
ANCHORS_PRETEXT = {"crop_seconds": 2.0, "batch_size": 32, "anchor_ratio": 1.0}
# Pretrainers of the study and the probe screen: name -> (script, hparams, overrides), all on
# the conformer body, plus the settings every pretraining shares.
PRETRAINERS = {
    "MP3 (as built)": ("pretrain.py", "hparams/pp_conformer.yaml",
                       {"crop_seconds": None, "batch_size": 8}),
    "MP3 + anchors": ("pretrain.py", "hparams/pp_conformer.yaml", ANCHORS_PRETEXT),
    "MP3 + anchors, fast step": ("pretrain.py", "hparams/pp_conformer.yaml",
                                 {**ANCHORS_PRETEXT, "target_ratio": 0.33}),
    "MP3 relative": ("pretrain.py", "hparams/pp_conformer.yaml",
                     {"crop_seconds": 2.0, "batch_size": 32, "position_target": "relative",
                      "max_offset": 8}),
    "MP3 + anchors, min gap 2": ("pretrain.py", "hparams/pp_conformer.yaml", {**ANCHORS_PRETEXT, "min_gap": 2}),
    "MP3 + anchors, views": ("pretrain.py", "hparams/pp_conformer.yaml", {**ANCHORS_PRETEXT, "views": True}),
    "MP3 + anchors, coarse 4": ("pretrain.py", "hparams/pp_conformer.yaml", {**ANCHORS_PRETEXT, "coarse": 4}),
    "MP3 + anchors, views, min gap 2": ("pretrain.py", "hparams/pp_conformer.yaml",
                                        {**ANCHORS_PRETEXT, "views": True, "min_gap": 2}),
    "BEST-RQ": ("pretrain_bestrq.py", "hparams/bestrq.yaml", {"conv_mode": "on"}),
    "joint λ=0.05": ("pretrain_joint.py", "hparams/joint.yaml", {"position_weight": 0.05}),
    "joint λ=0.3": ("pretrain_joint.py", "hparams/joint.yaml", {"position_weight": 0.3}),
    "joint λ=1": ("pretrain_joint.py", "hparams/joint.yaml", {"position_weight": 1.0}),
}
# Pretrained with their position embedding and the convolution on: fine-tuned (or probed) as such.
MASKED = ("BEST-RQ", "joint λ=0.05", "joint λ=0.3", "joint λ=1")
PRETRAIN_COMMON = {"dropout": 0.0, "lr": 0.001, "warmup_steps": 300, "number_of_epochs": 100000,
                   "ckpt_interval_minutes": 0, "seed": 0}


@dataclass
class Run:
    """One recipe invocation (``recipes/LibriSpeech/<script> <hparams> <args>``)."""

    name: str
    script: str
    hparams: str
    args: list[str]
    out: Path
    done_file: str
    info: dict = field(default_factory=dict)
    needs: list = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """Every run this one needs is done."""
        return all(other.done for other in self.needs)

    @property
    def done(self) -> bool:
        return (self.out / self.done_file).is_file()


def run_all(runs: list[Run], jobs: int, threads: int, logs: Path) -> None:
    """Run the recipes ``jobs`` at a time (in list order, a run once its ``needs`` are done);
    exit if one fails."""
    pending = [r for r in runs if not r.done]
    for r in runs:
        if r.done:
            print(f"  {r.name}: done already, kept", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    active: list[tuple[Run, subprocess.Popen, float, object]] = []
    while pending or active:
        while pending and len(active) < jobs:
            ready = [r for r in pending if r.ready]
            if not ready:
                if not active:
                    sys.exit(f"{pending[0].name} needs a run that is neither done nor listed")
                break
            r = ready[0]
            pending.remove(r)
            log = open(logs / f"{r.name}.log", "w")
            cmd = [sys.executable, str(RECIPES / r.script), r.hparams, *r.args, f"--output_folder={r.out}"]
            proc = subprocess.Popen(cmd, cwd=RECIPES, stdout=log, stderr=subprocess.STDOUT, env=env)
            active.append((r, proc, time.time(), log))
            print(f"  {r.name}: started", flush=True)
        time.sleep(1.0)
        for item in list(active):
            r, proc, start, log = item
            if proc.poll() is None:
                continue
            log.close()
            active.remove(item)
            if proc.returncode != 0:
                for _, other, _, _ in active:
                    other.terminate()
                sys.exit(f"{r.name} failed (exit {proc.returncode}); see {logs / (r.name + '.log')}")
            r.info["wall_s"] = round(time.time() - start, 1)
            print(f"  {r.name}: finished in {r.info['wall_s']:.0f} s", flush=True)


def as_args(values: dict) -> list[str]:
    """Recipe overrides from a dict (None as yaml's null).

    >>> as_args({"crop_seconds": None, "batch_size": 8})
    ['--crop_seconds=null', '--batch_size=8']
    """
    return [f"--{k}={'null' if v is None else v}" for k, v in values.items()]


def seed_limits(items: list[str], allowed) -> dict[str, list[int]]:
    """Parse ``--limit NAME=SEED[,SEED]`` options: which seeds a pretraining (or a label budget)
    runs with when the others take more.

    >>> seed_limits(["1h=0,1", "10h=0"], ["1h", "10h"])
    {'1h': [0, 1], '10h': [0]}
    >>> seed_limits(["2h=0"], ["1h"])
    Traceback (most recent call last):
    ValueError: --limit wants NAME=SEEDS with NAME one of ['1h'], got '2h=0'
    """
    limits = {}
    for item in items:
        name, _, values = item.partition("=")
        try:
            seeds = [int(v) for v in values.split(",")]
        except ValueError:
            seeds = []
        if name not in allowed or not seeds:
            raise ValueError(f"--limit wants NAME=SEEDS with NAME one of {list(allowed)}, got {item!r}")
        limits[name] = seeds
    return limits


def made_corpus(corpus: Path, size: str, seed: int, jobs: int, prep: Path, low_label=None) -> Path:
    """Make the generated corpus if missing (``tools/make_corpus.py``'s sizes) and write its
    CSV manifests into ``prep`` (both skipped when done); returns ``prep``."""
    from speechpos.corpora.librispeech import make_corpus
    from speechpos.speech.data.librispeech import prepare_librispeech

    make_corpus(corpus, size=size, seed=seed, jobs=jobs, progress=False)
    prepare_librispeech(corpus, prep, tr_splits=["train-clean-100"], dev_splits=["dev-clean"],
                        te_splits=["test-clean"], low_label=low_label, progress=False)
    return prep
