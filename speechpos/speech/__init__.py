"""Speech parts on top of the position core: frame patches, unpositioned encoders, loading.

The data side (preparation, audio reading, pipelines) is :mod:`speechpos.speech.data`. The
names below are imported on first use, so that ``speechpos.speech.data``'s preparation, which
the offline corpus makers and the ``*_prepare.py`` scripts import, does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "CheckpointMismatchError": "speechpos.speech.model",
    "ConvolutionGate": "speechpos.speech.encoder",
    "FramePatchEmbedding": "speechpos.speech.patches",
    "SpeechEncoder": "speechpos.speech.model",
    "build_encoder": "speechpos.speech.encoder",
    "build_speech_encoder": "speechpos.speech.model",
    "load_encoder_state": "speechpos.speech.model",
    "set_convolution_mode": "speechpos.speech.encoder",
}

__all__ = [
    "CheckpointMismatchError",
    "ConvolutionGate",
    "FramePatchEmbedding",
    "SpeechEncoder",
    "build_encoder",
    "build_speech_encoder",
    "load_encoder_state",
    "set_convolution_mode",
]

if TYPE_CHECKING:
    from speechpos.speech.encoder import ConvolutionGate, build_encoder, set_convolution_mode
    from speechpos.speech.model import (
        CheckpointMismatchError,
        SpeechEncoder,
        build_speech_encoder,
        load_encoder_state,
    )
    from speechpos.speech.patches import FramePatchEmbedding


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
