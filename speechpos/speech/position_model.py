"""Speech position-prediction model: encoder + position head, context sampled in forward.

Everything a training step needs happens in one ``forward``, so the model can be wrapped in
DistributedDataParallel as a single module.

Example
-------
>>> import torch
>>> from speechpos.position import ContextSampler, PositionHead
>>> from speechpos.speech import FramePatchEmbedding, SpeechEncoder, build_encoder
>>> enc = SpeechEncoder(FramePatchEmbedding(80, 4, 32), build_encoder("transformer", 2, 32, 4, 64))
>>> model = SpeechPositionModel(enc, PositionHead(32, 100), ContextSampler(0.25))
>>> logits, lengths, context = model(torch.randn(2, 80, 80), torch.tensor([1.0, 0.5]))
>>> logits.shape, context.counts.tolist()
(torch.Size([2, 20, 20]), [5, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from speechpos.position.context import ContextSampler
from speechpos.position.head import PositionHead
from speechpos.speech.model import SpeechEncoder


class SpeechPositionModel(nn.Module):
    """MP3 for speech: predict each frame patch's position from unpositioned content.

    Arguments
    ---------
    encoder : SpeechEncoder
        Built without position embedding.
    head : PositionHead
        Linear head over positions.
    sampler : ContextSampler
        Which tokens supply keys/values.
    """

    def __init__(self, encoder: SpeechEncoder, head: PositionHead, sampler: ContextSampler):
        super().__init__()
        if encoder.position_embedding is not None:
            raise ValueError("position-prediction pretraining needs an encoder without position embedding")
        self.encoder = encoder
        self.head = head
        self.sampler = sampler

    def forward(self, feats, rel_lengths, generator: torch.Generator | None = None):
        """Returns (logits (B, T, P), token lengths (B,), context or None)."""
        tokens, lengths = self.encoder.embed(feats, rel_lengths)
        context = self.sampler(lengths, tokens.shape[1], generator)
        out = self.encoder.encoder(tokens, lengths, context)
        return self.head(out, lengths), lengths, context
