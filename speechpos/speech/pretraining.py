"""What the pretraining recipes (position prediction, BEST-RQ) share: a training clock with an
optional wall-time budget, throughput / peak-memory / FLOP accounting, and encoder exports.
The clock alone (:class:`ClockedBrain`) also times the CTC recipe, for quality-vs-time curves,
and stops it when a ``max_train_seconds`` budget is set.

Comparing pretrainers fairly means giving them the same *training* wall time (validation
excluded) and reading their throughput the same way; :class:`TrainingClock` keeps that
account (and is checkpointed, so a resumed run keeps its budget), :class:`ClockedBrain` stops
training when the budget is spent, and :class:`PretrainingBrain` writes ``encoder.ckpt`` after every validation,
``encoder_at_<N>s.ckpt`` snapshots at chosen training times, and ``pretrain_summary.json``;
``pretrain_done.json`` once training has ended (:meth:`PretrainingBrain.finish`).

Example
-------
>>> clock = TrainingClock(budget_seconds=60, snapshot_seconds=[30, 60])
>>> clock.train_seconds = 31.0
>>> clock.exhausted(), clock.due_snapshots()
(False, [30.0])
>>> clock.train_seconds = 61.0
>>> clock.exhausted(), clock.due_snapshots()
(True, [60.0])
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import time

import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import if_main_process
from torch.utils.flop_counter import FlopCounterMode

logger = logging.getLogger(__name__)


@register_checkpoint_hooks
class TrainingClock:
    """Seconds spent in the training stage, audio seconds seen, and optimizer steps.

    Arguments
    ---------
    budget_seconds : float, optional
        Stop training once this much training time is spent (None: no budget).
    snapshot_seconds : list of float
        Training times at which to export the encoder (for quality-vs-time curves).
    """

    def __init__(self, budget_seconds: float | None = None, snapshot_seconds=()):
        if budget_seconds is not None and budget_seconds <= 0:
            raise ValueError(f"budget_seconds must be positive, got {budget_seconds}")
        self.budget_seconds = budget_seconds
        self.snapshot_seconds = sorted(float(s) for s in (snapshot_seconds or []))
        self.train_seconds = 0.0
        self.audio_seconds = 0.0
        self.steps = 0
        self.snapshots_taken: list[float] = []
        self._started: float | None = None

    def start(self) -> None:
        self._started = time.perf_counter()

    def pause(self) -> None:
        if self._started is not None:
            self.train_seconds += time.perf_counter() - self._started
            self._started = None

    def tick(self) -> float:
        """Fold the running interval into ``train_seconds`` (called after every step); returns
        that interval in seconds (0 while paused)."""
        if self._started is None:
            return 0.0
        now = time.perf_counter()
        interval = now - self._started
        self.train_seconds += interval
        self._started = now
        return interval

    def exhausted(self) -> bool:
        return self.budget_seconds is not None and self.train_seconds >= self.budget_seconds

    def due_snapshots(self) -> list[float]:
        """Snapshot times reached and not yet taken (marks them as taken)."""
        due = [
            s for s in self.snapshot_seconds
            if s <= self.train_seconds and s not in self.snapshots_taken
        ]
        self.snapshots_taken.extend(due)
        return due

    def fraction(self) -> float | None:
        """Fraction of the budget spent (None without a budget)."""
        if self.budget_seconds is None:
            return None
        return min(self.train_seconds / self.budget_seconds, 1.0)

    @mark_as_saver
    def _save(self, path):
        state = {k: getattr(self, k) for k in ("train_seconds", "audio_seconds", "steps", "snapshots_taken")}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(state, f)

    @mark_as_loader
    def _recover(self, path, end_of_epoch=True):
        with open(path, encoding="utf-8") as f:
            for key, value in json.load(f).items():
                setattr(self, key, value)


class WarmupMeter:
    """The first steps of a process (where ``torch.compile`` compiles and caches fill) timed
    one by one, and the throughput of the steps after them.

    >>> meter = WarmupMeter(first=2)
    >>> for seconds in (30.0, 2.0, 0.5, 0.5):
    ...     meter.record(seconds, audio_seconds=40.0)
    >>> meter.report()
    {'first_step_s': 30.0, 'first_2_steps_s': 32.0, 'steady_audio_s_per_s': 80.0}
    """

    def __init__(self, first: int = 10):
        self.first = first
        self.first_seconds: list[float] = []
        self.audio_seconds = 0.0
        self.seconds = 0.0

    def record(self, seconds: float, audio_seconds: float) -> None:
        if len(self.first_seconds) < self.first:
            self.first_seconds.append(seconds)
        else:
            self.audio_seconds += audio_seconds
            self.seconds += seconds

    def report(self) -> dict:
        head = self.first_seconds
        return {
            "first_step_s": round(head[0], 2) if head else None,
            f"first_{self.first}_steps_s": round(sum(head), 2) if head else None,
            "steady_audio_s_per_s": round(self.audio_seconds / self.seconds, 1) if self.seconds else None,
        }


def peak_memory_mib(device: str | torch.device = "cpu") -> float:
    """Peak resident memory of this process (CPU), or peak allocated CUDA memory, in MiB."""
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class ClockedBrain(sb.Brain):
    """A Brain that keeps ``hparams.training_clock`` (a :class:`TrainingClock`): training time
    with validation excluded, audio seconds seen (from ``batch.sig``, at ``hparams.sample_rate``)
    and optimizer steps; it also steps ``hparams.lr_annealing`` after every optimizer step.
    Subclasses call ``super()`` in ``on_stage_start`` / ``on_stage_end`` / ``on_fit_batch_end``.
    """

    @property
    def clock(self) -> TrainingClock:
        return self.hparams.training_clock

    @property
    def warmup(self) -> WarmupMeter:
        """This process's first steps and the steady throughput after them (not checkpointed:
        a resumed run compiles again)."""
        if not hasattr(self, "_warmup"):
            self._warmup = WarmupMeter()
        return self._warmup

    def fit_batch(self, batch):
        wavs, wav_lens = batch.sig
        self.batch_audio_seconds = float((wav_lens * wavs.shape[1]).sum()) / self.hparams.sample_rate
        self.clock.audio_seconds += self.batch_audio_seconds
        return super().fit_batch(batch)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        if should_step and hasattr(self.hparams, "lr_annealing"):
            self.hparams.lr_annealing(self.optimizer)
        self.warmup.record(self.clock.tick(), getattr(self, "batch_audio_seconds", 0.0))
        if should_step:
            self.clock.steps += 1
        if self._budget_spent():
            # Brain stops at the next batch, validates and leaves fit() once this is reached.
            self.optimizer_step_limit = self.optimizer_step

    def _budget_spent(self) -> bool:
        spent = self.clock.exhausted()
        if sb.utils.distributed.is_distributed_initialized():
            flag = [spent]
            torch.distributed.broadcast_object_list(flag, src=0)  # rank 0's clock decides
            spent = flag[0]
        return spent

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self._stage_mark = (self.clock.audio_seconds, self.clock.train_seconds)
            self.clock.start()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.clock.pause()

    def stage_throughput(self) -> float:
        """Audio-seconds per second of training in the current (or just ended) train stage."""
        audio, seconds = self._stage_mark
        return round((self.clock.audio_seconds - audio) / max(self.clock.train_seconds - seconds, 1e-9), 1)


class PretrainingBrain(ClockedBrain):
    """Base of the pretraining Brains: the hparams must hold ``encoder``, ``normalize``,
    ``sample_rate``, ``output_folder``, ``training_clock`` (a :class:`TrainingClock`,
    also a checkpointer recoverable) and optionally ``lr_annealing``.

    Subclasses call ``super().on_stage_start`` / ``super().on_stage_end`` and, after each
    validation, :meth:`export`.
    """

    flops_per_audio_second: float | None = None

    def fit_batch(self, batch):
        if self.flops_per_audio_second is not None:
            return super().fit_batch(batch)
        # The first step is counted (forward + backward); later steps run uncounted.
        with FlopCounterMode(display=False) as counter:
            loss = super().fit_batch(batch)
        self.flops_per_audio_second = counter.get_total_flops() / max(self.batch_audio_seconds, 1e-9)
        return loss

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        super().on_fit_batch_end(batch, outputs, loss, should_step)
        for seconds in self.clock.due_snapshots():
            self.save_encoder(f"encoder_at_{seconds:g}s.ckpt")

    @property
    def progress(self) -> float:
        """Fraction of training done: of the time budget if there is one, else of the epochs."""
        fraction = self.clock.fraction()
        if fraction is not None:
            return fraction
        total = self.hparams.number_of_epochs
        return (self.hparams.epoch_counter.current - 1) / max(total - 1, 1)

    def save_encoder(self, name: str) -> None:
        if if_main_process():
            torch.save(self.hparams.encoder.state_dict(), os.path.join(self.hparams.output_folder, name))

    def export(self) -> None:
        """``encoder.ckpt`` for asr_ctc.py and ``pretrain_summary.json`` with the measurements."""
        self.save_encoder("encoder.ckpt")
        if if_main_process():
            with open(os.path.join(self.hparams.output_folder, "pretrain_summary.json"), "w") as f:
                json.dump(self.summary(), f, indent=1)

    def finish(self) -> None:
        """After ``fit``: the final summary, also as ``pretrain_done.json``, the mark of a run
        that ended (its budget or epochs spent) rather than one interrupted after a validation."""
        self.export()
        if if_main_process():
            with open(os.path.join(self.hparams.output_folder, "pretrain_done.json"), "w") as f:
                json.dump(self.summary(), f, indent=1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every rank leaves together, so none exits while gloo still talks to it.
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()

    def summary(self) -> dict:
        clock = self.clock
        rate = clock.audio_seconds / max(clock.train_seconds, 1e-9)
        flops = self.flops_per_audio_second
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return {
            "train_seconds": round(clock.train_seconds, 2),
            "budget_seconds": clock.budget_seconds,
            "optimizer_steps": clock.steps,
            "audio_hours": round(clock.audio_seconds / 3600, 4),
            "audio_s_per_s": round(rate, 2),
            "flops_per_audio_second": flops,
            "achieved_gflop_per_s": None if flops is None else round(flops * rate / 1e9, 3),
            "peak_memory_mib": round(peak_memory_mib(self.device), 1),
            "peak_memory_kind": "cuda allocated" if str(self.device).startswith("cuda") else "process RSS",
            **self.warmup.report(),
            "compiled": bool(self.compile),
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "world_size": world,
            "precision": self.precision,
            "machine": platform.machine(),
            "snapshots": [f"encoder_at_{s:g}s.ckpt" for s in clock.snapshots_taken],
        }
