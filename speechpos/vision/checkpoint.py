"""Loading a pretrained ViT encoder strictly: the core loader, with the ViT's file name.

See :mod:`speechpos.position.checkpoint`, which speech uses too.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from speechpos.position import checkpoint as _core
from speechpos.position.checkpoint import CheckpointMismatchError

__all__ = ["CheckpointMismatchError", "find_encoder_checkpoint", "load_encoder_state"]


def find_encoder_checkpoint(path: str | Path) -> Path:
    """The ``vit.ckpt`` file of a file, checkpoint folder or run folder."""
    return _core.find_encoder_checkpoint(path, name="vit")


def load_encoder_state(model: nn.Module, path: str | Path) -> Path:
    """Load ``vit.ckpt`` (a file, a checkpoint folder or a run folder) into ``model``."""
    return _core.load_encoder_state(model, path, name="vit")
