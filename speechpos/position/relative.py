"""Relative position targets: how far, and which way, a token sits from a reference token.

An absolute index on a random crop of speech can only be reached by chaining a token to its
neighbours over the whole crop. A relative target is local: each target token is paired with
a random *context* token no more than ``max_offset`` positions away, and a head classifies
the signed offset ``position(target) - position(reference)`` into ``2 * max_offset + 1``
classes (class ``offset + max_offset``). The encoder still sees no position at all; the head
sees the two tokens' encodings. Chance is that of a guess drawn from the offsets' own
distribution (:class:`~speechpos.position.metrics.PositionStats` with ``chance="prior"``).

Example
-------
>>> import torch
>>> positions = torch.tensor([[0, 5, 2, 3]])            # slots 0-1 context, 2-3 targets
>>> is_context = torch.tensor([[True, True, False, False]])
>>> ref, cls, ok = reference_pairs(positions, is_context, ~is_context, max_offset=2,
...                                generator=torch.Generator().manual_seed(0))
>>> ok.tolist(), (cls[ok] - 2).tolist()                  # offsets from the chosen references
([[False, False, True, True]], [2, -2])
>>> head = RelativePositionHead(d_model=8, max_offset=2)
>>> head(torch.randn(1, 4, 8), ref).shape
torch.Size([1, 4, 5])
"""

from __future__ import annotations

import torch
from torch import nn

from speechpos.position.encoder import gather_tokens


def reference_pairs(
    positions: torch.Tensor,
    is_context: torch.Tensor,
    queries: torch.Tensor,
    max_offset: int,
    generator: torch.Generator | None = None,
):
    """Pair each query slot with a random context slot within ``max_offset`` positions.

    Arguments
    ---------
    positions : torch.Tensor
        (B, N) position of each slot.
    is_context : torch.Tensor
        (B, N) slots that are context (the possible references).
    queries : torch.Tensor
        (B, N) slots that need a reference.
    max_offset : int
        Largest distance between a token and its reference.
    generator : torch.Generator, optional
        Source of randomness.

    Returns
    -------
    (reference slot (B, N), offset class (B, N) in [0, 2 * max_offset], has_reference (B, N));
    a query with no context token within reach has no reference and must carry no loss.
    """
    if max_offset < 1:
        raise ValueError(f"max_offset must be >= 1, got {max_offset}")
    offset = positions[:, :, None] - positions[:, None, :]  # (B, query, reference)
    possible = (offset.abs() <= max_offset) & (offset != 0) & is_context[:, None, :] & queries[:, :, None]
    score = torch.rand(possible.shape, generator=generator).to(positions.device)
    score = score.masked_fill(~possible, float("inf"))
    reference = score.argmin(-1)
    has_reference = possible.any(-1)
    chosen = torch.gather(offset, 2, reference.unsqueeze(-1)).squeeze(-1)
    classes = (chosen + max_offset).clamp(0, 2 * max_offset).masked_fill(~has_reference, max_offset)
    return reference, classes, has_reference


class RelativePositionHead(nn.Module):
    """Classifies a token's signed offset from its reference: a linear layer on
    ``[h_token, h_reference, h_token * h_reference]``.

    Arguments
    ---------
    d_model : int
        Size of the encodings.
    max_offset : int
        Offsets -max_offset..max_offset are the classes.
    """

    def __init__(self, d_model: int, max_offset: int):
        super().__init__()
        if max_offset < 1:
            raise ValueError(f"max_offset must be >= 1, got {max_offset}")
        self.max_offset = max_offset
        self.proj = nn.Linear(3 * d_model, 2 * max_offset + 1)

    @property
    def num_classes(self) -> int:
        return 2 * self.max_offset + 1

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B, N, D) encodings and (B, N) reference slots -> (B, N, 2 * max_offset + 1) logits."""
        ref = gather_tokens(x, reference)
        return self.proj(torch.cat([x, ref, x * ref], dim=-1))
