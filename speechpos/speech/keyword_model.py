"""Keyword Transformer (KWT) on MFCC frame tokens, built on the shared position core.

* :class:`KeywordFeatures`: the paper's front-end, torchaudio's MFCC: 40 coefficients from 64
  mel bins, 30 ms window, 10 ms hop, no centring, so a 1-s clip gives 98 frames.
* :class:`KeywordTransformer`: every ``patch_frames`` consecutive frames form one token
  (linear projection), an optional position signal (zero-initialised learned, sinusoidal or
  none) is added, and a SpeechBrain ``TransformerEncoder`` (pre-norm, regular attention)
  wrapped in :class:`~speechpos.position.ContextEncoder` encodes them, so MP3 pretraining can
  restrict keys/values to a context. Without a position signal the encoder is
  permutation-equivariant: nothing tells it where a token sits.
* :class:`TokenClassifier`: mean-pooled tokens -> LayerNorm -> linear layer over the classes.

Example
-------
>>> import torch
>>> from speechpos.position import sample_context
>>> feats = KeywordFeatures()(torch.randn(2, 16000))
>>> feats.shape
torch.Size([2, 98, 40])
>>> kwt = KeywordTransformer(d_model=32, num_layers=2, nhead=4, d_ffn=64, patch_frames=2)
>>> kwt.num_tokens
49
>>> ctx = sample_context(torch.tensor([49, 49]), 0.25)
>>> kwt(feats, ctx).shape
torch.Size([2, 49, 32])
>>> TokenClassifier(32, 12)(kwt(feats)).shape
torch.Size([2, 12])
"""

from __future__ import annotations

import torch
import torchaudio
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
from torch import nn

from speechpos.position import ContextEncoder
from speechpos.position.context import Context
from speechpos.position.embedding import build_position_embedding


class KeywordFeatures(nn.Module):
    """(B, samples) waveforms -> (B, frames, n_mfcc) MFCCs (torchaudio), no centring.

    >>> KeywordFeatures()(torch.zeros(1, 16000)).shape
    torch.Size([1, 98, 40])
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mfcc: int = 40,
        n_mels: int = 64,
        win_length_ms: float = 30.0,
        hop_length_ms: float = 10.0,
    ):
        super().__init__()
        win = int(sample_rate * win_length_ms / 1000)
        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=sample_rate,
            n_mfcc=n_mfcc,
            melkwargs={
                "n_fft": win,
                "win_length": win,
                "hop_length": int(sample_rate * hop_length_ms / 1000),
                "n_mels": n_mels,
                "center": False,
            },
        )

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        """MFCCs computed in float32 (also under autocast)."""
        with torch.autocast(wavs.device.type, enabled=False):
            return self.mfcc(wavs.float()).transpose(1, 2)


class KeywordTransformer(nn.Module):
    """Frame-patch tokens -> (position signal) -> unpositioned context encoder.

    Arguments
    ---------
    n_features : int
        MFCCs per frame.
    num_frames : int
        Frames per clip (98 for 1 s); a multiple of ``patch_frames``.
    patch_frames : int
        Consecutive frames per token.
    d_model, num_layers, nhead, d_ffn : int
        Transformer size.
    dropout : float
        Dropout inside the Transformer layers.
    position_embedding : str or bool
        ``"learned"``/True (zero-initialised), ``"sinusoidal"``, or ``"none"``/False.
    gather : bool
        Gather keys/values to the context (fast path) or mask the rest.
    """

    def __init__(
        self,
        n_features: int = 40,
        num_frames: int = 98,
        patch_frames: int = 2,
        d_model: int = 64,
        num_layers: int = 4,
        nhead: int = 4,
        d_ffn: int = 256,
        dropout: float = 0.0,
        position_embedding: str | bool = "none",
        gather: bool = True,
    ):
        super().__init__()
        if num_frames % patch_frames:
            raise ValueError(f"num_frames {num_frames} is not a multiple of patch_frames {patch_frames}")
        self.patch_frames = patch_frames
        self.num_tokens = num_frames // patch_frames
        self.token_embedding = nn.Linear(n_features * patch_frames, d_model)
        self.position_embedding = build_position_embedding(position_embedding, d_model, self.num_tokens)
        layers = TransformerEncoder(
            num_layers, nhead, d_ffn, d_model=d_model, dropout=dropout, activation=nn.GELU,
            normalize_before=True, attention_type="regularMHA",
        )
        self.encoder = ContextEncoder(layers, gather=gather)

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, frames, F) -> (B, N, D) tokens, position signal included if any."""
        batch, frames, dim = feats.shape
        if frames != self.num_tokens * self.patch_frames:
            raise ValueError(
                f"got {frames} frames, the model takes {self.num_tokens * self.patch_frames} "
                "(1-s clips: pad or cut the audio to 1 s)"
            )
        patches = feats.reshape(batch, self.num_tokens, self.patch_frames * dim)
        tokens = self.token_embedding(patches)
        if self.position_embedding is not None:
            tokens = self.position_embedding(tokens)
        return tokens

    def forward(self, feats: torch.Tensor, context: Context | None = None) -> torch.Tensor:
        """Encode; ``context`` restricts keys/values (None: full attention)."""
        return self.encoder(self.embed(feats), None, context)


def class_scores(output: torch.Tensor) -> torch.Tensor:
    """(B, classes) from a keyword classifier's output: the Keyword Transformer's
    :class:`TokenClassifier` gives (B, classes), SpeechBrain's x-vector ``Classifier`` (B, 1, classes).

    >>> class_scores(torch.zeros(2, 1, 12)).shape, class_scores(torch.zeros(2, 12)).shape
    (torch.Size([2, 12]), torch.Size([2, 12]))
    """
    return output.squeeze(1) if output.dim() == 3 else output


class TokenClassifier(nn.Module):
    """Mean-pooled tokens -> LayerNorm -> linear layer over classes.

    >>> TokenClassifier(8, 3)(torch.randn(2, 5, 8)).shape
    torch.Size([2, 3])
    """

    def __init__(self, d_model: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear = nn.Linear(d_model, num_classes)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, D) normalised mean of the tokens."""
        return self.norm(tokens.mean(dim=1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) encoder output -> (B, num_classes) logits."""
        return self.linear(self.pool(tokens))



class KeywordPositionModel(nn.Module):
    """MP3 on keyword clips: :class:`KeywordTransformer` tokens -> the shared position pretext
    (:class:`~speechpos.position.pretext.PositionPretext`: context, anchors, query subsets,
    absolute or relative head).

    Arguments
    ---------
    encoder : KeywordTransformer
        Built with ``position_embedding="none"``.
    head : PositionHead or RelativePositionHead
        The pretext's head.
    sampler : ContextSampler
        Which tokens are keys/values.
    loss_on, anchor_ratio, target_ratio, min_gap, coarse :
        See :class:`~speechpos.position.pretext.PositionPretext`.
    views : PatchViews, optional
        Per-patch jitter of the feature patches before they are embedded
        (:class:`~speechpos.speech.views.PatchViews`, laid out as ``patch_frames`` x features).

    >>> from speechpos.position import ContextSampler, PositionHead
    >>> kwt = KeywordTransformer(d_model=32, num_layers=1, nhead=4, d_ffn=64)
    >>> model = KeywordPositionModel(kwt, PositionHead(32, 49), ContextSampler(0.25), anchor_ratio=1.0)
    >>> out = model(torch.randn(2, 98, 40))
    >>> out.logits.shape, int(out.mask[0].sum())          # 37 excluded tokens carry loss
    (torch.Size([2, 49, 49]), 37)
    """

    def __init__(self, encoder: KeywordTransformer, head, sampler, loss_on: str = "all",
                 anchor_ratio: float = 0.0, target_ratio: float | None = None, min_gap: int = 0,
                 coarse: int = 1, views=None):
        super().__init__()
        from speechpos.position.pretext import PositionPretext

        if encoder.position_embedding is not None:
            raise ValueError("position-prediction pretraining needs an encoder without position embedding")
        self.encoder = encoder
        self.views = views
        self.pretext = PositionPretext(encoder.encoder, head, sampler, loss_on, anchor_ratio,
                                       target_ratio, max_positions=encoder.num_tokens, min_gap=min_gap,
                                       coarse=coarse)

    def tokens(self, feats: torch.Tensor, rel_lengths=None, generator: torch.Generator | None = None):
        """(B, frames, F) features -> unpositioned (tokens, lengths), views applied; whole clips,
        so ``rel_lengths`` is not used (the signature is :class:`SpeechPositionModel`'s)."""
        if self.views is not None:
            batch, frames, dim = feats.shape
            patches = feats.reshape(batch, frames // self.encoder.patch_frames, -1)
            feats = self.views(patches, generator).reshape(batch, frames, dim)
        tokens = self.encoder.embed(feats)
        return tokens, torch.full((tokens.shape[0],), tokens.shape[1], device=tokens.device)

    def forward(self, feats: torch.Tensor, generator: torch.Generator | None = None):
        """(B, frames, F) features -> :class:`~speechpos.position.pretext.PretextOutput`."""
        tokens, lengths = self.tokens(feats, None, generator)
        return self.pretext(tokens, lengths, generator)
