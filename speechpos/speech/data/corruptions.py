"""Noise and room impulse responses made by the project, for SpeechBrain's ``AddNoise`` and
``AddReverb`` (``speechbrain.augment.time_domain``), which read them from CSV files.

* Coloured noise: Gaussian noise shaped to a power spectrum ``1 / f^beta`` (white 0, pink 1,
  brown 2, blue -1).
* Babble: the sum of 3 to 6 utterances of the *training* set (so of training voices only, never
  a dev or test voice), each scaled to the same loudness.
* Room impulse responses: a direct path, a few early reflections in the first 50 ms, and a
  diffuse tail of Gaussian noise decaying exponentially with a reverberation time RT60 drawn in
  0.2-0.9 s at a direct-to-reverberant ratio drawn in -3..+12 dB (the usual statistical model of
  a room; no geometry).

:func:`make_corruptions` writes them once into a folder (16 kHz FLAC) with ``noise.csv`` and
``rirs.csv`` in the layout SpeechBrain's CSV readers take (``ID, duration, wav, wav_format,
wav_opts``); a marker file keeps a second call from making them again.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = coloured_noise(16000, beta=1.0, rng=rng)
>>> x.shape, round(float(np.sqrt(np.mean(x ** 2))), 3)
((16000,), 0.1)
>>> rir = room_impulse_response(rt60=0.5, drr_db=3.0, rng=rng)
>>> int(np.argmax(np.abs(rir))), float(rir.max())
(0, 1.0)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0}
MARKER = "corruptions.json"


def coloured_noise(n: int, beta: float, rng: np.random.Generator, rms: float = 0.1) -> np.ndarray:
    """``n`` samples of Gaussian noise with power spectrum ``1 / f^beta``, scaled to ``rms``."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (beta / 2), n)
    return (rms * noise / np.sqrt(np.mean(noise ** 2))).astype(np.float32)


def babble(utterances: Sequence[np.ndarray], n: int, rng: np.random.Generator, rms: float = 0.1) -> np.ndarray:
    """``n`` samples of babble: the utterances (each looped to ``n`` samples from a random
    start, scaled to the same loudness) summed, scaled to ``rms``.

    >>> rng = np.random.default_rng(0)
    >>> b = babble([np.ones(10), -np.ones(3)], 8, rng)
    >>> b.shape
    (8,)
    """
    mix = np.zeros(n, dtype=np.float64)
    for utt in utterances:
        loud = utt / (np.sqrt(np.mean(utt ** 2)) + 1e-9)
        start = int(rng.integers(len(loud)))
        mix += np.resize(np.roll(loud, -start), n)
    return (rms * mix / (np.sqrt(np.mean(mix ** 2)) + 1e-9)).astype(np.float32)


def room_impulse_response(rt60: float, drr_db: float, rng: np.random.Generator,
                          sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A simulated RIR: direct path 1.0 at sample 0, 3-8 early reflections (2-50 ms), and an
    exponentially decaying Gaussian tail (-60 dB after ``rt60`` s) whose energy is ``drr_db``
    below the direct path's; ``rt60`` seconds long."""
    n = max(int(rt60 * sample_rate), 64)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    tail[: int(0.002 * sample_rate)] = 0.0
    for _ in range(int(rng.integers(3, 9))):
        k = int(rng.uniform(0.002, 0.05) * sample_rate)
        if k < n:
            tail[k] += rng.choice([-1, 1]) * rng.uniform(0.2, 0.7) * np.exp(-6.9078 * t[k] / rt60)
    tail *= np.sqrt(10 ** (-drr_db / 10) / (np.sum(tail ** 2) + 1e-12))
    rir = np.clip(tail, -0.99, 0.99)
    rir[0] = 1.0
    return rir.astype(np.float32)


def _write_csv(path: Path, rows: list[tuple[str, float, Path]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "wav", "wav_format", "wav_opts"])
        for uid, duration, wav in rows:
            w.writerow([uid, f"{duration:.3f}", str(wav), "flac", ""])


def make_corruptions(folder: str | Path, train_csv: str | Path, seed: int = 1234, n_coloured: int = 16,
                     n_babble: int = 24, n_rirs: int = 40, seconds: float = 10.0) -> dict[str, Path]:
    """Write coloured noise, babble of the training utterances of ``train_csv`` and simulated
    RIRs into ``folder`` with ``noise.csv`` and ``rirs.csv``; done once for the same settings.
    Returns ``{"noise": csv, "rirs": csv}``."""
    folder = Path(folder)
    settings = {"train_csv": str(train_csv), "seed": seed, "n_coloured": n_coloured, "n_babble": n_babble,
                "n_rirs": n_rirs, "seconds": seconds}
    out = {"noise": folder / "noise.csv", "rirs": folder / "rirs.csv"}
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == settings and all(p.is_file() for p in out.values()):
        return out
    (folder / "noise").mkdir(parents=True, exist_ok=True)
    (folder / "rirs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    with open(train_csv, newline="", encoding="utf-8") as f:
        wavs = [row["wav"] for row in csv.DictReader(f)]
    if not wavs:
        raise ValueError(f"{train_csv}: no utterance to make babble from")
    noise_rows = []
    colours = list(COLOURS.items())
    for i in range(n_coloured):
        name, beta = colours[i % len(colours)]
        path = folder / "noise" / f"{name}_{i:03d}.flac"
        sf.write(path, coloured_noise(n, beta, rng), SAMPLE_RATE)
        noise_rows.append((path.stem, seconds, path))
    for i in range(n_babble):
        picks = rng.choice(len(wavs), size=min(len(wavs), int(rng.integers(3, 7))), replace=False)
        path = folder / "noise" / f"babble_{i:03d}.flac"
        sf.write(path, babble([sf.read(wavs[k], dtype="float32")[0] for k in picks], n, rng), SAMPLE_RATE)
        noise_rows.append((path.stem, seconds, path))
    rir_rows = []
    for i in range(n_rirs):
        rt60 = float(rng.uniform(0.2, 0.9))
        rir = room_impulse_response(rt60, float(rng.uniform(-3.0, 12.0)), rng)
        path = folder / "rirs" / f"rir_{i:03d}_rt{int(1000 * rt60)}ms.flac"
        sf.write(path, 0.9 * rir, SAMPLE_RATE)  # 16-bit FLAC holds up to 1 - 2^-15
        rir_rows.append((path.stem, len(rir) / SAMPLE_RATE, path))
    _write_csv(out["noise"], noise_rows)
    _write_csv(out["rirs"], rir_rows)
    marker.write_text(json.dumps(settings))
    return out
