"""Speech parts on top of the position core: frame patches, unpositioned encoders, loading."""

from speechpos.speech.encoder import ConvolutionGate, build_encoder, set_convolution_mode
from speechpos.speech.model import (
    CheckpointMismatchError,
    SpeechEncoder,
    build_speech_encoder,
    load_encoder_state,
)
from speechpos.speech.patches import FramePatchEmbedding

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
