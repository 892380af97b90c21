"""Convolutional front-end for CTC from scratch: SpeechBrain's ``ConvolutionFrontEnd`` (x4).

Two strided 3x3 convolution blocks over (time x mel) subsample the filterbanks four times
(40 ms per token, as 4-frame patches do), then a linear layer maps the flattened channels to
``d_model``: the front-end of SpeechBrain's conformer CTC recipes and ESPnet's
``Conv2dSubsampling``. It has the call of :class:`~speechpos.speech.patches.FramePatchEmbedding`
(features and relative lengths in, tokens and token counts out), so the same encoder body runs
behind either front-end. Its zero padding at the utterance edges tells tokens where the edges
are (a position leak, measured by ``tools/studies/measure_leak.py``): it is for CTC, not for
position-prediction pretraining. Padded frames of a batch are zeroed before each convolution, so
a file's tokens are the same alone and in a batch.

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
        valid = torch.round(rel_lengths.float().to(feats.device) * frames).long()
        out = feats
        for block in self.conv.values():
            # The padded frames next to each file's end hold what SpeechBrain's reflect padding
            # gives the file alone: its last tokens do not depend on what pads the batch.
            out = _pad_as_alone(out, valid, block.convs.conv_0.kernel_size[0] // 2)
            out = block(out)  # (B, T', mels', C)
            valid = _ceil_div(valid, 2)
        tokens = self.proj(out.reshape(out.shape[0], out.shape[1], -1))
        return tokens, torch.clamp(valid, max=tokens.shape[1])


def _pad_as_alone(x: torch.Tensor, valid: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` (B, T, ...) with each example's ``width`` steps after its ``valid`` ones reflected
    (``x[v + i] = x[v - 2 - i]``, as ``F.pad(mode="reflect")`` pads a file alone), the rest zero.

    >>> _pad_as_alone(torch.arange(1.0, 7.0)[None], torch.tensor([4]), 1).tolist()
    [[1.0, 2.0, 3.0, 4.0, 3.0, 0.0]]
    """
    pad = torch.arange(x.shape[1], device=x.device)[None, :] >= valid[:, None]  # (B, T)
    out = x.masked_fill(pad.view(*pad.shape, *([1] * (x.dim() - 2))), 0.0)
    for i in range(width):
        target, source = valid + i, valid - 2 - i
        rows = torch.nonzero((target < x.shape[1]) & (source >= 0)).flatten()
        out[rows, target[rows]] = x[rows, source[rows]]
    return out


def _ceil_div(a, b):
    return -(-a // b)
