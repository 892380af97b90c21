"""Speech tokens: non-overlapping patches of consecutive filterbank frames, linearly projected.

A patch of ``patch_frames`` frames of 10 ms (4 frames = 40 ms) is one token; a trailing
partial patch is dropped. The embedding holds no position information.

Example
-------
>>> import torch
>>> embed = FramePatchEmbedding(n_mels=80, patch_frames=4, d_model=32)
>>> tokens, lengths = embed(torch.randn(2, 103, 80), torch.tensor([1.0, 0.5]))
>>> tokens.shape, lengths.tolist()
(torch.Size([2, 25, 32]), [25, 13])
"""

from __future__ import annotations

import torch
from torch import nn


def feature_lengths(wav_lens: torch.Tensor, num_samples: int, num_frames: int, hop_length: int) -> torch.Tensor:
    """Relative lengths of the filterbank frames of a padded batch, from those of its waveforms.

    A centred STFT gives ``1 + samples // hop`` frames: a file alone has that many, so in a batch
    it must have as many, not ``round(wav_len * frames)``, which is one fewer for some lengths
    (a token fewer, a transcript changed by its batch-mates).

    >>> feature_lengths(torch.tensor([0.4, 1.0]), 40000, 251, 160) * 251
    tensor([101., 251.])
    """
    samples = torch.round(wav_lens.float() * num_samples)
    frames = torch.clamp(1 + torch.div(samples, hop_length, rounding_mode="floor"), max=num_frames)
    return frames / num_frames


def frames_to_tokens(rel_lengths: torch.Tensor, num_frames: int, patch_frames: int) -> torch.Tensor:
    """Number of whole patches of each example, from SpeechBrain's relative lengths."""
    frames = torch.round(rel_lengths.float() * num_frames).long()
    return torch.div(frames, patch_frames, rounding_mode="floor")


class FramePatchEmbedding(nn.Module):
    """(B, F, n_mels) filterbanks -> (B, F // patch_frames, d_model) tokens and token lengths.

    Arguments
    ---------
    n_mels : int
        Filterbank channels per frame.
    patch_frames : int
        Consecutive frames in one patch (one token).
    d_model : int
        Token size.
    """

    def __init__(self, n_mels: int, patch_frames: int, d_model: int):
        super().__init__()
        if patch_frames < 1:
            raise ValueError(f"patch_frames must be >= 1, got {patch_frames}")
        self.n_mels = n_mels
        self.patch_frames = patch_frames
        self.proj = nn.Linear(n_mels * patch_frames, d_model)

    def patchify(self, feats: torch.Tensor, rel_lengths: torch.Tensor):
        """Returns (patches, lengths): (B, T, patch_frames * n_mels) frames of each patch,
        time-major, and (B,) whole patches per example."""
        batch, frames, mels = feats.shape
        if mels != self.n_mels:
            raise ValueError(f"expected {self.n_mels} filterbank channels, got {mels}")
        num = frames // self.patch_frames
        if num == 0:
            raise ValueError(
                f"input of {frames} frames is shorter than one patch of {self.patch_frames} frames"
            )
        patches = feats[:, : num * self.patch_frames].reshape(batch, num, self.patch_frames * mels)
        lengths = frames_to_tokens(rel_lengths.to(feats.device), frames, self.patch_frames)
        if bool((lengths < 1).any()):
            raise ValueError(
                f"an utterance of the batch is shorter than one patch ({self.patch_frames} frames)"
            )
        return patches, lengths

    def forward(self, feats: torch.Tensor, rel_lengths: torch.Tensor):
        """Returns (tokens, lengths): (B, T, d_model) and (B,) whole patches per example."""
        patches, lengths = self.patchify(feats, rel_lengths)
        return self.proj(patches), lengths
