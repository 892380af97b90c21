"""The position head: a linear layer from each token's encoding to logits over positions.

Logits of positions an example cannot have (at or past its number of valid tokens) are
masked to the dtype's lowest value, so no probability goes to them. Only the first ``P``
rows of the projection are used, P being the longest example of the batch: positions past
every example's length are impossible, and computing them would be wasted work.

Example
-------
>>> import torch
>>> head = PositionHead(d_model=16, num_positions=50)
>>> logits = head(torch.randn(2, 6, 16), lengths=torch.tensor([6, 4]))
>>> logits.shape
torch.Size([2, 6, 6])
>>> bool((logits[1, :, 4:] == torch.finfo(logits.dtype).min).all())
True
"""

from __future__ import annotations

import torch
from torch import nn

from speechpos.position.context import valid_mask


class PositionHead(nn.Module):
    """Linear classifier of each token's position among ``num_positions``.

    Arguments
    ---------
    d_model : int
        Size of the encoder output.
    num_positions : int
        Largest number of positions (tokens) an example can have.
    """

    def __init__(self, d_model: int, num_positions: int):
        super().__init__()
        self.num_positions = num_positions
        self.proj = nn.Linear(d_model, num_positions)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) encodings -> (B, T, P) logits, P = max(lengths) (or T)."""
        num = x.shape[1] if lengths is None else int(lengths.max())
        if num > self.num_positions:
            raise ValueError(
                f"an example has {num} tokens but the position head knows only "
                f"{self.num_positions} positions; raise num_positions or crop the input"
            )
        logits = nn.functional.linear(x, self.proj.weight[:num], self.proj.bias[:num])
        if lengths is not None:
            impossible = ~valid_mask(lengths.to(x.device), num)[:, None, :]
            logits = logits.masked_fill(impossible, torch.finfo(logits.dtype).min)
        return logits
