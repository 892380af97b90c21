"""Make a keyword-spotting corpus offline, in the exact layout of Google Speech Commands.

Layout written under ``out`` (what ``recipes/SpeechCommands/speech_commands_prepare.py``
reads, so the recipes run unchanged on this corpus and on the real dataset)::

    <out>/<word>/<speaker>_nohash_<n>.wav     one folder per word (v1's 30 words), 16 kHz mono
                                              16-bit WAV, 1 s (a few shorter, as in the real set)
    <out>/_background_noise_/*.wav            long noise files: white, pink, brown, hum, babble
    <out>/validation_list.txt                 paths relative to <out>, chosen by the hash of the
    <out>/testing_list.txt                    speaker id (:func:`which_set`), as the real lists
    <out>/testing_other_list.txt              only with ``held_out_engine``: every clip of the
                                              speakers of that engine (none of them trains)
    <out>/SPEAKERS.txt                        speaker id -> voice setting
    <out>/kws_corpus.json                     the settings; a finished corpus is not remade

Every speaker is one text-to-speech voice setting (engine + voice + pitch + speaking rate,
:class:`speechpos.corpora.tts.Voice`) with its own 8-hex-digit id, so the hash split keeps every
voice setting of the test list out of training. Repetition ``n`` of a word is the same voice
slightly faster or slower. Words sit near the middle of the 1-s clip (as in the real set, cut
around the loudest second), with a random jitter of up to 0.1 s, over faint noise.

With ``held_out_engine`` (e.g. ``"flite"``) the speakers of the three usual lists use the other
engines only, and ``OTHER_SPEAKERS[size]`` more speakers of the held-out engine are made and
listed in ``testing_other_list.txt``: a test of voices from an engine no training clip came
from (the preparation writes it as ``test_other.csv`` and keeps it out of training; the real
dataset has no such list and is prepared as before).

Example
-------
>>> which_set("yes/0a7c2a8d_nohash_0.wav") == which_set("no/0a7c2a8d_nohash_3.wav")
True
>>> speaker_of("yes/0a7c2a8d_nohash_0.wav")
'0a7c2a8d'
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from speechpos.corpora.tts import VOICES, Voice, available_engines, synthesize
from speechpos.speech.data.speech_commands import (
    CORE_WORDS,
    NOISE_FOLDER,
    TESTING_LIST,
    TESTING_OTHER_LIST,
    VALIDATION_LIST,
    speaker_of,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE
OTHER_WORDS_V1 = (
    "bed bird cat dog eight five four happy house marvin nine one seven sheila six three tree "
    "two wow zero".split()
)
WORDS_V1 = tuple(sorted(CORE_WORDS + tuple(OTHER_WORDS_V1)))
WORDS_V2_EXTRA = ("backward", "follow", "forward", "learn", "visual")
WORDS_V2 = tuple(sorted(WORDS_V1 + WORDS_V2_EXTRA))
MANIFEST = "kws_corpus.json"
# Speech Commands' split rule (its README and TensorFlow's input_data.which_set).
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1
JITTER = SAMPLE_RATE // 10


def which_set(path: str, validation_percentage: float = 10.0, testing_percentage: float = 10.0) -> str:
    """``"validation"``, ``"testing"`` or ``"training"``, from the sha1 of the speaker id, as
    the real Speech Commands lists were made (so a speaker's clips all fall in one split)."""
    hashed = hashlib.sha1(speaker_of(path).encode("utf-8")).hexdigest()
    percentage = (int(hashed, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


@dataclass(frozen=True)
class KwsSize:
    """How big a corpus is: speakers, repetitions of each word, noise file length.

    ``held_out`` speakers go to each of the validation and testing lists (their ids are drawn
    until the hash rule puts that many in each), the rest to training.
    """

    speakers: int
    repetitions: int
    noise_seconds: float
    held_out: int
    short_fraction: float = 0.05


SIZES = {
    "tiny": KwsSize(speakers=16, repetitions=1, noise_seconds=12.0, held_out=2),
    "default": KwsSize(speakers=160, repetitions=2, noise_seconds=60.0, held_out=16),
}
# Speakers of the held-out engine (``held_out_engine``), beside the size's own.
OTHER_SPEAKERS = {"tiny": 2, "default": 24}
ENGINE_WEIGHTS = {"espeak-ng": 6, "flite": 2, "festival": 1}


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: id, voice setting, split, per-speaker recording noise level."""

    id: str
    voice: Voice
    split: str
    snr_db: float


def _speaker_ids(rng: random.Random, quota: dict[str, int], taken=()) -> list[tuple[str, str]]:
    """(id, split) pairs: ids drawn until each split has its quota under the hash rule."""
    quota, chosen, seen = dict(quota), [], set(taken)
    while any(quota.values()):
        sid = f"{rng.getrandbits(32):08x}"
        split = which_set(f"{sid}_nohash_0.wav")
        if quota.get(split, 0) > 0 and sid not in seen:
            quota[split] -= 1
            chosen.append((sid, split))
            seen.add(sid)
    return chosen


def plan_speakers(size: KwsSize, seed: int, engines: list[str], held_out_engine: str | None = None,
                  other_speakers: int = 0) -> list[Speaker]:
    """Deterministic speakers: a random voice of a random engine, pitch and rate each.

    With ``held_out_engine``, the size's speakers use the other engines and ``other_speakers``
    more, of that engine only, get the split ``testing_other`` (their ids hash to testing, so a
    tool that knows only the hash rule never trains on them either).

    >>> sp = plan_speakers(SIZES["tiny"], 0, ["espeak-ng"])
    >>> len(sp), sorted({s.split for s in sp})
    (16, ['testing', 'training', 'validation'])
    >>> sp = plan_speakers(SIZES["tiny"], 0, ["espeak-ng", "flite"], "flite", 2)
    >>> sorted({(s.split == "testing_other", s.voice.engine) for s in sp})
    [(False, 'espeak-ng'), (True, 'flite')]
    """
    if held_out_engine is not None:
        if held_out_engine not in engines:
            raise ValueError(f"held_out_engine {held_out_engine!r} is not among the engines {engines}")
        if len(engines) < 2:
            raise ValueError(f"holding out {held_out_engine!r} leaves no engine to train on")
    if size.speakers - 2 * size.held_out < 1:
        raise ValueError(f"{size}: needs more speakers than 2 x held_out")
    rng = random.Random(seed)
    main = [e for e in engines if e != held_out_engine]
    ids = _speaker_ids(rng, {"validation": size.held_out, "testing": size.held_out,
                             "training": size.speakers - 2 * size.held_out})
    plan = [(sid, split, main) for sid, split in ids]
    if held_out_engine is not None:
        # Their own random stream: the other speakers stay as they are without them.
        other = _speaker_ids(random.Random(f"{seed}-{held_out_engine}"), {"testing": other_speakers},
                             taken=[sid for sid, _ in ids])
        plan += [(sid, "testing_other", [held_out_engine]) for sid, _ in other]
    speakers = []
    for sid, split, pool in plan:
        engine = pool[0] if len(pool) == 1 else rng.choices(pool, weights=[ENGINE_WEIGHTS[e] for e in pool])[0]
        voice = Voice(
            engine,
            rng.choice(VOICES[engine]),
            semitones=round(rng.uniform(-4.0, 4.0), 1),
            speed=round(rng.uniform(0.8, 1.25), 2),
            level_db=round(rng.uniform(-12.0, -1.0), 1),
            pad_s=0.0,
        )
        speakers.append(Speaker(sid, voice, split, round(rng.uniform(15.0, 40.0), 1)))
    return speakers


def fit_to_clip(wav: np.ndarray, rng: np.random.Generator, short: bool) -> np.ndarray:
    """Trim the silence around a word and place it near the middle of a 1-s clip; a
    ``short`` clip keeps only the word and a little margin (shorter than 1 s, as some real
    clips are).

    >>> clip = fit_to_clip(np.ones(4000, dtype="float32"), np.random.default_rng(0), short=False)
    >>> clip.shape, float(clip.sum())
    ((16000,), 4000.0)
    """
    loud = np.flatnonzero(np.abs(wav) > 0.02 * (np.abs(wav).max() + 1e-9))
    if loud.size:
        wav = wav[loud[0] : loud[-1] + 1]
    if len(wav) > CLIP_SAMPLES:  # keep the middle second
        start = (len(wav) - CLIP_SAMPLES) // 2
        return wav[start : start + CLIP_SAMPLES].astype("float32")
    if short:
        margin = min(CLIP_SAMPLES - len(wav), SAMPLE_RATE // 10)
        out = np.zeros(len(wav) + margin, dtype="float32")
        out[margin // 2 : margin // 2 + len(wav)] = wav
        return out
    out = np.zeros(CLIP_SAMPLES, dtype="float32")
    # Centred with a jitter of up to 0.1 s: the real clips are the loudest second around a word.
    centre = (CLIP_SAMPLES - len(wav)) // 2 + int(rng.integers(-JITTER, JITTER + 1))
    offset = min(max(centre, 0), CLIP_SAMPLES - len(wav))
    out[offset : offset + len(wav)] = wav
    return out


def coloured_noise(num: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown), peak 1.

    >>> x = coloured_noise(16000, 1.0, np.random.default_rng(0))
    >>> x.shape, round(float(np.abs(x).max()), 3)
    ((16000,), 1.0)
    """
    spectrum = np.fft.rfft(rng.standard_normal(num))
    freqs = np.fft.rfftfreq(num)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=num)
    noise -= noise.mean()
    return (noise / np.abs(noise).max()).astype("float32")


def hum(num: int, rng: np.random.Generator, mains: float = 50.0) -> np.ndarray:
    """Mains hum: a fundamental and odd harmonics with a slow wobble and a little hiss."""
    t = np.arange(num) / SAMPLE_RATE
    wobble = 1.0 + 0.2 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.28))
    x = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.28)) / k for k in (1, 3, 5, 7))
    x = x * wobble + 0.05 * rng.standard_normal(num)
    return (x / np.abs(x).max()).astype("float32")


def babble(num: int, speakers: list[Speaker], seed: int, workdir: Path) -> np.ndarray:
    """Several voices talking at once: random word strings synthesised and summed."""
    rng = random.Random(seed)
    out = np.zeros(num, dtype="float32")
    words = list(WORDS_V2) + "the a of and to in is that it was for on are with as".split()
    for k, speaker in enumerate(rng.sample(speakers, min(5, len(speakers)))):
        texts = [" ".join(rng.choices(words, k=12)) for _ in range(max(1, int(num / SAMPLE_RATE / 3)))]
        paths = [workdir / f"babble{k}_{i}.wav" for i in range(len(texts))]
        synthesize(speaker.voice, texts, paths, workdir)
        stream = np.concatenate([sf.read(p, dtype="float32")[0] for p in paths])
        stream = np.resize(stream, num)  # repeats to fill the length
        out += np.roll(stream, rng.randrange(num))
    return (out / (np.abs(out).max() + 1e-9)).astype("float32")


def write_noise_files(out: Path, size: KwsSize, seed: int, speakers: list[Speaker]) -> None:
    """The ``_background_noise_`` folder: white, pink, brown noise, hum and babble."""
    folder = out / NOISE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    num = int(size.noise_seconds * SAMPLE_RATE)
    noises = {
        "white_noise": coloured_noise(num, 0.0, rng),
        "pink_noise": coloured_noise(num, 1.0, rng),
        "brown_noise": coloured_noise(num, 2.0, rng),
        "hum": hum(num, rng),
    }
    with tempfile.TemporaryDirectory() as tmp:
        noises["babble"] = babble(num, speakers, seed, Path(tmp))
    for name, wav in noises.items():
        sf.write(folder / f"{name}.wav", 0.5 * wav, SAMPLE_RATE, subtype="PCM_16")
    (folder / "README.md").write_text(
        "Synthetic background noise (speechpos.corpora.speech_commands): coloured noise, hum, "
        "babble.\n"
    )


def _render_speaker(args: tuple[Speaker, int, KwsSize, int, str]) -> list[str]:
    """Synthesise every word ``repetitions`` times for one speaker; return relative paths."""
    speaker, index, size, seed, out = args
    rng = np.random.default_rng([seed, index])
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rep in range(size.repetitions):
            factor = 1.0 if rep == 0 else float(rng.uniform(0.9, 1.1))
            voice = Voice(**{**asdict(speaker.voice), "speed": round(speaker.voice.speed * factor, 3)})
            raw = [tmp / f"{w}_{rep}.wav" for w in WORDS_V1]
            synthesize(voice, list(WORDS_V1), raw, tmp)
            for word, path in zip(WORDS_V1, raw, strict=True):
                wav = sf.read(path, dtype="float32")[0]
                clip = fit_to_clip(wav, rng, short=bool(rng.random() < size.short_fraction))
                level = np.sqrt(np.mean(clip**2) + 1e-12) / 10 ** (speaker.snr_db / 20)
                clip = np.clip(clip + level * rng.standard_normal(len(clip)), -1, 1)
                rel = f"{word}/{speaker.id}_nohash_{rep}.wav"
                sf.write(Path(out) / rel, clip.astype("float32"), SAMPLE_RATE, subtype="PCM_16")
                written.append(rel)
    return written


def _run_jobs(work: list, jobs: int):
    if jobs <= 1:
        yield from map(_render_speaker, work)
        return
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        yield from pool.imap_unordered(_render_speaker, work)


def foreign_kws_corpus(out: str | Path) -> bool:
    """A Speech Commands-layout folder that :func:`make_kws_corpus` did not make (Google's, or
    one's own): a tool pointed at it uses it as it is and never writes into it.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> foreign_kws_corpus(root), (root / "yes").mkdir(), foreign_kws_corpus(root)
    (False, None, True)
    """
    out = Path(out)
    return not (out / MANIFEST).is_file() and any((out / word).is_dir() for word in WORDS_V2)


def _finished(out: Path, settings: dict, overwrite: bool) -> bool:
    manifest = out / MANIFEST
    if manifest.is_file() and not overwrite:
        if json.loads(manifest.read_text()).get("settings") == settings:
            return True
        raise FileExistsError(
            f"{manifest} was made with other settings; pass --overwrite to remake the corpus"
        )
    words = [w for w in WORDS_V2 if (out / w).exists()]
    if words and not manifest.is_file():
        raise FileExistsError(
            f"{out / words[0]} exists and was not made by make_kws_corpus; refusing to overwrite "
            "it (choose another --out)"
        )
    for name in [*words, NOISE_FOLDER]:
        if (out / name).exists():
            shutil.rmtree(out / name)
    manifest.unlink(missing_ok=True)
    return False


def make_kws_corpus(
    out: str | Path,
    size: str = "default",
    seed: int = 1234,
    jobs: int = 2,
    engines: list[str] | None = None,
    overwrite: bool = False,
    held_out_engine: str | None = None,
) -> Path:
    """Write a Speech Commands-layout corpus to ``out`` (see the module docstring).

    Deterministic from ``seed``; a finished corpus with the same settings is kept as it is.
    ``held_out_engine`` adds ``testing_other_list.txt`` (see the module docstring).
    Returns ``out``.
    """
    out = Path(out)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    spec = SIZES[size]
    engines = available_engines(engines or ["espeak-ng", "flite", "festival"])
    if not engines:
        raise RuntimeError("no TTS engine installed; run bash tools/setup/setup.sh (espeak-ng, flite, festival)")
    settings = {"size": size, "seed": seed, "engines": engines, **asdict(spec)}
    other_speakers = OTHER_SPEAKERS[size] if held_out_engine else 0
    if held_out_engine:
        settings.update(held_out_engine=held_out_engine, other_speakers=other_speakers)
    if _finished(out, settings, overwrite):
        logger.info("%s: corpus already made with these settings, kept", out)
        return out
    start = time.perf_counter()
    speakers = plan_speakers(spec, seed, engines, held_out_engine, other_speakers)
    for word in WORDS_V1:
        (out / word).mkdir(parents=True, exist_ok=True)
    work = [(s, i, spec, seed, str(out)) for i, s in enumerate(speakers)]
    paths = sorted(p for written in _run_jobs(work, jobs) for p in written)
    # Babble from the training engines' voices only.
    write_noise_files(out, spec, seed, [s for s in speakers if s.split != "testing_other"])
    split_of = {s.id: s.split for s in speakers}
    lists = [(VALIDATION_LIST, "validation"), (TESTING_LIST, "testing")]
    if held_out_engine:
        lists.append((TESTING_OTHER_LIST, "testing_other"))
    for name, split in lists:
        (out / name).write_text("".join(f"{p}\n" for p in paths if split_of[speaker_of(p)] == split))
    (out / "SPEAKERS.txt").write_text(
        "".join(f"{s.id} | {s.split} | {s.voice.name}\n" for s in speakers)
    )
    summary = {
        "settings": settings,
        "clips": len(paths),
        "speakers": {k: sum(s.split == k for s in speakers)
                     for k in ("training", "validation", "testing", "testing_other")},
        "wall_s": round(time.perf_counter() - start, 1),
    }
    (out / MANIFEST).write_text(json.dumps(summary, indent=1))
    logger.info("%s: %d clips in %.0f s", out, len(paths), summary["wall_s"])
    return out


def expected_clips(size: str, held_out_engine: str | None = None) -> int:
    """Number of word clips a size makes.

    >>> expected_clips("tiny"), expected_clips("tiny", "flite")
    (480, 540)
    """
    spec = SIZES[size]
    speakers = spec.speakers + (OTHER_SPEAKERS[size] if held_out_engine else 0)
    return speakers * spec.repetitions * len(WORDS_V1)


__all__ = [
    "CORE_WORDS", "KwsSize", "OTHER_SPEAKERS", "SIZES", "Speaker", "WORDS_V1", "WORDS_V2", "coloured_noise",
    "expected_clips", "fit_to_clip", "hum", "make_kws_corpus", "plan_speakers",
    "speaker_of", "which_set",
]
