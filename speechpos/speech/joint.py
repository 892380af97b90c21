"""Masked prediction and position prediction in one model and one step (the joint objective).

No published position or order pretext beats masked prediction on ASR; DropPos's code pairs
its position loss with MAE (``multi_task``: reconstruction + 0.05 x position), LOCA pairs
position with cluster prediction. :class:`JointModel` does that for speech with the two
pretexts of this toolkit on one encoder, and one optimizer step on
``loss = BEST-RQ + position_weight x position``:

- BEST-RQ pass (:class:`~speechpos.speech.bestrq.BestRQModel`): whole utterances, masked
  frames replaced by noise, position embedding and convolution on (as BEST-RQ alone);
- position pass (:class:`~speechpos.speech.position_model.SpeechPositionModel`): the same
  features cut into consecutive chunks of ``chunk_frames`` (the crops position prediction
  learns on), no position embedding, the convolution off (it would leak position), keys and
  values from the context only, with the pretext's switches (anchors, gaps, views ...).

The encoder's weights are shared; the position pass adds only its linear head.

:class:`DroppedJointModel` joins the two in *one* encoder pass instead, on the dropped-token
engine: BEST-RQ's kept patches are the position pretext's attention context, each with the
anchors' sinusoidal position signal (as MP3 + anchors), and a sample of the masked patches, with
no position signal, are its queries: they attend to the context, are never keys or values, and
the linear position head classifies where each sits. BEST-RQ's light decoder reads the context
slots' encodings, put back at their positions with a mask token at every masked patch, and
predicts the masked codes. The masked patches' content reaches the position head only, never
the context encodings nor the decoder. No position embedding and the convolution off in
pretraining (dropped tokens break its neighbourhoods), as the position pretrainers: fine-tune
with a zero-initialised learned PE and the convolution switched on.

Example
-------
>>> import torch
>>> from speechpos.position import ContextSampler, PositionHead
>>> from speechpos.speech.bestrq import BestRQModel
>>> from speechpos.speech.model import build_speech_encoder
>>> from speechpos.speech.position_model import SpeechPositionModel
>>> enc = build_speech_encoder(num_layers=1, d_model=16, nhead=2, d_ffn=32, kind="conformer",
...                            conv_mode="on", position_embedding=True)
>>> joint = JointModel(
...     BestRQModel(enc, n_mels=80, patch_frames=4, d_model=16, codebook_size=32),
...     SpeechPositionModel(enc, PositionHead(16, 10), ContextSampler(0.25), anchor_ratio=1.0,
...                         skip_position_embedding=True),
...     chunk_frames=40)
>>> _ = torch.manual_seed(0)
>>> out = joint(torch.randn(2, 130, 80), torch.tensor([1.0, 0.7]))
>>> out.position.logits.shape[0], out.code_logits.shape[1]   # 3 + 2 whole chunks of 40 frames
(5, 32)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from speechpos.position.encoder import gather_tokens
from speechpos.position.pretext import PretextOutput
from speechpos.speech.bestrq import BestRQModel, kept_patches
from speechpos.speech.encoder import convolution_mode
from speechpos.speech.position_model import SpeechPositionModel


@dataclass
class JointOutput:
    """Both passes' predictions: BEST-RQ code logits (N, codes) and targets (N,), and the
    position pretext's output over the chunks."""

    code_logits: torch.Tensor
    code_targets: torch.Tensor
    position: PretextOutput


def chunk_features(feats: torch.Tensor, rel_lengths: torch.Tensor, chunk_frames: int):
    """Cut (B, F, M) features into consecutive chunks of ``chunk_frames`` frames; returns
    (chunks (N, chunk_frames, M), relative lengths (N,)). Every chunk lies inside its
    utterance except an utterance's only chunk when it is shorter than one.

    >>> chunks, lens = chunk_features(torch.randn(2, 10, 3), torch.tensor([1.0, 0.3]), 4)
    >>> chunks.shape, lens.tolist()
    (torch.Size([3, 4, 3]), [1.0, 1.0, 0.75])
    """
    batch, frames, mels = feats.shape
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    valid = torch.round(rel_lengths.float() * frames).long()
    count = max(frames // chunk_frames, 1)
    if frames < chunk_frames:
        feats = nn.functional.pad(feats, (0, 0, 0, chunk_frames - frames))
    chunks = feats[:, : count * chunk_frames].reshape(batch * count, chunk_frames, mels)
    start = torch.arange(count, device=feats.device) * chunk_frames
    inside = (valid[:, None] - start[None, :]).clamp(min=0, max=chunk_frames)  # (B, count)
    whole = inside == chunk_frames
    # An utterance with no whole chunk keeps its first, partial one.
    keep = whole | ((~whole.any(1, keepdim=True)) & (torch.arange(count, device=feats.device) == 0))
    keep = keep.reshape(-1)
    return chunks[keep], inside.reshape(-1)[keep].float() / chunk_frames


class JointModel(nn.Module):
    """BEST-RQ and position prediction on one encoder (see the module docstring).

    Arguments
    ---------
    bestrq : BestRQModel
        Masked prediction; its encoder has a position embedding.
    position : SpeechPositionModel
        Built on the same encoder with ``skip_position_embedding=True``.
    chunk_frames : int
        Frames per chunk of the position pass (200: 2-s crops).
    """

    def __init__(self, bestrq: BestRQModel, position: SpeechPositionModel, chunk_frames: int = 200):
        super().__init__()
        if position.encoder is not bestrq.encoder:
            raise ValueError("the joint objective needs both passes on one encoder")
        self.bestrq = bestrq
        self.position = position
        self.chunk_frames = chunk_frames

    @property
    def encoder(self):
        return self.bestrq.encoder

    def forward(self, feats: torch.Tensor, rel_lengths: torch.Tensor, generator: torch.Generator | None = None):
        code_logits, code_targets = self.bestrq(feats, rel_lengths)
        chunks, chunk_lengths = chunk_features(feats, rel_lengths, self.chunk_frames)
        with convolution_mode(self.encoder.encoder, "off"):
            position = self.position(chunks, chunk_lengths, generator)
        return JointOutput(code_logits, code_targets, position)


class DroppedJointModel(nn.Module):
    """Dropped-token BEST-RQ and position prediction in one encoder pass (see the module
    docstring); returns a :class:`JointOutput`.

    Arguments
    ---------
    bestrq : BestRQModel
        With ``drop_masked=True`` and ``positioned=False`` on an encoder without position
        embedding, its convolution off.
    position : SpeechPositionModel
        On the same encoder, with ``loss_on="excluded"`` (the loss on the masked patches) and
        usually ``anchor_ratio=1.0`` (every kept patch carries its position, as in dropped
        BEST-RQ) and a ``target_ratio`` (the share of the masked patches run as queries).

    Example
    -------
    >>> from speechpos.position import ContextSampler, PositionHead
    >>> from speechpos.speech.model import build_speech_encoder
    >>> enc = build_speech_encoder(num_layers=1, d_model=16, nhead=2, d_ffn=32, kind="conformer", conv_mode="off")
    >>> model = DroppedJointModel(
    ...     BestRQModel(enc, n_mels=80, patch_frames=4, d_model=16, codebook_size=32, drop_masked=True,
    ...                 decoder_kind="conv", positioned=False),
    ...     SpeechPositionModel(enc, PositionHead(16, 100), ContextSampler(0.25), loss_on="excluded",
    ...                         anchor_ratio=1.0, target_ratio=0.5))
    >>> _ = torch.manual_seed(0)
    >>> out = model(torch.randn(2, 200, 80), torch.tensor([1.0, 0.8]))
    >>> out.code_logits.shape[1], out.code_logits.shape[0] == out.code_targets.shape[0]
    (32, True)
    >>> bool((out.position.mask.sum(1) > 0).all())   # masked patches scored in every utterance
    True
    """

    def __init__(self, bestrq: BestRQModel, position: SpeechPositionModel):
        super().__init__()
        if position.encoder is not bestrq.encoder:
            raise ValueError("the one-pass joint objective needs both objectives on one encoder")
        if not bestrq.drop_masked:
            raise ValueError("the one-pass joint objective needs BEST-RQ with drop_masked=True")
        if bestrq.encoder.position_embedding is not None:
            raise ValueError("the one-pass joint objective needs an encoder without position embedding: "
                             "the kept patches carry the anchors' position signal")
        if position.pretext.loss_on != "excluded":
            raise ValueError("the one-pass joint objective scores the masked patches: use loss_on: excluded")
        self.bestrq = bestrq
        self.position = position

    @property
    def encoder(self):
        return self.bestrq.encoder

    def forward(self, feats: torch.Tensor, rel_lengths: torch.Tensor, generator: torch.Generator | None = None):
        drawn = self.bestrq.draw_masked(feats, rel_lengths)
        tokens, lengths = self.position.tokens(drawn.feats, drawn.rel_lengths, generator)
        length, lengths = tokens.shape[1], lengths.to(tokens.device)
        kept = kept_patches(lengths, length, drawn.masked_patches)
        pretext = self.position.pretext
        plan = pretext.plan(lengths, length, generator, context=kept)
        position = pretext(tokens, lengths, plan=plan)
        if plan.queries is not None:  # the context occupies each example's first slots, in order
            encoded = position.encoded[:, : kept.index.shape[1]]
        else:
            encoded = gather_tokens(position.encoded, kept.index)
        decoded = self.bestrq.decoder(encoded, kept, lengths)
        code_logits, code_targets = self.bestrq.predict(decoded, drawn)
        return JointOutput(code_logits, code_targets, position)


def seconds_to_frames(seconds: float, hop_ms: float = 10.0) -> int:
    """Filterbank frames in ``seconds`` at SpeechBrain's 10-ms hop.

    >>> seconds_to_frames(2.0)
    200
    """
    return int(round(seconds * 1000 / hop_ms))


def chunk_tokens(seconds: float, patch_frames: int) -> int:
    """Patches (tokens) in a chunk of ``seconds``: the position classes of the joint pass.

    >>> chunk_tokens(2.0, 4)
    50
    """
    return seconds_to_frames(seconds) // patch_frames
