"""One position-prediction step on tokens of any modality: context, anchors, queries, head.

:class:`PositionPretext` takes unpositioned tokens (B, T, D) and their lengths and returns a
:class:`PretextOutput`: logits, the true class of each scored slot, and which slots carry
loss. Its switches are the pretext's variants, all on the shared core:

- ``sampler``: which tokens are attention context (MP3's masking ratio);
- ``loss_on``: which tokens carry loss (all, excluded, context);
- ``anchor_ratio``: a fraction of the context keeps a sinusoidal position signal
  (:mod:`~speechpos.position.anchors`); anchors carry no loss;
- ``target_ratio``: only the context and this fraction of the loss-carrying non-context tokens
  enter the encoder (:mod:`~speechpos.position.queries`); None runs every token;
- ``min_gap``: only tokens with no context token within ``min_gap`` positions carry loss, so
  none can be placed by continuing the spectrum (or the picture) of an adjacent context token;
- ``coarse``: the class is a span of ``coarse`` positions (on a grid, a square of cells);
- the head: :class:`~speechpos.position.head.PositionHead` (absolute position) or
  :class:`~speechpos.position.relative.RelativePositionHead` (offset from a context token).

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechpos.position import ContextEncoder, ContextSampler, PositionHead
>>> enc = ContextEncoder(TransformerEncoder(2, 4, 64, d_model=32))
>>> pretext = PositionPretext(enc, PositionHead(32, 50), ContextSampler(0.25), anchor_ratio=0.5,
...                           target_ratio=0.5)
>>> out = pretext(torch.randn(2, 40, 32), torch.tensor([40, 20]))
>>> out.logits.shape[1] < 40, out.logits.shape[2], out.num_classes.tolist()
(True, 40, [40, 20])

The random draws of a step (context, anchors, tokens scored) are a :class:`PretextPlan`, which
can be drawn before the tokens are embedded and read by whoever needs them (the shortcut
diagnosis, ``tools/studies/pretext_shortcut.py``, measures each target's distance to its anchors):

>>> gapped = PositionPretext(enc, PositionHead(32, 50), ContextSampler(0.25), min_gap=1, coarse=4)
>>> plan = gapped.plan(torch.tensor([40, 20]), 40)
>>> near = ContextSampler(0.25).near(plan.context.mask, 1)
>>> bool((plan.loss_mask & near).any())
False
>>> out = gapped(torch.randn(2, 40, 32), torch.tensor([40, 20]), plan=plan)
>>> out.num_classes.tolist(), int(out.true.max()) < 10
([10, 5], True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from speechpos.position.anchors import AnchorSignal, sample_anchors
from speechpos.position.context import Context, ContextSampler, full_context, valid_mask
from speechpos.position.encoder import ContextEncoder, gather_tokens
from speechpos.position.head import PositionHead
from speechpos.position.loss import LOSS_TOKENS, loss_token_mask
from speechpos.position.queries import QuerySet, select_queries
from speechpos.position.relative import RelativePositionHead, reference_pairs

TARGETS = ("absolute", "relative")


@dataclass
class PretextOutput:
    """What a pretext step predicts and against what.

    Attributes
    ----------
    logits : torch.Tensor
        (B, N, K) scores of each slot's class.
    true : torch.Tensor
        (B, N) the true class of each slot (absolute: its position).
    mask : torch.Tensor
        (B, N) slots that carry loss and are scored.
    num_classes : torch.Tensor
        (B,) classes each example can have (absolute: its token count; relative: 2k + 1).
    context : Context or None
        The context over the full token sequence (None: full attention).
    positions : torch.Tensor
        (B, N) the token each slot holds (slots are a subset of the tokens with ``target_ratio``),
        e.g. to gather per-token loss weights.
    encoded : torch.Tensor or None
        (B, N, D) the encoder's output at each slot (what the head read), for an objective that
        uses the same pass (dropped-token masked prediction on the context slots).
    """

    logits: torch.Tensor
    true: torch.Tensor
    mask: torch.Tensor
    num_classes: torch.Tensor
    context: Context | None
    positions: torch.Tensor
    encoded: torch.Tensor | None = None


@dataclass
class PretextPlan:
    """The random draws of one pretext step, over the full token sequence.

    Attributes
    ----------
    context : Context or None
        Attention context (None: full attention).
    anchors : torch.Tensor
        (B, T) context tokens that keep a position signal.
    loss_mask : torch.Tensor
        (B, T) tokens that carry loss (``loss_on``, anchors and ``min_gap`` applied).
    queries : QuerySet or None
        With ``target_ratio``: the tokens that enter the encoder.
    """

    context: Context | None
    anchors: torch.Tensor
    loss_mask: torch.Tensor
    queries: QuerySet | None = None


class PositionPretext(nn.Module):
    """Context sampling + anchors + query selection + encoder + head.

    Arguments
    ---------
    encoder : ContextEncoder
        Unpositioned encoder (keys/values restricted to the context).
    head : PositionHead or RelativePositionHead
        Absolute positions or offsets from a context token.
    sampler : ContextSampler or GridContextSampler
        Which tokens are context.
    loss_on : str
        "all", "excluded" or "context".
    anchor_ratio : float
        Fraction of the context tokens that keep a sinusoidal position signal (0: none).
    target_ratio : float, optional
        Fraction of the non-context loss tokens run through the encoder (None: all tokens).
    max_positions : int
        Longest sequence, for the anchors' signal.
    min_gap : int
        Score only tokens with no context token within ``min_gap`` positions (0: all).
    coarse : int
        Positions per class (absolute targets only; the head needs ``ceil(max / coarse)``
        classes).
    """

    def __init__(
        self,
        encoder: ContextEncoder,
        head: PositionHead | RelativePositionHead,
        sampler: ContextSampler,
        loss_on: str = "all",
        anchor_ratio: float = 0.0,
        target_ratio: float | None = None,
        max_positions: int = 1000,
        min_gap: int = 0,
        coarse: int = 1,
    ):
        super().__init__()
        if min_gap < 0:
            raise ValueError(f"min_gap must be >= 0, got {min_gap}")
        if coarse < 1:
            raise ValueError(f"coarse must be >= 1, got {coarse}")
        if coarse > 1 and isinstance(head, RelativePositionHead):
            raise ValueError("coarse targets are classes of absolute positions: use position_target: absolute")
        if target_ratio is not None and not 0.0 < target_ratio <= 1.0:
            raise ValueError(f"target_ratio must be in (0, 1] or null, got {target_ratio}")
        if not 0.0 <= anchor_ratio <= 1.0:
            raise ValueError(f"anchor_ratio must be in [0, 1], got {anchor_ratio}")
        if loss_on not in LOSS_TOKENS:
            raise ValueError(f"loss_on must be one of {LOSS_TOKENS}, got {loss_on!r}")
        self.encoder = encoder
        self.head = head
        self.sampler = sampler
        self.loss_on = loss_on
        self.anchor_ratio = anchor_ratio
        self.target_ratio = target_ratio
        self.min_gap = min_gap
        self.coarse = coarse
        d_model = head.proj.in_features // (3 if isinstance(head, RelativePositionHead) else 1)
        self.anchor_signal = AnchorSignal(d_model, max_positions) if anchor_ratio > 0 else None

    def plan(self, lengths: torch.Tensor, length: int, generator: torch.Generator | None = None,
             context: Context | None = None) -> PretextPlan:
        """Draw the context, anchors and scored tokens for (B,) ``lengths`` padded to ``length``
        (``context``: this context instead of the sampler's draw, e.g. the tokens another
        objective keeps; anchors, loss tokens and queries are drawn over it as usual)."""
        if context is None:
            context = self.sampler(lengths, length, generator)
        ctx = context if context is not None else full_context(lengths, length)
        loss_mask = loss_token_mask(self.loss_on, lengths, length, context)
        anchors = sample_anchors(ctx, self.anchor_ratio, generator)
        loss_mask = loss_mask & ~anchors
        if self.min_gap > 0 and context is not None:
            loss_mask = loss_mask & ~self.sampler.near(context.mask, self.min_gap)
        queries = None
        if self.target_ratio is not None and context is not None:
            queries = select_queries(lengths, ctx, self.target_ratio, candidates=loss_mask, generator=generator)
        return PretextPlan(context, anchors, loss_mask, queries)

    def forward(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        generator: torch.Generator | None = None,
        plan: PretextPlan | None = None,
    ) -> PretextOutput:
        """Predict the positions of (B, T, D) unpositioned tokens with (B,) valid lengths
        (``plan``: draws made beforehand by :meth:`plan`; default: drawn here)."""
        batch, length, _ = tokens.shape
        lengths = lengths.to(tokens.device)
        if plan is None:
            plan = self.plan(lengths, length, generator)
        context, anchors, loss_mask = plan.context, plan.anchors, plan.loss_mask

        if plan.queries is not None:
            chosen = plan.queries
            positions, slot_lengths, slot_context = chosen.index, chosen.lengths, chosen.context
            x = gather_tokens(tokens, positions)
            slots = valid_mask(slot_lengths, positions.shape[1])
            anchors = torch.gather(anchors, 1, positions) & slots
            loss_mask = torch.gather(loss_mask, 1, positions) & slots
        else:
            positions = torch.arange(length, device=tokens.device).expand(batch, length)
            slot_lengths, slot_context, x = lengths, context, tokens

        if self.anchor_signal is not None:
            x = self.anchor_signal(x, anchors, positions)
        out = self.encoder(x, slot_lengths, slot_context)

        if isinstance(self.head, RelativePositionHead):
            is_context = (slot_context or full_context(slot_lengths, x.shape[1])).mask
            reference, true, has_reference = reference_pairs(
                positions, is_context, loss_mask, self.head.max_offset, generator
            )
            logits = self.head(out, reference)
            mask = loss_mask & has_reference
            num_classes = torch.full_like(lengths, self.head.num_classes)
        elif self.coarse > 1:
            true, num_classes = self.sampler.coarse(positions, lengths, self.coarse)
            logits = self.head(out, num_classes)
            mask = loss_mask
        else:
            logits = self.head(out, lengths)
            true, mask, num_classes = positions, loss_mask, lengths
        return PretextOutput(logits, true, mask, num_classes, context, positions, out)


def build_position_head(target: str, d_model: int, num_positions: int, max_offset: int = 8, coarse: int = 1):
    """The head for an hparams ``position_target``: "absolute" (a position among
    ``num_positions``, or with ``coarse`` a span among ``ceil(num_positions / coarse)``) or
    "relative" (an offset within ±``max_offset`` of a context token).

    >>> build_position_head("relative", 16, 100, max_offset=4).num_classes
    9
    >>> build_position_head("absolute", 16, 100, coarse=8).num_positions
    13
    >>> build_position_head("order", 16, 100)
    Traceback (most recent call last):
    ...
    ValueError: position_target must be one of ('absolute', 'relative'), got 'order'
    """
    if target == "absolute":
        return PositionHead(d_model, -(-num_positions // coarse))
    if target == "relative":
        return RelativePositionHead(d_model, max_offset)
    raise ValueError(f"position_target must be one of {TARGETS}, got {target!r}")
