"""BEST-RQ (Chiu et al., 2022) on the speech encoder of this toolkit, as a peer for MP3.

SpeechBrain's parts do the work: :func:`speechbrain.lobes.models.BESTRQ.compute_mask` picks
the masked spans (one mask for the batch, inside its shortest utterance) and
:class:`speechbrain.nnet.quantisers.RandomProjectionQuantizer` turns each unmasked patch of
filterbank frames into a codebook index. Masked frames are replaced by Gaussian noise, and a
linear layer on the encoder output predicts the index of every masked patch, as in
SpeechBrain's BEST-RQ recipe. The encoder is the :class:`SpeechEncoder` of the MP3 recipes
with the same size; unlike MP3 it needs position information, so it carries a learnable
position embedding, which ``asr_ctc.py`` loads with the rest.

Masks are drawn on frames in spans of ``patch_frames`` frames aligned to the patches (SpeechBrain
masks 4-frame spans before its 4x subsampling CNN); ``mask_prob`` is the probability for a
span to *start* a mask, so 0.15 masks about 60 % of the patches when a span is one patch.

Example
-------
>>> import torch
>>> from speechpos.speech.model import build_speech_encoder
>>> enc = build_speech_encoder(num_layers=1, d_model=16, nhead=2, d_ffn=32, position_embedding=True)
>>> model = BestRQModel(enc, n_mels=80, patch_frames=4, d_model=16, codebook_size=32)
>>> _ = torch.manual_seed(0)
>>> logits, targets = model(torch.randn(2, 200, 80), torch.tensor([1.0, 0.8]))
>>> logits.shape[1], bool(targets.max() < 32), logits.shape[0] == targets.shape[0]
(32, True, True)
"""

from __future__ import annotations

import torch
from speechbrain.lobes.models.BESTRQ import compute_mask
from speechbrain.nnet.quantisers import RandomProjectionQuantizer
from torch import nn

from speechpos.speech.model import SpeechEncoder


class BestRQModel(nn.Module):
    """Masked prediction of random-projection codes of filterbank patches.

    Arguments
    ---------
    encoder : SpeechEncoder
        With a position embedding (BEST-RQ's encoder is positioned).
    n_mels, patch_frames, d_model : int
        As the encoder's.
    codebook_size : int
        Codes of the random quantiser (SpeechBrain's recipe: 8192).
    codebook_dim : int
        Projection size of the quantiser (SpeechBrain's recipe: 16).
    mask_prob : float
        Probability for a patch-aligned span to start a mask.
    mask_patches : int
        Patches per masked span.
    noise_std : float
        Standard deviation of the noise that replaces masked frames (mean 0).
    """

    def __init__(
        self,
        encoder: SpeechEncoder,
        n_mels: int = 80,
        patch_frames: int = 4,
        d_model: int = 144,
        codebook_size: int = 8192,
        codebook_dim: int = 16,
        mask_prob: float = 0.15,
        mask_patches: int = 1,
        noise_std: float = 0.1,
    ):
        super().__init__()
        if encoder.position_embedding is None:
            raise ValueError("BEST-RQ needs an encoder with a position embedding")
        self.encoder = encoder
        self.patch_frames = patch_frames
        self.mask_prob = mask_prob
        self.mask_frames = mask_patches * patch_frames
        self.noise_std = noise_std
        self.quantizer = RandomProjectionQuantizer(n_mels * patch_frames, codebook_dim, codebook_size)
        self.head = nn.Linear(d_model, codebook_size)

    def forward(self, feats: torch.Tensor, rel_lengths: torch.Tensor):
        """Returns (logits (N, codebook_size), targets (N,)) over the masked patches of the batch."""
        batch, frames, mels = feats.shape
        usable = frames // self.patch_frames * self.patch_frames
        if usable == 0:
            raise ValueError(f"input of {frames} frames is shorter than one patch of {self.patch_frames} frames")
        feats = feats[:, :usable]
        frame_lengths = torch.round(rel_lengths.float() * frames).long().clamp(max=usable)
        shortest = int(frame_lengths.min())
        if shortest < self.mask_frames:
            raise ValueError(
                f"an utterance of {shortest} frames is shorter than one masked span of "
                f"{self.mask_frames} frames"
            )
        mask = compute_mask(feats.shape, frame_lengths.tolist(), self.mask_prob, self.mask_frames).to(feats.device)
        patches = feats.reshape(batch, usable // self.patch_frames, self.patch_frames * mels)
        masked_patches = mask[:: self.patch_frames] // self.patch_frames
        with torch.no_grad():
            targets = self.quantizer(patches[:, masked_patches].float())
        noisy = feats.clone()
        noisy[:, mask] = torch.randn(batch, mask.shape[0], mels, device=feats.device) * self.noise_std
        enc, _ = self.encoder(noisy, (rel_lengths * frames / usable).clamp(max=1.0))
        logits = self.head(enc[:, masked_patches])
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
