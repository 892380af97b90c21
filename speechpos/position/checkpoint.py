"""Loading a pretrained encoder (speech or vision) into a fine-tuning model, strictly.

SpeechBrain's ``Pretrainer`` loads non-strictly and only logs missing keys, so an encoder of
another architecture would load partially without a word. :func:`load_encoder_state` checks
key overlap and shapes itself and fails with a message naming what differs. Only the position
embedding may be absent from the checkpoint (pretraining has none; fine-tuning adds it
zero-initialised).

Example
-------
>>> import tempfile, torch
>>> from speechpos.vision.vit import VisionTransformer
>>> small = dict(image_size=16, patch_size=4, num_layers=1, nhead=2, d_ffn=32)
>>> path = tempfile.mkdtemp() + "/vit.ckpt"
>>> torch.save(VisionTransformer(d_model=16, **small).state_dict(), path)
>>> finetune = VisionTransformer(d_model=16, position_embedding=True, **small)
>>> load_encoder_state(finetune, path, name="vit").name
'vit.ckpt'
>>> load_encoder_state(VisionTransformer(d_model=8, **small), path, name="vit")
Traceback (most recent call last):
...
speechpos.position.checkpoint.CheckpointMismatchError: .../vit.ckpt was saved from a different architecture: ... keys of another shape (e.g. patch_embedding.proj.weight (16, 3, 4, 4) in the checkpoint vs (8, 3, 4, 4) in the model...
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from speechbrain.utils.checkpoints import Checkpointer
from torch import nn

logger = logging.getLogger(__name__)

OPTIONAL_PREFIXES = ("position_embedding.",)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


def find_encoder_checkpoint(path: str | Path, name: str = "encoder") -> Path:
    """The encoder file ``<name>.ckpt`` given that file, a ``CKPT+...`` folder, a checkpoints
    folder (its most recent checkpoint) or an experiment folder holding ``save/``."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / f"{name}.ckpt").is_file():
        return path / f"{name}.ckpt"
    if (path / "save").is_dir():
        path = path / "save"
    if path.is_dir():
        found = Checkpointer(path).find_checkpoint()
        if found is not None and name in found.paramfiles:
            return Path(found.paramfiles[name])
    raise FileNotFoundError(f"no pretrained encoder '{name}.ckpt' found at {path}")


def state_mismatches(own: dict, state: dict, optional: tuple[str, ...] = OPTIONAL_PREFIXES) -> list[str]:
    """What keeps ``state`` from loading into a module whose state dict is ``own``: one phrase per
    kind of mismatch (keys missing, unexpected, of another shape); empty when it fits. Keys under
    an ``optional`` prefix may be absent on either side.

    >>> import torch
    >>> state_mismatches({"w": torch.zeros(2)}, {"w": torch.zeros(3), "b": torch.zeros(1)})
    ['1 keys unexpected (e.g. b)', '1 keys of another shape (e.g. w (3,) in the checkpoint vs (2,) in the model)']
    """
    missing = [k for k in own if k not in state and not k.startswith(optional)]
    unexpected = [k for k in state if k not in own and not k.startswith(optional)]
    wrong = [
        f"{k} {tuple(state[k].shape)} in the checkpoint vs {tuple(own[k].shape)} in the model"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    parts = []
    for what, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("of another shape", wrong),
    ):
        if keys:
            parts.append(f"{len(keys)} keys {what} (e.g. {'; '.join(keys[:3])})")
    return parts


def load_encoder_state(model: nn.Module, path: str | Path, name: str = "encoder") -> Path:
    """Load a pretrained encoder into ``model`` after checking every key and shape.

    Returns the file loaded. Raises :class:`CheckpointMismatchError` when the checkpoint is
    not a state dict of the same architecture.
    """
    path = find_encoder_checkpoint(path, name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise CheckpointMismatchError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{path}: expected a state dict, got {type(state).__name__}")
    own = model.state_dict()
    problems = state_mismatches(own, state)
    if problems:
        raise CheckpointMismatchError(
            f"{path} was saved from a different architecture: " + "; ".join(problems)
        )
    skipped = sorted(k for k in state if k not in own)
    if skipped:
        logger.warning("%s: model has no position embedding; not loading %s", path, skipped)
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    kept = sorted(k for k in own if k not in state)
    logger.info(
        "loaded %d tensors from %s; kept initial values of %s",
        len(state) - len(skipped),
        path,
        kept,
    )
    return path
