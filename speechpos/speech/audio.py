"""Reading audio for the recipes, with errors that name the file and the problem.

Example
-------
>>> import tempfile, os, numpy as np, soundfile as sf
>>> path = os.path.join(tempfile.mkdtemp(), "a.flac")
>>> sf.write(path, np.zeros(8000, dtype="float32"), 8000)
>>> read_audio_checked(path, sample_rate=16000)
Traceback (most recent call last):
...
speechpos.speech.audio.AudioError: ...a.flac: sample rate is 8000 Hz, expected 16000 Hz
"""

from __future__ import annotations

import os

import soundfile as sf
import torch


class AudioError(ValueError):
    """An audio file is missing, unreadable, or not what the recipe expects."""


def read_audio_checked(path: str, sample_rate: int = 16000, min_samples: int = 1) -> torch.Tensor:
    """Read a mono file as a float32 tensor, checking it exists, decodes, has the expected
    sample rate and at least ``min_samples`` samples (e.g. one patch of frames)."""
    if not os.path.isfile(path):
        raise AudioError(f"{path}: audio file not found")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from err
    if rate != sample_rate:
        raise AudioError(f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz")
    if data.shape[1] != 1:
        raise AudioError(f"{path}: {data.shape[1]} channels, expected mono")
    if data.shape[0] < min_samples:
        raise AudioError(
            f"{path}: {data.shape[0]} samples ({data.shape[0] / rate:.3f} s) is shorter than "
            f"one patch ({min_samples} samples)"
        )
    return torch.from_numpy(data[:, 0].copy())


def min_samples_for_patch(patch_frames: int, hop_ms: float = 10.0, sample_rate: int = 16000) -> int:
    """Samples needed for one patch of ``patch_frames`` filterbank frames.

    >>> min_samples_for_patch(4)
    640
    """
    return int(patch_frames * hop_ms * sample_rate / 1000)
