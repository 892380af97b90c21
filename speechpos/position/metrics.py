"""Position-prediction metrics: top-1 accuracy and mean position error, with chance levels.

:class:`PositionStats` accumulates over an epoch, in SpeechBrain's ``MetricStats`` manner
(``append`` per batch, ``summarize`` at the end), and keeps the (true, predicted) pairs for a
confusion heatmap. Chance levels are those of a guess uniform over the positions each
example can have, so a variable-length corpus has an honest baseline; with ``chance="prior"``
(relative targets, whose classes are not equally likely) they are those of a guess drawn
from the distribution of the true classes scored.

Example
-------
>>> import torch
>>> logits = torch.tensor([[[5., 0., 0.], [0., 0., 5.], [0., 0., 5.]]])
>>> stats = PositionStats()
>>> stats.append(logits, torch.tensor([3]))
>>> s = stats.summarize()
>>> round(s["accuracy"], 3), round(s["position_error"], 3), round(s["chance_accuracy"], 3)
(0.667, 0.333, 0.333)
"""

from __future__ import annotations

import numpy as np
import torch

from speechpos.position.context import valid_mask
from speechpos.position.layout import PositionLayout


def _true_positions(logits: torch.Tensor) -> torch.Tensor:
    batch, length = logits.shape[:2]
    return torch.arange(length, device=logits.device).expand(batch, length)


def position_accuracy(logits: torch.Tensor, mask: torch.Tensor, true: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of the tokens of ``mask`` whose arg-max position is the true one.

    >>> position_accuracy(torch.eye(3)[None], torch.ones(1, 3, dtype=torch.bool)).item()
    1.0
    """
    true = _true_positions(logits) if true is None else true
    hit = (logits.argmax(-1) == true) & mask
    return hit.sum().float() / mask.sum().clamp(min=1)


def position_error(
    logits: torch.Tensor,
    mask: torch.Tensor,
    layout: PositionLayout | None = None,
    true: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean distance (in positions; Euclidean on a grid) between predicted and true position.

    >>> position_error(torch.eye(3).flip(1)[None], torch.ones(1, 3, dtype=torch.bool)).item()
    1.3333333730697632
    """
    layout = layout or PositionLayout()
    true = _true_positions(logits) if true is None else true
    dist = layout.distance(logits.argmax(-1), true)
    return (dist * mask).sum() / mask.sum().clamp(min=1)


class PositionStats:
    """Accumulates position accuracy, error and their chance levels over many batches.

    Arguments
    ---------
    layout : PositionLayout, optional
        Geometry for the error (default 1-D).
    keep_pairs : int
        Keep up to this many (true, predicted) pairs for :meth:`confusion`.
    chance : str
        "uniform": a guess uniform over each example's possible positions; "prior": a guess
        drawn from the distribution of the true classes (1-D layout only).
    """

    def __init__(self, layout: PositionLayout | None = None, keep_pairs: int = 200_000, chance: str = "uniform"):
        if chance not in ("uniform", "prior"):
            raise ValueError(f"chance must be 'uniform' or 'prior', got {chance!r}")
        self.layout = layout or PositionLayout()
        self.keep_pairs = keep_pairs
        self.chance = chance
        self.clear()

    def clear(self) -> None:
        """Forget everything appended."""
        self.tokens = 0
        self.hits = 0.0
        self.error = 0.0
        self.chance_hits = 0.0
        self.chance_error = 0.0
        self.pairs: list[np.ndarray] = []
        self._kept = 0
        self.class_counts = np.zeros(0, dtype=np.int64)

    def append_output(self, output) -> None:
        """Add a :class:`~speechpos.position.pretext.PretextOutput`."""
        self.append(output.logits, output.num_classes, output.mask, output.true)

    @torch.no_grad()
    def append(
        self,
        logits: torch.Tensor,
        lengths: torch.Tensor,
        mask: torch.Tensor | None = None,
        true: torch.Tensor | None = None,
    ) -> None:
        """Add a batch of (B, T, P) logits; ``mask`` (B, T) picks the tokens scored
        (default: all valid tokens); ``true`` (B, T) their true classes (default: token t is
        at position t; then ``lengths`` also bounds the tokens, else only the classes)."""
        lengths = lengths.to(logits.device)
        batch, length, num = logits.shape
        if true is None:
            valid = valid_mask(lengths, length)
            mask = valid if mask is None else (mask & valid)
            true = _true_positions(logits)
        elif mask is None:
            raise ValueError("with true classes given, give the mask of the tokens scored too")
        pred = logits.argmax(-1)
        n = int(mask.sum())
        self.tokens += n
        self.hits += float(((pred == true) & mask).sum())
        self.error += float((self.layout.distance(pred, true) * mask).sum())
        # Chance: a guess uniform over the example's possible positions.
        per_example = lengths.clamp(min=1).float()
        self.chance_hits += float((mask.sum(1) / per_example).sum())
        dist_all = self.layout.distances_to_all(true, num)
        possible = valid_mask(lengths, num)[:, None, :]
        mean_dist = (dist_all * possible).sum(-1) / per_example[:, None]
        self.chance_error += float((mean_dist * mask).sum())
        counts = np.bincount(true[mask].cpu().numpy(), minlength=num)
        if len(counts) > len(self.class_counts):
            counts[: len(self.class_counts)] += self.class_counts
            self.class_counts = counts
        else:
            self.class_counts[: len(counts)] += counts
        if self._kept < self.keep_pairs:
            pair = torch.stack([true[mask], pred[mask]], 1).cpu().numpy()
            self.pairs.append(pair[: self.keep_pairs - self._kept])
            self._kept += len(self.pairs[-1])

    def all_reduce(self) -> None:
        """Sum the counts over the processes of a torch.distributed job (DDP), so every rank
        reports the whole epoch; a no-op outside one. The confusion pairs stay per rank."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        counts = torch.tensor(
            [self.tokens, self.hits, self.error, self.chance_hits, self.chance_error],
            dtype=torch.float64,
        )
        dist.all_reduce(counts)
        self.tokens = int(counts[0])
        self.hits, self.error, self.chance_hits, self.chance_error = counts[1:].tolist()
        if self.chance == "prior":  # the prior is the whole job's class distribution
            width = torch.tensor([len(self.class_counts)])
            dist.all_reduce(width, op=dist.ReduceOp.MAX)
            classes = torch.zeros(int(width), dtype=torch.int64)
            classes[: len(self.class_counts)] = torch.from_numpy(self.class_counts)
            dist.all_reduce(classes)
            self.class_counts = classes.numpy()

    def summarize(self, field: str | None = None):
        """Dict with ``accuracy``, ``position_error``, ``chance_accuracy``,
        ``chance_position_error`` and ``tokens``; or one of them if ``field`` is given."""
        n = max(self.tokens, 1)
        if self.chance == "prior":
            self._chance_from_prior()
        out = {
            "accuracy": self.hits / n,
            "position_error": self.error / n,
            "chance_accuracy": self.chance_hits / n,
            "chance_position_error": self.chance_error / n,
            "tokens": self.tokens,
        }
        return out if field is None else out[field]

    def _chance_from_prior(self) -> None:
        p = self.class_counts / max(self.class_counts.sum(), 1)
        classes = np.arange(len(p))
        self.chance_hits = float((p**2).sum()) * self.tokens
        self.chance_error = float(p @ np.abs(classes[:, None] - classes[None, :]) @ p) * self.tokens

    def confusion(self, num_positions: int | None = None) -> np.ndarray:
        """(P, P) counts of tokens at true position i predicted at position j."""
        pairs = np.concatenate(self.pairs) if self.pairs else np.zeros((0, 2), dtype=np.int64)
        if num_positions is None:
            num_positions = int(pairs.max()) + 1 if len(pairs) else 1
        keep = (pairs < num_positions).all(1)
        matrix = np.zeros((num_positions, num_positions), dtype=np.int64)
        np.add.at(matrix, (pairs[keep, 0], pairs[keep, 1]), 1)
        return matrix
