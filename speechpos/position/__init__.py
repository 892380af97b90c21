"""The modality-agnostic position-prediction core that speech and vision both use.

- :mod:`~speechpos.position.context`: which tokens are attention context (1-D uniform/span,
  2-D block), respecting padding.
- :mod:`~speechpos.position.encoder`: SpeechBrain encoders run with keys/values gathered to
  the context tokens; ``gather_tokens``/``scatter_tokens`` take a context out of a sequence
  and put it back (the masked-prediction engine that drops tokens uses them too).
- :mod:`~speechpos.position.head`, :mod:`~speechpos.position.loss`,
  :mod:`~speechpos.position.metrics`: the linear position head with length masking, the
  cross-entropy with optional Gaussian smoothing, accuracy and position error.
- :mod:`~speechpos.position.embedding`: zero-initialised position embeddings for fine-tuning.
- :mod:`~speechpos.position.anchors`, :mod:`~speechpos.position.relative`,
  :mod:`~speechpos.position.queries`: the pretext's variants (DropPos-style anchors, relative
  offset targets, only the context and a sample of targets through the encoder), put together
  with the encoder and head by :class:`~speechpos.position.pretext.PositionPretext`.
"""

from speechpos.position.anchors import AnchorSignal, sample_anchors
from speechpos.position.context import (
    Context,
    ContextSampler,
    GridContextSampler,
    context_from_mask,
    full_context,
    sample_context,
    sample_context_2d,
    valid_mask,
)
from speechpos.position.embedding import PositionEmbedding
from speechpos.position.encoder import (
    ContextAttention,
    ContextEncoder,
    attach_context_attention,
    gather_tokens,
    scatter_tokens,
)
from speechpos.position.head import PositionHead
from speechpos.position.layout import PositionLayout
from speechpos.position.loss import (
    PositionLoss,
    SigmaSchedule,
    attentive_token_weights,
    loss_token_mask,
    position_loss,
    smoothed_targets,
)
from speechpos.position.metrics import PositionStats, position_accuracy, position_error
from speechpos.position.pretext import PositionPretext, PretextOutput, build_position_head
from speechpos.position.queries import QuerySet, select_queries
from speechpos.position.relative import RelativePositionHead, reference_pairs

__all__ = [
    "AnchorSignal",
    "PositionPretext",
    "PretextOutput",
    "QuerySet",
    "RelativePositionHead",
    "build_position_head",
    "reference_pairs",
    "sample_anchors",
    "select_queries",
    "Context",
    "ContextSampler",
    "GridContextSampler",
    "ContextAttention",
    "ContextEncoder",
    "PositionEmbedding",
    "PositionHead",
    "PositionLayout",
    "PositionLoss",
    "PositionStats",
    "SigmaSchedule",
    "attach_context_attention",
    "attentive_token_weights",
    "context_from_mask",
    "full_context",
    "gather_tokens",
    "scatter_tokens",
    "loss_token_mask",
    "position_accuracy",
    "position_error",
    "position_loss",
    "sample_context",
    "sample_context_2d",
    "smoothed_targets",
    "valid_mask",
]
