"""Per-patch augmentation for position prediction: patches whose edges no longer line up.

With anchors, speech position prediction is solved by spectral continuity: a target patch is
placed next to the anchor whose spectrum it continues (docs/pretext_shortcut.md). Vision met
the same shortcut and broke it by jittering each piece on its own (Doersch et al. 2015,
Noroozi & Favaro 2016). :class:`PatchViews` does that to filterbank patches: every patch
(context and target alike, so a target never shares a draw with the context it is placed
against) gets its own

- gain: a constant added to its (normalised) log-mel values;
- spectral tilt: a linear ramp over the mel channels, from ``-tilt`` to ``+tilt`` at most;
- noise: Gaussian, of a standard deviation drawn per patch up to ``noise``;
- frequency mask: one band of up to ``freq_mask`` channels set to zero;
- optionally, mean/variance normalisation over the patch, so level and spread say nothing.

What stays is the shape of the spectrum inside the patch and its change over the patch's
frames: the phonetic content. The augmentation only runs in pretraining; fine-tuning sees
clean features.

Example
-------
>>> import torch
>>> views = PatchViews(n_mels=8, patch_frames=2, gain=1.0, tilt=1.0, noise=0.1, freq_mask=2)
>>> patches = torch.randn(2, 5, 16)
>>> out = views(patches, torch.Generator().manual_seed(0))
>>> out.shape, bool((out != patches).any())
(torch.Size([2, 5, 16]), True)
>>> normed = PatchViews(8, 2, gain=0.0, tilt=0.0, noise=0.0, freq_mask=0, patch_norm=True)(patches)
>>> abs(float(normed[0, 0].mean())) < 1e-5, round(float(normed[0, 0].std(unbiased=False)), 3)
(True, 1.0)
"""

from __future__ import annotations

import torch
from torch import nn


class PatchViews(nn.Module):
    """Independent low-level jitter of every filterbank patch (see the module docstring).

    Arguments
    ---------
    n_mels, patch_frames : int
        Layout of a patch vector: ``patch_frames`` frames of ``n_mels`` channels, time-major.
    gain : float
        Largest offset added to a patch (uniform in ±gain), in normalised feature units.
    tilt : float
        Largest spectral tilt: the ramp's value at the top channel (uniform in ±tilt).
    noise : float
        Largest noise standard deviation (uniform in [0, noise] per patch).
    freq_mask : int
        Widest frequency band zeroed in a patch (uniform in [0, freq_mask] channels).
    patch_norm : bool
        Normalise every patch to zero mean and unit variance after the jitter.
    """

    def __init__(
        self,
        n_mels: int,
        patch_frames: int,
        gain: float = 0.5,
        tilt: float = 0.5,
        noise: float = 0.2,
        freq_mask: int = 10,
        patch_norm: bool = True,
    ):
        super().__init__()
        if min(gain, tilt, noise) < 0 or freq_mask < 0:
            raise ValueError(
                f"gain, tilt, noise and freq_mask must be >= 0, got {gain}, {tilt}, {noise}, {freq_mask}"
            )
        if freq_mask > n_mels:
            raise ValueError(f"freq_mask ({freq_mask}) is wider than the {n_mels} mel channels")
        self.n_mels = n_mels
        self.patch_frames = patch_frames
        self.gain = gain
        self.tilt = tilt
        self.noise = noise
        self.freq_mask = freq_mask
        self.patch_norm = patch_norm

    def forward(self, patches: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, patch_frames * n_mels) patches -> the same, each jittered on its own."""
        batch, length, size = patches.shape
        if size != self.n_mels * self.patch_frames:
            raise ValueError(
                f"patches of {size} values are not {self.patch_frames} frames x {self.n_mels} channels"
            )
        x = patches.reshape(batch, length, self.patch_frames, self.n_mels).float()

        def uniform(*shape):
            return torch.rand(*shape, generator=generator).to(x.device)

        ramp = torch.linspace(-1.0, 1.0, self.n_mels, device=x.device)
        offset = self.gain * (2 * uniform(batch, length, 1, 1) - 1)
        slope = self.tilt * (2 * uniform(batch, length, 1, 1) - 1)
        x = x + offset + slope * ramp
        if self.noise > 0:
            std = self.noise * uniform(batch, length, 1, 1)
            x = x + std * torch.randn(x.shape, generator=generator).to(x.device)
        if self.freq_mask > 0:
            width = (uniform(batch, length, 1, 1) * (self.freq_mask + 1)).floor()
            start = (uniform(batch, length, 1, 1) * (self.n_mels - width + 1)).floor()
            channel = torch.arange(self.n_mels, device=x.device)
            x = x.masked_fill((channel >= start) & (channel < start + width), 0.0)
        if self.patch_norm:
            flat = x.reshape(batch, length, -1)
            mean = flat.mean(-1, keepdim=True)
            std = flat.std(-1, unbiased=False, keepdim=True).clamp(min=1e-5)
            x = ((flat - mean) / std).reshape(x.shape)
        return x.reshape(batch, length, size).to(patches.dtype)

    def __repr__(self) -> str:
        return (
            f"PatchViews(gain={self.gain}, tilt={self.tilt}, noise={self.noise}, "
            f"freq_mask={self.freq_mask}, patch_norm={self.patch_norm})"
        )


def patch_views(enabled: bool, n_mels: int, patch_frames: int, **settings) -> PatchViews | None:
    """:class:`PatchViews` from hparams keys, or None when ``enabled`` is False.

    >>> patch_views(False, 80, 4) is None, patch_views(True, 80, 4, gain=0.0).gain
    (True, 0.0)
    """
    return PatchViews(n_mels, patch_frames, **settings) if enabled else None
