"""Use a trained run: transcribe audio or extract encoder features
(:mod:`speechpos.inference.asr`), or say which keyword a clip holds
(:mod:`speechpos.inference.keyword`). Audio of any sample rate and channel count is converted
to the run's 16 kHz mono. :mod:`speechpos.inference.export` writes a run as a SpeechBrain model
folder (``EncoderASR`` loads it) and :mod:`speechpos.inference.transcribe` transcribes many files.
The ``speechpos`` command line (:mod:`speechpos.cli`) runs them all.

>>> from speechpos.inference import KeywordSpotter, SpeechModel
"""

from speechpos.inference.asr import AUDIO_EXTENSIONS, RunError, SpeechModel, list_audio
from speechpos.inference.keyword import KeywordSpotter, loudest_window

__all__ = [
    "AUDIO_EXTENSIONS",
    "KeywordSpotter",
    "RunError",
    "SpeechModel",
    "list_audio",
    "loudest_window",
]
