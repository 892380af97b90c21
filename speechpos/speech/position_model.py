"""Speech position-prediction model: frame patches -> the shared position pretext.

Everything a training step needs happens in one ``forward``, so the model can be wrapped in
DistributedDataParallel as a single module. The pretext's variants (anchors, relative targets,
query subsets, gaps, coarse classes) are those of
:class:`~speechpos.position.pretext.PositionPretext`; ``views`` jitters every patch on its own
before it is embedded (:class:`~speechpos.speech.views.PatchViews`).

Example
-------
>>> import torch
>>> from speechpos.position import ContextSampler, PositionHead
>>> from speechpos.speech import FramePatchEmbedding, SpeechEncoder, build_encoder
>>> enc = SpeechEncoder(FramePatchEmbedding(80, 4, 32), build_encoder("transformer", 2, 32, 4, 64))
>>> model = SpeechPositionModel(enc, PositionHead(32, 100), ContextSampler(0.25))
>>> out = model(torch.randn(2, 80, 80), torch.tensor([1.0, 0.5]))
>>> out.logits.shape, out.num_classes.tolist(), out.context.counts.tolist()
(torch.Size([2, 20, 20]), [20, 10], [5, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from speechpos.position.context import ContextSampler
from speechpos.position.head import PositionHead
from speechpos.position.pretext import PositionPretext, PretextOutput
from speechpos.position.relative import RelativePositionHead
from speechpos.speech.model import SpeechEncoder
from speechpos.speech.views import PatchViews


class SpeechPositionModel(nn.Module):
    """MP3 for speech: predict each frame patch's position from unpositioned content.

    Arguments
    ---------
    encoder : SpeechEncoder
        Built without position embedding.
    head : PositionHead or RelativePositionHead
        Absolute positions, or offsets from a context token.
    sampler : ContextSampler
        Which tokens supply keys/values.
    loss_on, anchor_ratio, target_ratio, max_positions, min_gap, coarse :
        See :class:`~speechpos.position.pretext.PositionPretext`.
    views : PatchViews, optional
        Per-patch augmentation of the filterbank patches (patch front-end only).
    skip_position_embedding : bool
        The encoder may carry a position embedding, which this pretext leaves out (the joint
        objective's encoder has one for its masked-prediction pass); otherwise one is refused.
    """

    def __init__(
        self,
        encoder: SpeechEncoder,
        head: PositionHead | RelativePositionHead,
        sampler: ContextSampler,
        loss_on: str = "all",
        anchor_ratio: float = 0.0,
        target_ratio: float | None = None,
        max_positions: int = 1000,
        min_gap: int = 0,
        coarse: int = 1,
        views: PatchViews | None = None,
        skip_position_embedding: bool = False,
    ):
        super().__init__()
        if encoder.position_embedding is not None and not skip_position_embedding:
            raise ValueError("position-prediction pretraining needs an encoder without position embedding")
        if views is not None and not hasattr(encoder.patch_embedding, "patchify"):
            raise ValueError("views need the patch front-end (frontend: patch)")
        self.encoder = encoder
        self.views = views
        self.pretext = PositionPretext(
            encoder.encoder, head, sampler, loss_on, anchor_ratio, target_ratio, max_positions,
            min_gap=min_gap, coarse=coarse,
        )

    @property
    def head(self):
        return self.pretext.head

    def tokens(self, feats, rel_lengths, generator: torch.Generator | None = None):
        """Filterbank features (B, F, n_mels) -> unpositioned (tokens, lengths), views applied."""
        embedding = self.encoder.patch_embedding
        if self.views is None:
            return embedding(feats, rel_lengths)
        patches, lengths = embedding.patchify(feats, rel_lengths)
        return embedding.proj(self.views(patches, generator)), lengths

    def forward(self, feats, rel_lengths, generator: torch.Generator | None = None) -> PretextOutput:
        """Filterbank features (B, F, n_mels) and relative lengths -> :class:`PretextOutput`."""
        tokens, lengths = self.tokens(feats, rel_lengths, generator)
        return self.pretext(tokens, lengths, generator)
