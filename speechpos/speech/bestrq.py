"""BEST-RQ (Chiu et al., 2022) on the speech encoder of this toolkit, as a peer for MP3.

SpeechBrain's parts do the work: :func:`speechbrain.lobes.models.BESTRQ.compute_mask` picks
the masked spans (one mask for the batch, inside its shortest utterance) and
:class:`speechbrain.nnet.quantisers.RandomProjectionQuantizer` (its nearest code found by a
matmul: :class:`RandomProjectionCodes`) turns each unmasked patch of
filterbank frames into a codebook index. Masked frames are replaced by Gaussian noise, and a
linear layer on the encoder output predicts the index of every masked patch, as in
SpeechBrain's BEST-RQ recipe. The encoder is the :class:`SpeechEncoder` of the MP3 recipes
with the same size; unlike MP3 it needs position information, so it carries a learnable
position embedding, which ``asr_ctc.py`` loads with the rest.

Masks are drawn on frames in spans of ``patch_frames`` frames aligned to the patches (SpeechBrain
masks 4-frame spans before its 4x subsampling CNN); ``mask_prob`` is the probability for a
span to *start* a mask, so 0.15 masks about 60 % of the patches when a span is one patch.

With ``drop_masked`` the masked patches never enter the encoder (MAE-AST, data2vec 2.0): the
encoder runs on the kept patches only, gathered out of the sequence with their position
embedding by the position core's :func:`~speechpos.position.encoder.gather_tokens` (the path
that makes MP3's step cheap), and a light :class:`MaskedTokenDecoder` puts the encodings back
at their positions, a learned mask token at every dropped one, and predicts the codes there.
A conformer's convolution must be off then (dropped tokens break its neighbourhoods); it is
switched on, zero-initialised, at fine-tuning, as for the position pretrainers.

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
>>> dropped = BestRQModel(enc, n_mels=80, patch_frames=4, d_model=16, codebook_size=32, drop_masked=True)
>>> logits, targets = dropped(torch.randn(2, 200, 80), torch.tensor([1.0, 0.8]))
>>> logits.shape[1], logits.shape[0] == targets.shape[0]
(32, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from speechbrain.lobes.models.BESTRQ import compute_mask
from speechbrain.nnet.quantisers import RandomProjectionQuantizer
from torch import nn

from speechpos.position.context import context_from_mask, valid_mask
from speechpos.position.embedding import SinusoidalPositionEmbedding
from speechpos.position.encoder import gather_tokens, scatter_tokens
from speechpos.speech.encoder import build_encoder, convolution_gates
from speechpos.speech.model import SpeechEncoder


class RandomProjectionCodes(RandomProjectionQuantizer):
    """SpeechBrain's random-projection quantiser, its nearest code found by one matmul.

    SpeechBrain measures the distance of every projected patch to every code by broadcast
    subtraction, a (B, codes, N, dim) tensor: at 8192 codes that was 40 % of a BEST-RQ step on
    one CPU thread. Codes and projections are both unit vectors, so the nearest code is the one
    of largest dot product; the indices are SpeechBrain's (tested), the buffers the same.

    >>> q = RandomProjectionCodes(8, 4, 16)
    >>> x = torch.randn(2, 5, 8)
    >>> torch.equal(q(x), RandomProjectionQuantizer.forward(q, x))
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = torch.nn.functional.normalize(x @ self.P, dim=-1)
        return (projected @ self.CB.T).argmax(dim=-1)


class ConvDecoderLayers(nn.Module):
    """data2vec 2.0's decoder body: residual blocks of a 1-D convolution, layer norm and GELU
    over the whole sequence, padding zeroed before each convolution. A masked position reads
    its neighbours by construction, where attention has to learn where they are.

    >>> ConvDecoderLayers(8, num_layers=2)(torch.randn(2, 5, 8), torch.tensor([5, 3])).shape
    torch.Size([2, 5, 8])
    """

    def __init__(self, d_decoder: int, num_layers: int = 2, kernel_size: int = 7):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(d_decoder, d_decoder, kernel_size, padding=kernel_size // 2) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_decoder) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = valid_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = x + torch.nn.functional.gelu(norm(conv(x.masked_fill(~valid, 0.0).transpose(1, 2)).transpose(1, 2)))
        return x


DECODER_KINDS = ("transformer", "conv")


class MaskedTokenDecoder(nn.Module):
    """The light decoder of masked prediction with dropped tokens.

    The encodings of the kept tokens go back to their positions (projected to ``d_decoder``),
    every dropped position gets one learned mask token, and a small network mixes them:
    ``"transformer"`` (MAE-AST): a fixed sinusoidal position signal added to all, then an
    unpositioned transformer with full attention; ``"conv"`` (data2vec 2.0): residual
    convolution blocks (:class:`ConvDecoderLayers`). Measured on speech: the transformer decoder
    learned to predict the codes from position alone and ignored the encoder
    (``tools/studies/bestrq_encoder_use.py``).

    Arguments
    ---------
    d_model : int
        Width of the encoder.
    d_decoder : int
        Width of the decoder (MAE-AST and this toolkit's default: ``d_model // 2``).
    num_layers, nhead : int
        Decoder depth and heads (``nhead``: transformer only).
    dropout : float
        Dropout of the decoder layers (transformer only).
    kind : str
        ``"transformer"`` or ``"conv"``.

    Example
    -------
    >>> from speechpos.position.context import context_from_mask
    >>> dec = MaskedTokenDecoder(d_model=16, d_decoder=8, num_layers=1, nhead=2)
    >>> kept = context_from_mask(torch.tensor([[True, False, True, True], [True, True, False, False]]))
    >>> dec(torch.randn(2, 3, 16), kept, torch.tensor([4, 3])).shape
    torch.Size([2, 4, 8])
    >>> MaskedTokenDecoder(16, 8, kind="conv")(torch.randn(2, 3, 16), kept, torch.tensor([4, 3])).shape
    torch.Size([2, 4, 8])
    """

    def __init__(self, d_model: int, d_decoder: int, num_layers: int = 2, nhead: int = 4, dropout: float = 0.0,
                 kind: str = "transformer"):
        super().__init__()
        if kind not in DECODER_KINDS:
            raise ValueError(f"decoder kind must be one of {DECODER_KINDS}, got {kind!r}")
        self.project = nn.Linear(d_model, d_decoder)
        self.mask_token = nn.Parameter(torch.randn(d_decoder) * 0.02)
        self.position = SinusoidalPositionEmbedding(d_decoder) if kind == "transformer" else None
        if kind == "transformer":
            self.layers = build_encoder("transformer", num_layers, d_decoder, nhead, 4 * d_decoder, dropout)
        else:
            self.layers = ConvDecoderLayers(d_decoder, num_layers)

    def forward(self, encoded: torch.Tensor, kept, lengths: torch.Tensor) -> torch.Tensor:
        """(B, C, d_model) encodings of the ``kept`` context's tokens, (B,) token lengths of the
        whole sequences -> (B, T, d_decoder) outputs at every position."""
        tokens = scatter_tokens(self.project(encoded), kept, self.mask_token)
        if self.position is not None:
            tokens = self.position(tokens)
        return self.layers(tokens, lengths)


def kept_patches(lengths: torch.Tensor, length: int, masked_patches: torch.Tensor):
    """The context of a dropped-token step: each utterance's valid patches that are not masked.

    >>> kept = kept_patches(torch.tensor([4, 3]), 4, torch.tensor([1]))
    >>> kept.mask.tolist()
    [[True, False, True, True], [True, False, True, False]]
    """
    lengths = lengths.to(masked_patches.device)
    dropped = torch.zeros(length, dtype=torch.bool, device=masked_patches.device)
    dropped[masked_patches] = True
    return context_from_mask(valid_mask(lengths, length) & ~dropped)


@dataclass
class MaskedBatch:
    """One batch's masking: the features cut to whole patches, their relative lengths, the
    masked frames and patches (the same for every utterance, as SpeechBrain draws them) and the
    codes of the clean masked patches, (B x masked patches,) in batch order."""

    feats: torch.Tensor
    rel_lengths: torch.Tensor
    mask: torch.Tensor
    masked_patches: torch.Tensor
    targets: torch.Tensor


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
    drop_masked : bool
        Drop the masked patches from the encoder instead of replacing them by noise, and
        predict their codes with a :class:`MaskedTokenDecoder`.
    decoder_layers, decoder_dim, decoder_heads : int
        The decoder's size (``decoder_dim`` default: ``d_model // 2``); used with ``drop_masked``.
    decoder_kind : str
        ``"transformer"`` or ``"conv"`` (see :class:`MaskedTokenDecoder`; ``bestrq.yaml`` says
        ``conv``; the default here rebuilds runs made before the choice existed).
    positioned : bool
        The encoder must carry a position embedding (BEST-RQ alone). False only inside
        :class:`~speechpos.speech.joint.DroppedJointModel`, whose kept tokens get the position
        pretext's anchor signal instead.
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
        drop_masked: bool = False,
        decoder_layers: int = 2,
        decoder_dim: int | None = None,
        decoder_heads: int = 4,
        decoder_kind: str = "transformer",
        positioned: bool = True,
    ):
        super().__init__()
        if positioned and encoder.position_embedding is None:
            raise ValueError("BEST-RQ needs an encoder with a position embedding")
        if drop_masked and any(gate.mode != "off" for gate in convolution_gates(encoder)):
            raise ValueError(
                "drop_masked needs the conformer's convolution off (conv_mode: off): the dropped "
                "tokens break its neighbourhoods; it is switched on at fine-tuning"
            )
        self.encoder = encoder
        self.patch_frames = patch_frames
        self.mask_prob = mask_prob
        self.mask_frames = mask_patches * patch_frames
        self.noise_std = noise_std
        self.quantizer = RandomProjectionCodes(n_mels * patch_frames, codebook_dim, codebook_size)
        self.drop_masked = drop_masked
        self.decoder = None
        if drop_masked:
            decoder_dim = decoder_dim or d_model // 2
            self.decoder = MaskedTokenDecoder(d_model, decoder_dim, decoder_layers, decoder_heads, kind=decoder_kind)
        self.head = nn.Linear(decoder_dim if drop_masked else d_model, codebook_size)

    def forward(self, feats: torch.Tensor, rel_lengths: torch.Tensor):
        """Returns (logits (N, codebook_size), targets (N,)) over the masked patches of the batch."""
        drawn = self.draw_masked(feats, rel_lengths)
        if self.drop_masked:
            out = self._encode_kept_and_decode(drawn.feats, drawn.rel_lengths, drawn.masked_patches)
        else:
            batch, _, mels = drawn.feats.shape
            noisy = drawn.feats.clone()
            noisy[:, drawn.mask] = torch.randn(batch, drawn.mask.shape[0], mels, device=feats.device) * self.noise_std
            out, _ = self.encoder(noisy, drawn.rel_lengths)
        return self.predict(out, drawn)

    def draw_masked(self, feats: torch.Tensor, rel_lengths: torch.Tensor) -> MaskedBatch:
        """Cut (B, F, n_mels) features to whole patches, draw the masked spans and compute the
        codes of the clean masked patches (the targets)."""
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
        rel_usable = (rel_lengths * frames / usable).clamp(max=1.0)
        return MaskedBatch(feats, rel_usable, mask, masked_patches, targets.reshape(-1))

    def predict(self, out: torch.Tensor, drawn: MaskedBatch):
        """(B, T, D) outputs at every patch (encoder or decoder) -> (logits (N, codes), targets (N,))
        at the masked patches."""
        logits = self.head(out[:, drawn.masked_patches])
        return logits.reshape(-1, logits.shape[-1]), drawn.targets

    def _encode_kept_and_decode(self, feats, rel_lengths, masked_patches):
        """The encoder on the kept patches only (with their position embedding), then the
        decoder on every position."""
        tokens, lengths = self.encoder.embed(feats, rel_lengths)
        kept = kept_patches(lengths, tokens.shape[1], masked_patches)
        encoded = self.encoder.encoder(gather_tokens(tokens, kept.index), kept.counts)
        return self.decoder(encoded, kept, lengths)
