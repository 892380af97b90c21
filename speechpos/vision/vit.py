"""The Vision Transformer of the ImageNet recipes, built from the shared position core.

:class:`VisionTransformer` = :class:`~speechpos.vision.patches.PatchEmbedding` -> optional
zero-initialised :class:`~speechpos.position.PositionEmbedding` (absent in pretraining) ->
SpeechBrain ``TransformerEncoder`` (pre-norm, GELU, regular attention) wrapped in
:class:`~speechpos.position.ContextEncoder`, so pretraining can restrict keys/values to a
context. There is no CLS token: global summaries are the mean of the output tokens, which
keeps the pretrained encoder free of any token that has no patch (and no position).

Example
-------
>>> import torch
>>> from speechpos.position import sample_context_2d
>>> vit = VisionTransformer(image_size=32, patch_size=4, d_model=32, num_layers=2, nhead=4, d_ffn=64)
>>> images = torch.randn(2, 3, 32, 32)
>>> ctx = sample_context_2d(2, vit.grid, context_ratio=0.25)
>>> vit(images, ctx).shape
torch.Size([2, 64, 32])
>>> ImageClassifier(32, 10)(vit(images)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
from torch import nn

from speechpos.position import ContextEncoder, PositionEmbedding, attentive_token_weights
from speechpos.position.context import Context
from speechpos.vision.patches import PatchEmbedding


class VisionTransformer(nn.Module):
    """Patch embedding -> (position embedding) -> unpositioned context encoder.

    Arguments
    ---------
    image_size : int or (int, int)
        Input side in pixels (square) or (height, width).
    patch_size : int
        Patch side in pixels.
    d_model, num_layers, nhead, d_ffn : int
        Transformer size.
    in_channels : int
        Image channels.
    dropout : float
        Dropout inside the Transformer layers.
    position_embedding : bool
        Add zero-initialised learnable absolute position embeddings (fine-tuning); False for
        pretraining or for fine-tuning without any position information.
    gather : bool
        Gather keys/values to the context (fast path) or mask the rest (reference path).
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        patch_size: int,
        d_model: int,
        num_layers: int,
        nhead: int,
        d_ffn: int,
        in_channels: int = 3,
        dropout: float = 0.0,
        position_embedding: bool = False,
        gather: bool = True,
    ):
        super().__init__()
        self.patch_embedding = PatchEmbedding(image_size, patch_size, in_channels, d_model)
        self.position_embedding = (
            PositionEmbedding(self.patch_embedding.num_patches, d_model)
            if position_embedding
            else None
        )
        layers = TransformerEncoder(
            num_layers,
            nhead,
            d_ffn,
            d_model=d_model,
            dropout=dropout,
            activation=nn.GELU,
            normalize_before=True,
            attention_type="regularMHA",
        )
        self.encoder = ContextEncoder(layers, gather=gather)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of the patch grid: the 2-D layout of the positions."""
        return self.patch_embedding.grid

    @property
    def num_patches(self) -> int:
        """Tokens per image (= positions the head predicts)."""
        return self.patch_embedding.num_patches

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D) tokens, position embedding included if any."""
        tokens = self.patch_embedding(images)
        if self.position_embedding is not None:
            tokens = self.position_embedding(tokens)
        return tokens

    def forward(
        self, images: torch.Tensor, context: Context | None = None, return_hidden: bool = False
    ):
        """Encode images; ``context`` restricts keys/values (None: full attention)."""
        return self.encoder(self.embed(images), None, context, return_hidden=return_hidden)


class ImageClassifier(nn.Module):
    """Mean-pooled tokens -> LayerNorm -> linear layer over classes.

    >>> ImageClassifier(8, 3)(torch.randn(2, 5, 8)).shape
    torch.Size([2, 3])
    """

    def __init__(self, d_model: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) encoder output -> (B, num_classes) logits."""
        return self.linear(self.norm(tokens.mean(dim=1)))


@torch.no_grad()
def attentive_weights(
    vit: VisionTransformer, images: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """DropPos' attentive reconstruction weights from a no-grad pass over the full image.

    The summary is the mean of the output tokens (the ViT has no CLS token); each patch weighs
    ``softmax_n(cos(summary, token_n) / temperature)``, so every image's weights sum to one.

    >>> vit = VisionTransformer(16, 4, d_model=16, num_layers=1, nhead=2, d_ffn=32)
    >>> w = attentive_weights(vit, torch.randn(3, 3, 16, 16))
    >>> w.shape, [round(v, 4) for v in w.sum(1).tolist()]
    (torch.Size([3, 16]), [1.0, 1.0, 1.0])
    """
    tokens = vit(images)
    valid = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return attentive_token_weights(tokens.mean(dim=1), tokens, valid, temperature)
