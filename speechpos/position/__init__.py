"""The modality-agnostic position-prediction core that speech and vision both use.

- :mod:`~speechpos.position.context`: which tokens are attention context (1-D uniform/span,
  2-D block), respecting padding.
- :mod:`~speechpos.position.encoder`: SpeechBrain encoders run with keys/values gathered to
  the context tokens.
- :mod:`~speechpos.position.head`, :mod:`~speechpos.position.loss`,
  :mod:`~speechpos.position.metrics`: the linear position head with length masking, the
  cross-entropy with optional Gaussian smoothing, accuracy and position error.
- :mod:`~speechpos.position.embedding`: zero-initialised position embeddings for fine-tuning.
"""

from speechpos.position.context import (
    Context,
    ContextSampler,
    context_from_mask,
    full_context,
    sample_context,
    sample_context_2d,
    valid_mask,
)
from speechpos.position.embedding import PositionEmbedding
from speechpos.position.encoder import ContextAttention, ContextEncoder, attach_context_attention
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

__all__ = [
    "Context",
    "ContextSampler",
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
    "loss_token_mask",
    "position_accuracy",
    "position_error",
    "position_loss",
    "sample_context",
    "sample_context_2d",
    "smoothed_targets",
    "valid_mask",
]
