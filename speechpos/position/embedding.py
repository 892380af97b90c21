"""Learnable absolute position embeddings, zero-initialised, added at fine-tune time.

After position-prediction pretraining the encoder has never seen position information.
Adding embeddings that start at zero leaves the pretrained function unchanged at the first
fine-tuning step; training then learns how much position to use.

Example
-------
>>> import torch
>>> pe = PositionEmbedding(num_positions=100, d_model=8)
>>> x = torch.randn(2, 10, 8)
>>> torch.equal(pe(x), x)
True
"""

from __future__ import annotations

import torch
from torch import nn


class PositionEmbedding(nn.Module):
    """x + E[:T], with E a (num_positions, d_model) parameter initialised to zero.

    Arguments
    ---------
    num_positions : int
        Longest sequence (in tokens) the embedding covers.
    d_model : int
        Embedding size.
    """

    def __init__(self, num_positions: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_positions, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the embeddings of positions 0..T-1 to (B, T, D) tokens."""
        length = x.shape[1]
        if length > self.weight.shape[0]:
            raise ValueError(
                f"sequence of {length} tokens is longer than the {self.weight.shape[0]} "
                "positions of the position embedding"
            )
        return x + self.weight[:length]
