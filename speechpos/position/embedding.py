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


class SinusoidalPositionEmbedding(nn.Module):
    """x + fixed sin/cos encodings (SpeechBrain's ``PositionalEncoding``): a position signal
    with nothing to learn, for models trained from scratch.

    >>> pe = SinusoidalPositionEmbedding(8)
    >>> x = torch.zeros(1, 3, 8)
    >>> pe(x)[0, 0].tolist() == [0.0, 1.0] * 4     # position 0: sin 0, cos 0
    True
    """

    def __init__(self, d_model: int, max_len: int = 2500):
        super().__init__()
        from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding

        self.encoding = PositionalEncoding(d_model, max_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the encodings of positions 0..T-1 to (B, T, D) tokens."""
        if x.shape[1] > self.encoding.max_len:
            raise ValueError(
                f"sequence of {x.shape[1]} tokens is longer than the {self.encoding.max_len} "
                "positions of the sinusoidal encoding"
            )
        return x + self.encoding(x).to(x.dtype)


POSITION_SIGNALS = ("learned", "sinusoidal", "none")


def position_signal_name(value) -> str:
    """Normalise an hparams value: ``True`` is the zero-initialised learned embedding,
    ``False``/``None`` no position signal.

    >>> position_signal_name(True), position_signal_name(False), position_signal_name("sinusoidal")
    ('learned', 'none', 'sinusoidal')
    """
    if value is True:
        return "learned"
    if value is False or value is None:
        return "none"
    if value not in POSITION_SIGNALS:
        raise ValueError(f"position_embedding must be one of {POSITION_SIGNALS} (or True/False), got {value!r}")
    return value


def build_position_embedding(value, d_model: int, max_positions: int) -> nn.Module | None:
    """The module for an hparams ``position_embedding`` value (None for no position signal)."""
    kind = position_signal_name(value)
    if kind == "learned":
        return PositionEmbedding(max_positions, d_model)
    if kind == "sinusoidal":
        return SinusoidalPositionEmbedding(d_model, max(max_positions, 2500))
    return None
