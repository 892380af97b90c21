"""DropPos-style anchors: a few context tokens keep a position signal, the others do not.

A pretext with no position anywhere asks each token to place itself from content alone, which
on speech means chaining it to its neighbours across the whole sequence. Anchors give the
model reference points: a random fraction of the *context* tokens (the keys/values) gets a
fixed sinusoidal position signal added to its input, and the loss goes on the tokens without
one (:class:`~speechpos.position.pretext.PositionPretext` removes anchors from the loss), so
a token can be placed by finding the anchors it fits next to.

Example
-------
>>> import torch
>>> from speechpos.position.context import sample_context
>>> g = torch.Generator().manual_seed(0)
>>> ctx = sample_context(torch.tensor([20, 8]), 0.5, generator=g)
>>> anchors = sample_anchors(ctx, 0.2, generator=g)
>>> anchors.sum(1).tolist(), bool((anchors & ~ctx.mask).any())
([2, 1], False)
>>> signal = AnchorSignal(d_model=8, max_positions=20)
>>> x = torch.zeros(2, 20, 8)
>>> y = signal(x, anchors)
>>> bool((y[~anchors] == 0).all()), bool((y[anchors] != 0).any())
(True, True)
"""

from __future__ import annotations

import torch
from torch import nn

from speechpos.position.context import Context, _lowest_scores


def sample_anchors(context: Context, anchor_ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, T) True on the anchors: ``round(anchor_ratio * context count)`` random context tokens
    of each example (at least one when the ratio is positive); all False at ratio 0."""
    if not 0.0 <= anchor_ratio <= 1.0:
        raise ValueError(f"anchor_ratio must be in [0, 1], got {anchor_ratio}")
    mask = context.mask
    if anchor_ratio == 0.0:
        return torch.zeros_like(mask)
    counts = torch.round(context.counts.double() * anchor_ratio).long().clamp(min=1)
    score = torch.rand(mask.shape, generator=generator).to(mask.device)
    return _lowest_scores(score, mask, counts).mask


class AnchorSignal(nn.Module):
    """Adds SpeechBrain's fixed sinusoidal position encoding to the anchor tokens only.

    Arguments
    ---------
    d_model : int
        Token size.
    max_positions : int
        Largest position index + 1.
    """

    def __init__(self, d_model: int, max_positions: int):
        super().__init__()
        from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding

        table = PositionalEncoding(d_model, max_positions)(torch.zeros(1, max_positions, d_model))[0]
        self.register_buffer("table", table.clone(), persistent=False)

    def forward(self, tokens: torch.Tensor, anchors: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens`` (B, N, D) + the encoding of ``positions`` (B, N; default 0..N-1) where
        ``anchors`` (B, N) is True."""
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        if int(positions.max()) >= self.table.shape[0]:
            raise ValueError(
                f"position {int(positions.max())} is past the {self.table.shape[0]} positions of the anchor signal"
            )
        signal = self.table[positions] * anchors.unsqueeze(-1)
        return tokens + signal.to(tokens.dtype)
