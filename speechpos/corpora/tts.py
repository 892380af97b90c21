"""Offline text-to-speech: three Debian engines behind one interface, output as LibriSpeech FLAC.

A :class:`Voice` is one synthetic *speaker*: an engine, one of its voices, a pitch shift and a
speaking-rate factor. :func:`synthesize` renders a batch of sentences with one voice and writes
16 kHz mono 16-bit FLAC files through ``sox`` (resampling, pitch/tempo where the engine has no
control of its own, peak level, a little leading and trailing silence).

Engines (Debian packages): ``espeak-ng`` (formant synthesis, many accents x voice variants),
``flite`` (voices kal16, awb, rms, slt), ``festival`` with ``festvox-kallpc16k`` and
``festvox-kdlpc16k`` (diphone voices kal and ked; one festival process renders a whole batch).

Held out from training (``HELD_OUT_ENGINES``, the corpus's ``test-other`` split only):
``festival-hts``, festival with ``festvox-us-slt-hts`` (the HMM-based statistical parametric voice
``cmu_us_slt_arctic_hts``, 32 kHz: a synthesis method no training engine uses), and espeak-ng's
``en-us-nyc`` accent (``HELD_OUT_ESPEAK_ACCENTS``), which no training speaker reads with.

Example
-------
>>> v = Voice("espeak-ng", "en-gb-x-rp+m3", semitones=-1.5, speed=1.1)
>>> v.name
'espeak-ng/en-gb-x-rp+m3/st-1.5/x1.10'
>>> v.base_voice
'espeak-ng/en-gb-x-rp+m3'
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ENGINES = ("espeak-ng", "flite", "festival")
HELD_OUT_ENGINES = ("festival-hts",)

ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)
# Human-sounding espeak-ng voice variants (robotic, whispering and novelty variants left out).
ESPEAK_VARIANTS = tuple(
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 klatt klatt2 klatt3 klatt4 adam Alex Andy Annie "
    "aunty boris david ed edward Gene iven john linda max Michael Mike paul quincy rob robert "
    "steph travis victor zac grandma grandpa".split()
)
ESPEAK_DEFAULT_WPM = 175
# flite voices with their default mean F0 in Hz (None: the voice ignores int_f0_target_mean,
# so its pitch is shifted by sox instead).
FLITE_VOICES = {"kal16": 95.0, "awb": 125.0, "slt": 165.0, "rms": None}
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone")
HTS_VOICES = ("cmu_us_slt_arctic_hts",)
# An espeak-ng accent that the training speakers never use (see ESPEAK_ACCENTS).
HELD_OUT_ESPEAK_ACCENTS = ("en-us-nyc",)
VOICES = {
    "espeak-ng": tuple(f"{a}+{v}" for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS),
    "flite": tuple(FLITE_VOICES),
    "festival": FESTIVAL_VOICES,
    "festival-hts": HTS_VOICES,
}
# Rough speaking rates (transcript characters per second at speed 1.0), used to plan how many
# sentences fill a duration budget before anything is synthesised.
# Measured on the default corpus (pads excluded).
CHARS_PER_SECOND = {"espeak-ng": 18.2, "flite": 16.9, "festival": 15.2, "festival-hts": 16.0}
BINARIES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival", "festival-hts": "festival"}
DEBIAN_PACKAGES = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k",
    "festival-hts": "festival festvox-us-slt-hts",
}
# Files whose presence shows an engine's voices are installed (the binary alone is not enough).
VOICE_FILES = {"festival-hts": "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts"}


class SynthesisError(RuntimeError):
    """An engine or sox failed; the message names the command and the voice."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: engine + voice + pitch shift (semitones) + speaking-rate factor.

    ``level_db`` is the peak level of its recordings and ``pad_s`` the silence added at both
    ends: recording conditions that differ from speaker to speaker.
    """

    engine: str
    voice: str
    semitones: float = 0.0
    speed: float = 1.0
    level_db: float = -3.0
    pad_s: float = 0.1

    def __post_init__(self):
        if self.engine not in ENGINES + HELD_OUT_ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose from {ENGINES + HELD_OUT_ENGINES}")

    @property
    def base_voice(self) -> str:
        """Engine and voice without the pitch/speed setting."""
        return f"{self.engine}/{self.voice}"

    @property
    def name(self) -> str:
        """A readable unique name of the setting (used in SPEAKERS.TXT)."""
        return f"{self.base_voice}/st{self.semitones:g}/x{self.speed:.2f}"

    def chars_per_second(self) -> float:
        """Planned speaking rate of this voice in transcript characters per second."""
        return CHARS_PER_SECOND[self.engine] * self.speed


def available_engines(engines: Sequence[str] = ENGINES) -> list[str]:
    """The engines of ``engines`` whose programs (and voices) are installed (in the given order)."""
    return [e for e in engines if shutil.which(BINARIES[e])
            and (e not in VOICE_FILES or Path(VOICE_FILES[e]).exists())]


def missing_engine_hint(engines: Sequence[str]) -> str:
    """An installation hint for engines that are not installed."""
    pkgs = " ".join(DEBIAN_PACKAGES[e] for e in engines)
    return f"install the Debian packages: apt-get install {pkgs} (or run bash tools/setup/setup.sh)"


def _run(cmd: list[str], voice: Voice, stdin: str | None = None) -> None:
    """Run one command; raise SynthesisError with its stderr on failure."""
    try:
        subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True)
    except FileNotFoundError as err:
        raise SynthesisError(
            f"{voice.name}: program {cmd[0]!r} not found; {missing_engine_hint([voice.engine])}"
        ) from err
    except subprocess.CalledProcessError as err:
        raise SynthesisError(
            f"{voice.name}: command failed ({err.returncode}): {' '.join(cmd)[:300]}\n"
            f"{err.stderr.strip()[-1000:]}"
        ) from err


def _espeak(voice: Voice, texts: Sequence[str], raw: Sequence[Path]) -> None:
    pitch = min(99, max(0, round(50 + 6 * voice.semitones)))
    wpm = round(ESPEAK_DEFAULT_WPM * voice.speed)
    for text, path in zip(texts, raw, strict=True):
        cmd = ["espeak-ng", "-v", voice.voice, "-p", str(pitch), "-s", str(wpm)]
        _run([*cmd, "-w", str(path), "--", text], voice)


def _flite(voice: Voice, texts: Sequence[str], raw: Sequence[Path]) -> None:
    f0 = FLITE_VOICES[voice.voice]
    opts = ["--setf", f"duration_stretch={1.0 / voice.speed:.4f}"]
    if f0 is not None:
        opts += ["--setf", f"int_f0_target_mean={f0 * 2 ** (voice.semitones / 12):.2f}"]
    for text, path in zip(texts, raw, strict=True):
        _run(["flite", "-voice", voice.voice, *opts, "-t", text, "-o", str(path)], voice)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival(voice: Voice, texts: Sequence[str], raw: Sequence[Path]) -> None:
    lines = [f"(voice_{voice.voice})"]
    for text, path in zip(texts, raw, strict=True):
        lines.append(
            f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "
            f"{_scheme_string(str(path))} 'riff)"
        )
    script = Path(raw[0]).with_suffix(".scm")
    script.write_text("\n".join(lines) + "\n")
    _run(["festival", "-b", str(script)], voice)
    missing = [str(p) for p in raw if not Path(p).is_file()]
    if missing:
        raise SynthesisError(f"{voice.name}: festival wrote no audio for {missing[0]}")


def sox_effects(voice: Voice) -> list[str]:
    """The sox effects that turn an engine's output into this speaker's 16 kHz recording.

    >>> sox_effects(Voice("festival", "ked_diphone", semitones=2, speed=0.9, pad_s=0.2))
    ['pitch', '200', 'tempo', '-s', '0.9000', 'gain', '-n', '-3.0', 'rate', '-v', '16000', 'pad', '0.200', '0.200']
    """
    effects: list[str] = []
    festival = voice.engine in ("festival", "festival-hts")
    sox_pitch = festival or (
        voice.engine == "flite" and FLITE_VOICES[voice.voice] is None
    )
    if sox_pitch and voice.semitones:
        effects += ["pitch", f"{round(100 * voice.semitones)}"]
    if festival and voice.speed != 1.0:
        effects += ["tempo", "-s", f"{voice.speed:.4f}"]
    effects += ["gain", "-n", f"{voice.level_db:.1f}", "rate", "-v", str(SAMPLE_RATE)]
    if voice.pad_s > 0:
        effects += ["pad", f"{voice.pad_s:.3f}", f"{voice.pad_s:.3f}"]
    return effects


def synthesize(
    voice: Voice, texts: Sequence[str], flac_paths: Sequence[Path | str], workdir: Path | str
) -> None:
    """Render ``texts`` with ``voice`` into ``flac_paths`` (16 kHz mono 16-bit FLAC).

    ``workdir`` holds the engine's raw output; it must exist and be writable. Deterministic:
    the same voice and text give the same samples (sox runs without dither).
    """
    if len(texts) != len(flac_paths):
        raise ValueError("texts and flac_paths differ in length")
    if not texts:
        return
    workdir = Path(workdir)
    raw = [workdir / f"raw{i:05d}.wav" for i in range(len(texts))]
    {"espeak-ng": _espeak, "flite": _flite, "festival": _festival, "festival-hts": _festival}[voice.engine](
        voice, texts, raw
    )
    effects = sox_effects(voice)
    for src, dst in zip(raw, flac_paths, strict=True):
        cmd = ["sox", "-D", "-R", str(src), "-b", "16", "-c", "1", str(dst), *effects]
        _run(cmd, voice)
        src.unlink()
