"""Convolutional front-end for CTC from scratch: SpeechBrain's ``ConvolutionFrontEnd`` (x4).

Two strided 3x3 convolution blocks over (time x mel) subsample the filterbanks four times
(40 ms per token, as 4-frame patches do), then a linear layer maps the flattened channels to
``d_model``: the front-end of SpeechBrain's conformer CTC recipes and ESPnet's
``Conv2dSubsampling``. It has the call of :class:`~speechpos.speech.patches.FramePatchEmbedding`
(features and relative lengths in, tokens and token counts out), so the same encoder body runs
behind either front-end. Its zero padding at the utterance edges tells tokens where the edges
are (a position leak, measured by ``tools/studies/measure_leak.py``): it is for CTC, not for
position-prediction pretraining.

Example
-------
>>> import torch
>>> front = ConvFrontEnd(n_mels=80, d_model=32)
>>> tokens, lengths = front(torch.randn(2, 103, 80), torch.tensor([1.0, 0.5]))
>>> tokens.shape, lengths.tolist()
(torch.Size([2, 26, 32]), [26, 13])
"""

from __future__ import annotations

import torch
from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
from torch import nn

FRONTENDS = ("patch", "conv")


class ConvFrontEnd(nn.Module):
    """(B, F, n_mels) filterbanks -> (B, ceil(F / 4), d_model) tokens and token lengths.

    Arguments
    ---------
    n_mels : int
        Filterbank channels per frame.
    d_model : int
        Token size.
    channels : tuple of int
        Output channels of the two blocks (SpeechBrain's conformer recipes: 64, 32).
    dropout : float
        Dropout inside the convolution blocks.
    """

    subsampling = 4

    def __init__(self, n_mels: int, d_model: int, channels=(64, 32), dropout: float = 0.1):
        super().__init__()
        self.n_mels = n_mels
        self.conv = ConvolutionFrontEnd(
            input_shape=(None, None, n_mels),
            num_blocks=2,
            num_layers_per_block=1,
            out_channels=list(channels),
            kernel_sizes=[3, 3],
            strides=[2, 2],
            residuals=[False, False],
            dropout=dropout,
        )
        flat = channels[-1] * _ceil_div(_ceil_div(n_mels, 2), 2)
        self.proj = nn.Linear(flat, d_model)

    def forward(self, feats: torch.Tensor, rel_lengths: torch.Tensor):
        """Returns (tokens, lengths): (B, T, d_model) and (B,) valid tokens per example."""
        frames, mels = feats.shape[1], feats.shape[2]
        if mels != self.n_mels:
            raise ValueError(f"expected {self.n_mels} filterbank channels, got {mels}")
        if frames < self.subsampling:
            raise ValueError(
                f"input of {frames} frames is shorter than one token ({self.subsampling} frames)"
            )
        out = self.conv(feats)  # (B, T', mels', C)
        tokens = self.proj(out.reshape(out.shape[0], out.shape[1], -1))
        valid = torch.round(rel_lengths.float().to(feats.device) * frames).long()
        lengths = torch.clamp(_ceil_div(_ceil_div(valid, 2), 2), max=tokens.shape[1])
        return tokens, lengths


def _ceil_div(a, b):
    return -(-a // b)
