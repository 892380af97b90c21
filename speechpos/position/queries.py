"""Which tokens enter the encoder at all: the context plus a sample of the targets (MAE-style).

In MP3 every token is a query but only context tokens are keys/values, so a target token's
output depends on the context and on itself, never on the other targets. Running only the
context and a sampled subset of the targets through the encoder therefore gives *exactly*
the outputs those tokens would get in the full run (for encoders whose layers mix tokens only
through attention: a transformer, or a conformer with its convolution off), at a fraction of
the cost; the loss goes on the subset.

:func:`select_queries` returns the original positions of the chosen tokens (context first,
then the sampled targets, each in ascending order) and the context expressed over that shorter
sequence.

Example
-------
>>> import torch
>>> from speechpos.position.context import context_from_mask
>>> ctx = context_from_mask(torch.tensor([[1, 0, 0, 1, 0, 0, 0, 0]]).bool())
>>> q = select_queries(torch.tensor([8]), ctx, target_ratio=0.5, generator=torch.Generator().manual_seed(0))
>>> q.lengths.tolist(), q.index[0, :2].tolist(), q.context.mask.tolist()
([5], [0, 3], [[True, True, False, False, False]])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speechpos.position.context import Context, context_from_mask, valid_mask


@dataclass
class QuerySet:
    """The tokens that enter the encoder.

    Attributes
    ----------
    index : torch.LongTensor
        (B, N) original position of each slot (0 on padding slots).
    lengths : torch.LongTensor
        (B,) slots used by each example (its context count + its sampled targets).
    context : Context
        The context over the N slots (the first ``context.counts`` slots of each example).
    """

    index: torch.Tensor
    lengths: torch.Tensor
    context: Context


def select_queries(
    lengths: torch.Tensor,
    context: Context,
    target_ratio: float,
    candidates: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> QuerySet:
    """Keep the context and ``round(target_ratio * n)`` of each example's ``n`` candidate
    targets (default: its valid non-context tokens; at least one where there is one).

    Arguments
    ---------
    lengths : torch.Tensor
        (B,) valid tokens per example.
    context : Context
        The context tokens (always kept).
    target_ratio : float
        Fraction of the candidates kept, in (0, 1].
    candidates : torch.Tensor, optional
        (B, T) tokens that may be sampled as targets (context tokens among them are ignored).
    generator : torch.Generator, optional
        Source of randomness.
    """
    if not 0.0 < target_ratio <= 1.0:
        raise ValueError(f"target_ratio must be in (0, 1], got {target_ratio}")
    ctx_mask = context.mask
    batch, length = ctx_mask.shape
    device = ctx_mask.device
    valid = valid_mask(lengths.to(device), length)
    pool = valid & ~ctx_mask
    if candidates is not None:
        pool = pool & candidates.to(device)
    available = pool.sum(1)
    wanted = torch.round(available.double() * target_ratio).long()
    wanted = torch.minimum(wanted.clamp(min=1), available)
    score = torch.rand(batch, length, generator=generator).to(device).masked_fill(~pool, float("inf"))
    rank = torch.argsort(torch.argsort(score, dim=1), dim=1)
    chosen = pool & (rank < wanted[:, None])
    # Sort key: context (0) before chosen targets (1) before the rest (2), then by position.
    position = torch.arange(length, device=device)
    group = torch.where(ctx_mask, 0, torch.where(chosen, 1, 2))
    order = torch.argsort(group * length + position[None, :], dim=1)
    counts = context.counts + wanted
    width = int(counts.max())
    slots = valid_mask(counts, width)
    index = order[:, :width].masked_fill(~slots, 0)
    in_context = torch.arange(width, device=device)[None, :] < context.counts[:, None]
    return QuerySet(index, counts, context_from_mask(in_context))
