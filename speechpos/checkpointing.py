"""SpeechBrain's ``Checkpointer``, with a failed save that leaves no half-written checkpoint.

SpeechBrain writes a checkpoint folder's ``CKPT.yaml`` before its files: a save that fails
midway (a full disk) left a folder that recovery takes for the newest checkpoint, and the run
could not resume from the previous one ("Weights only load failed"). Here the partial folder is
removed and the error says so; the recipes' hparams build this class.

Example
-------
>>> import errno, tempfile, torch
>>> from unittest import mock
>>> folder, model = tempfile.mkdtemp(), torch.nn.Linear(2, 2)
>>> _ = Checkpointer(folder, recoverables={"model": model}).save_checkpoint()
>>> def disk_full(obj, f, *args, **kwargs):
...     raise OSError(errno.ENOSPC, "No space left on device")
>>> with mock.patch("torch.save", disk_full):
...     Checkpointer(folder, recoverables={"model": model}).save_checkpoint()
Traceback (most recent call last):
OSError: [Errno 28] ...: writing a checkpoint failed (No space left on device); the partial checkpoint was removed, the previous ones are kept
>>> len(Checkpointer(folder).list_checkpoints())
1
"""

from __future__ import annotations

import logging
import shutil

from speechbrain.utils import checkpoints


class Checkpointer(checkpoints.Checkpointer):
    """``speechbrain.utils.checkpoints.Checkpointer``; see the module docstring."""

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):  # noqa: B006
        before = set(self.checkpoints_dir.glob("*")) if self.checkpoints_dir.is_dir() else set()
        try:
            return super().save_checkpoint(meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=verbosity)
        except OSError as err:
            for partial in set(self.checkpoints_dir.glob("*")) - before:
                shutil.rmtree(partial, ignore_errors=True)
            raise OSError(err.errno, f"{self.checkpoints_dir}: writing a checkpoint failed ({err.strerror or err}); "
                          "the partial checkpoint was removed, the previous ones are kept") from err
