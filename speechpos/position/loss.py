"""Position-prediction loss: cross-entropy against each token's true position.

Options, each a knob of :class:`PositionLoss`:

- which tokens carry loss: ``"all"`` valid tokens, only the ``"excluded"`` ones (not in the
  attention context) or only the ``"context"`` ones;
- position smoothing (DropPos): soft targets ``q(p) ∝ exp(-d(p, true)² / σ²)`` over the
  positions the example can have, rows summing to one, with σ following a
  :class:`SigmaSchedule` over training (σ = 0 is the one-hot target);
- per-token weights (DropPos' attentive reconstruction, :func:`attentive_token_weights`).

Example
-------
>>> import torch
>>> from speechpos.position.context import sample_context
>>> logits = torch.randn(2, 5, 5)
>>> lengths = torch.tensor([5, 3])
>>> ctx = sample_context(lengths, 0.4)
>>> loss = PositionLoss(loss_on="excluded", sigma=SigmaSchedule(1.0, 0.0))
>>> float(loss(logits, lengths, ctx, progress=0.5)) > 0
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from speechpos.position.context import Context, valid_mask
from speechpos.position.layout import PositionLayout

LOSS_TOKENS = ("all", "excluded", "context")


def smoothed_targets(
    true: torch.Tensor,
    lengths: torch.Tensor,
    num_positions: int,
    sigma: float,
    layout: PositionLayout | None = None,
) -> torch.Tensor:
    """Soft position targets, (B, T) true positions -> (B, T, P) distributions.

    ``q(p) ∝ exp(-d(p, true)² / σ²)`` over the positions ``p < length`` of each example,
    zero elsewhere, normalised to sum to one; ``sigma == 0`` gives one-hot targets.

    >>> q = smoothed_targets(torch.tensor([[2]]), torch.tensor([5]), 5, sigma=1.0)
    >>> [round(v, 3) for v in q[0, 0].tolist()]
    [0.01, 0.208, 0.564, 0.208, 0.01]
    """
    layout = layout or PositionLayout()
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    possible = valid_mask(lengths.to(true.device), num_positions)[:, None, :]
    if sigma == 0:
        return F.one_hot(true, num_positions).float() * possible
    dist = layout.distances_to_all(true, num_positions)
    logq = (-(dist**2) / sigma**2).masked_fill(~possible, float("-inf"))
    return torch.softmax(logq, dim=-1)


class SigmaSchedule:
    """Width of the position smoothing, linear from ``start`` to ``end`` over training.

    DropPos decays σ from 1 to 0 and recomputes it each epoch; call it with the fraction of
    training done (e.g. ``(epoch - 1) / number_of_epochs``).

    >>> s = SigmaSchedule(1.0, 0.0)
    >>> s(0.0), s(0.5), s(1.0)
    (1.0, 0.5, 0.0)
    """

    def __init__(self, start: float = 1.0, end: float = 0.0):
        if start < 0 or end < 0:
            raise ValueError(f"sigma must be >= 0, got start={start}, end={end}")
        self.start = start
        self.end = end

    def __call__(self, progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        return self.start + (self.end - self.start) * progress

    def __repr__(self) -> str:
        return f"SigmaSchedule(start={self.start}, end={self.end})"


def loss_token_mask(
    loss_on: str, lengths: torch.Tensor, max_len: int, context: Context | None = None
) -> torch.Tensor:
    """(B, T) True on the tokens that carry loss.

    >>> from speechpos.position.context import context_from_mask
    >>> ctx = context_from_mask(torch.tensor([[True, False, False]]))
    >>> loss_token_mask("excluded", torch.tensor([2]), 3, ctx).tolist()
    [[False, True, False]]
    """
    if loss_on not in LOSS_TOKENS:
        raise ValueError(f"loss_on must be one of {LOSS_TOKENS}, got {loss_on!r}")
    valid = valid_mask(lengths, max_len)
    if loss_on == "all" or context is None:
        return valid
    if loss_on == "excluded":
        return valid & ~context.mask
    return valid & context.mask


def attentive_token_weights(
    summary: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """DropPos' attentive reconstruction weights: softmax over tokens of cos(summary, token)/τ.

    ``summary`` (B, D) is a global representation of the input (ViT's CLS token, or the mean
    of the tokens), ``tokens`` (B, T, D) its tokens, both from a no-grad pass over the full
    input. Tokens that matter to the global representation weigh more; padding weighs zero.

    >>> w = attentive_token_weights(torch.ones(1, 4), torch.randn(1, 3, 4), torch.tensor([[1, 1, 0]]).bool())
    >>> round(float(w.sum()), 5), float(w[0, 2])
    (1.0, 0.0)
    """
    cos = F.cosine_similarity(summary.unsqueeze(1), tokens, dim=-1) / temperature
    return torch.softmax(cos.masked_fill(~valid, float("-inf")), dim=-1).detach()


def position_loss(
    logits: torch.Tensor,
    lengths: torch.Tensor,
    token_mask: torch.Tensor,
    sigma: float = 0.0,
    layout: PositionLayout | None = None,
    weights: torch.Tensor | None = None,
    true: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy over the tokens of ``token_mask``.

    Arguments
    ---------
    logits : torch.Tensor
        (B, T, P) head output (impossible positions already masked).
    lengths : torch.Tensor
        (B,) valid tokens per example.
    token_mask : torch.Tensor
        (B, T) tokens that carry loss.
    sigma : float
        Width of the position smoothing; 0 for one-hot targets.
    layout : PositionLayout, optional
        Geometry of positions for smoothing (default 1-D).
    weights : torch.Tensor, optional
        (B, T) per-token weights; the loss is sum(w * ce) / sum(w) over the selected tokens.
    true : torch.Tensor, optional
        (B, T) true positions (default: token t sits at position t).
    """
    batch, length, num = logits.shape
    if true is None:
        true = torch.arange(length, device=logits.device).expand(batch, length)
    logp = torch.log_softmax(logits.float(), dim=-1)
    if sigma == 0:
        ce = -torch.gather(logp, 2, true.clamp(max=num - 1).unsqueeze(-1)).squeeze(-1)
    else:
        q = smoothed_targets(true, lengths, num, sigma, layout)
        ce = -torch.where(q > 0, q * logp, torch.zeros_like(logp)).sum(-1)
    w = token_mask.float() if weights is None else weights.float() * token_mask
    return (ce * w).sum() / w.sum().clamp(min=1e-8)


class PositionLoss:
    """The MP3/DropPos position loss with its options, as one object for hparams files.

    Arguments
    ---------
    loss_on : str
        ``"all"``, ``"excluded"`` or ``"context"``: which tokens carry loss.
    sigma : SigmaSchedule or float
        Position smoothing width (a schedule over training progress, or a constant).
    layout : PositionLayout, optional
        1-D (default) or 2-D grid geometry.
    """

    def __init__(
        self,
        loss_on: str = "all",
        sigma: SigmaSchedule | float = 0.0,
        layout: PositionLayout | None = None,
    ):
        if loss_on not in LOSS_TOKENS:
            raise ValueError(f"loss_on must be one of {LOSS_TOKENS}, got {loss_on!r}")
        self.loss_on = loss_on
        self.sigma = sigma if isinstance(sigma, SigmaSchedule) else SigmaSchedule(sigma, sigma)
        self.layout = layout or PositionLayout()

    def token_mask(self, lengths: torch.Tensor, max_len: int, context: Context | None) -> torch.Tensor:
        """(B, T) tokens that carry loss."""
        return loss_token_mask(self.loss_on, lengths, max_len, context)

    def __call__(
        self,
        logits: torch.Tensor,
        lengths: torch.Tensor,
        context: Context | None = None,
        progress: float = 0.0,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of (B, T, P) logits; ``progress`` in [0, 1] sets the smoothing width."""
        mask = self.token_mask(lengths.to(logits.device), logits.shape[1], context)
        return position_loss(
            logits, lengths.to(logits.device), mask, self.sigma(progress), self.layout, weights
        )

    def of_output(self, output, progress: float = 0.0, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of a :class:`~speechpos.position.pretext.PretextOutput` (its own mask and true
        classes; ``loss_on`` was applied by the pretext)."""
        return position_loss(
            output.logits, output.num_classes, output.mask, self.sigma(progress), self.layout,
            weights, true=output.true,
        )
