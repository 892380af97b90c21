"""The recipes' per-step learning-rate schedule, sized from the epoch count and data size.

Example
-------
>>> from functools import partial
>>> from speechbrain.nnet.schedulers import LinearWarmupScheduler
>>> from speechbrain.utils.checkpoints import Checkpointer
>>> import tempfile
>>> hparams = {"lr_scheduler": partial(LinearWarmupScheduler, initial_value=1e-3),
...            "warmup_epochs": 1, "number_of_epochs": 4,
...            "checkpointer": Checkpointer(tempfile.mkdtemp())}
>>> sched = attach_scheduler(hparams, steps_per_epoch=10)
>>> sched.num_warmup_steps, sched.num_training_steps, "scheduler" in hparams["checkpointer"].recoverables
(10, 40, True)
"""

from __future__ import annotations


def attach_scheduler(hparams: dict, steps_per_epoch: int):
    """Build ``hparams["lr_scheduler"]`` (a partial taking the warm-up and total steps, e.g.
    SpeechBrain's ``LinearWarmupScheduler``) for ``warmup_epochs`` and ``number_of_epochs``,
    store it as ``hparams["scheduler"]`` and register it with the checkpointer, so a resumed
    run continues the schedule."""
    steps_per_epoch = max(steps_per_epoch, 1)
    scheduler = hparams["lr_scheduler"](
        num_warmup_steps=hparams["warmup_epochs"] * steps_per_epoch,
        num_training_steps=hparams["number_of_epochs"] * steps_per_epoch,
    )
    hparams["scheduler"] = scheduler
    hparams["checkpointer"].add_recoverable("scheduler", scheduler)
    return scheduler
