"""The speech encoder shared by pretraining and fine-tuning, and its checkpoint loader.

:class:`SpeechEncoder` = frame-patch embedding -> optional position embedding (absent in
pretraining, zero-initialised at fine-tune time) -> unpositioned context encoder.
Filterbank computation and normalisation stay in the recipes (SpeechBrain's ``Fbank`` and
``InputNormalization``), as in SpeechBrain's own recipes.

Example
-------
>>> import torch
>>> from speechpos.speech.encoder import build_encoder
>>> model = SpeechEncoder(FramePatchEmbedding(80, 4, 32), build_encoder("transformer", 2, 32, 4, 64))
>>> out, lengths = model(torch.randn(2, 40, 80), torch.tensor([1.0, 0.6]))
>>> out.shape, lengths.tolist()
(torch.Size([2, 10, 32]), [10, 6])
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from speechpos.position.checkpoint import CheckpointMismatchError, load_encoder_state
from speechpos.position.context import Context
from speechpos.position.embedding import PositionEmbedding, build_position_embedding
from speechpos.position.encoder import ContextEncoder
from speechpos.speech.patches import FramePatchEmbedding

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointMismatchError",
    "SpeechEncoder",
    "build_speech_encoder",
    "load_encoder_state",
]


class SpeechEncoder(nn.Module):
    """Patches -> (position embedding) -> context encoder.

    Arguments
    ---------
    patch_embedding : FramePatchEmbedding
        Filterbank frames to tokens.
    encoder : ContextEncoder
        Unpositioned encoder (see :func:`speechpos.speech.encoder.build_encoder`).
    position_embedding : PositionEmbedding, optional
        Added to the tokens before the encoder; None for no position information.
    """

    def __init__(
        self,
        patch_embedding: FramePatchEmbedding,
        encoder: ContextEncoder,
        position_embedding: PositionEmbedding | None = None,
    ):
        super().__init__()
        self.patch_embedding = patch_embedding
        self.encoder = encoder
        self.position_embedding = position_embedding

    def embed(self, feats: torch.Tensor, rel_lengths: torch.Tensor):
        """(B, F, n_mels) features -> (tokens, token lengths), position embedding included."""
        tokens, lengths = self.patch_embedding(feats, rel_lengths)
        if self.position_embedding is not None:
            tokens = self.position_embedding(tokens)
        return tokens, lengths

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        context: Context | None = None,
        return_hidden: bool = False,
    ):
        """Returns (encodings, token lengths), or (encodings, token lengths, hidden states).

        ``lengths`` are relative (SpeechBrain's convention, and its name, so that a
        ``LengthsCapableSequential`` passes them on)."""
        tokens, token_lengths = self.embed(feats, lengths)
        out = self.encoder(tokens, token_lengths, context, return_hidden=return_hidden)
        if return_hidden:
            return out[0], token_lengths, out[1]
        return out, token_lengths


def build_speech_encoder(
    n_mels: int = 80,
    patch_frames: int = 4,
    kind: str = "transformer",
    num_layers: int = 6,
    d_model: int = 144,
    nhead: int = 4,
    d_ffn: int = 576,
    dropout: float = 0.1,
    kernel_size: int = 31,
    conv_mode: str = "off",
    gather: bool = True,
    null_key: bool = True,
    position_embedding: bool | str = False,
    max_positions: int = 1000,
    frontend: str = "patch",
) -> SpeechEncoder:
    """One builder for the pretraining and fine-tuning recipes, so both make the same
    architecture from the same hparams keys.

    ``frontend`` is ``"patch"`` (:class:`FramePatchEmbedding`, no position leak: the pretraining
    path) or ``"conv"`` (:class:`~speechpos.speech.frontend.ConvFrontEnd`, CTC from scratch);
    ``position_embedding`` is ``"learned"``/True (zero-initialised), ``"sinusoidal"`` or
    ``"none"``/False.

    >>> enc = build_speech_encoder(num_layers=1, d_model=16, nhead=2, d_ffn=32, position_embedding=True)
    >>> float(enc.position_embedding.weight.detach().abs().sum())
    0.0
    >>> build_speech_encoder(num_layers=1, d_model=16, nhead=2, d_ffn=32, frontend="mfcc")
    Traceback (most recent call last):
    ...
    ValueError: frontend must be one of ('patch', 'conv'), got 'mfcc'
    """
    from speechpos.speech.encoder import build_encoder
    from speechpos.speech.frontend import FRONTENDS, ConvFrontEnd

    if frontend == "patch":
        embedding = FramePatchEmbedding(n_mels, patch_frames, d_model)
    elif frontend == "conv":
        if patch_frames != ConvFrontEnd.subsampling:
            raise ValueError(
                f"frontend 'conv' subsamples {ConvFrontEnd.subsampling}x: set patch_frames: "
                f"{ConvFrontEnd.subsampling} (got {patch_frames})"
            )
        embedding = ConvFrontEnd(n_mels, d_model, dropout=dropout)
    else:
        raise ValueError(f"frontend must be one of {FRONTENDS}, got {frontend!r}")
    return SpeechEncoder(
        embedding,
        build_encoder(
            kind, num_layers, d_model, nhead, d_ffn, dropout, kernel_size, conv_mode,
            gather=gather, null_key=null_key,
        ),
        build_position_embedding(position_embedding, d_model, max_positions),
    )
