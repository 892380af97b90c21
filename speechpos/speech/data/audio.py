"""Reading audio for the recipes, with errors that name the file and the problem.

Two readers share the same checks for missing, undecodable and too-short files:

* :func:`read_audio_checked` (training/evaluation manifests) is strict: a file with another
  sample rate or more than one channel is refused, so a corpus prepared at the wrong rate
  is never silently resampled during training.
* :func:`read_audio_converted` (inference: ``speechpos transcribe``, :mod:`speechpos.inference`)
  accepts any rate and channel count: it downmixes to mono (channel mean) and resamples
  with :func:`torchaudio.functional.resample`, logging (INFO) each file it converts.

Example
-------
>>> import tempfile, os, numpy as np, soundfile as sf
>>> path = os.path.join(tempfile.mkdtemp(), "a.flac")
>>> sf.write(path, np.zeros(8000, dtype="float32"), 8000)
>>> read_audio_checked(path, sample_rate=16000)
Traceback (most recent call last):
...
speechpos.speech.data.audio.AudioError: ...a.flac: sample rate is 8000 Hz, expected 16000 Hz
>>> read_audio_converted(path, sample_rate=16000).shape   # 1 s at 8 kHz -> 1 s at 16 kHz
torch.Size([16000])
"""

from __future__ import annotations

import logging
import os

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

logger = logging.getLogger(__name__)


class AudioError(ValueError):
    """An audio file is missing, unreadable, or not what the recipe expects."""


def _decode(path: str) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 array and sample rate of a file, or a clear AudioError."""
    if not os.path.isfile(path):
        raise AudioError(f"{path}: audio file not found")
    try:
        return sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from err


def _check_length(path: str, num_samples: int, sample_rate: int, min_samples: int) -> None:
    if num_samples < min_samples:
        raise AudioError(
            f"{path}: {num_samples} samples ({num_samples / sample_rate:.3f} s) is shorter than "
            f"one patch ({min_samples} samples)"
        )


def read_audio_checked(path: str, sample_rate: int = 16000, min_samples: int = 1) -> torch.Tensor:
    """Read a mono file as a float32 tensor, checking it exists, decodes, has the expected
    sample rate and at least ``min_samples`` samples (e.g. one patch of frames).

    Used by the training data pipeline: a wrong rate or a multi-channel file is an error
    (see :func:`read_audio_converted` for the converting reader of inference).
    """
    data, rate = _decode(path)
    if rate != sample_rate:
        raise AudioError(f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz")
    if data.shape[1] != 1:
        raise AudioError(f"{path}: {data.shape[1]} channels, expected mono")
    _check_length(path, data.shape[0], rate, min_samples)
    return torch.from_numpy(data[:, 0].copy())


def read_audio_converted(path: str, sample_rate: int = 16000, min_samples: int = 1) -> torch.Tensor:
    """Read any audio file libsndfile decodes as a mono float32 tensor at ``sample_rate``.

    Several channels are averaged into one; another sample rate is converted with
    :func:`torchaudio.functional.resample` (band-limited sinc interpolation). Each converted
    file is logged at INFO level with its original rate and channel count. Missing and
    undecodable files raise the same :class:`AudioError` as :func:`read_audio_checked`, and
    so does a file shorter than ``min_samples`` (counted after resampling).

    >>> import tempfile, os, numpy as np, soundfile as sf
    >>> path = os.path.join(tempfile.mkdtemp(), "stereo44k.wav")
    >>> sf.write(path, np.ones((44100, 2), dtype="float32") * [0.2, 0.4], 44100)
    >>> wav = read_audio_converted(path, sample_rate=16000)
    >>> wav.shape, round(float(wav[8000]), 3)   # 1 s, mean of the two channels
    (torch.Size([16000]), 0.3)
    >>> read_audio_converted(path, min_samples=32000)
    Traceback (most recent call last):
    ...
    speechpos.speech.data.audio.AudioError: ...stereo44k.wav: 16000 samples (1.000 s) is shorter than one
    patch (32000 samples)
    """
    data, rate = _decode(path)
    channels = data.shape[1]
    wav = torch.from_numpy(data.mean(axis=1) if channels > 1 else data[:, 0].copy())
    if rate != sample_rate and wav.numel():  # (resample cannot take an empty signal)
        wav = AF.resample(wav, orig_freq=rate, new_freq=sample_rate)
    if rate != sample_rate or channels != 1:
        logger.info(
            "%s: converted from %d Hz, %d channel(s) to %d Hz mono",
            path, rate, channels, sample_rate,
        )
    _check_length(path, wav.shape[0], sample_rate, min_samples)
    return wav


def min_samples_for_patch(patch_frames: int, hop_ms: float = 10.0, sample_rate: int = 16000) -> int:
    """Samples needed for one patch of ``patch_frames`` filterbank frames.

    >>> min_samples_for_patch(4)
    640
    """
    return int(patch_frames * hop_ms * sample_rate / 1000)
