"""Google Speech Commands (v1 or v2) preparation: CSV manifests for keyword spotting.

Reads the real dataset's layout exactly: one folder per word of 16 kHz WAVs named
``<speaker>_nohash_<n>.wav``, ``_background_noise_/`` (long WAVs), and ``validation_list.txt``
/ ``testing_list.txt`` (paths relative to the root); training is every other clip.

Tasks:

* ``"12"`` (the paper's, TC-ResNet's and TensorFlow's): the ten words yes no up down left right
  on off stop go, plus ``_silence_`` (1-s clips cut from the background-noise files: the first
  80 % of every file for training, the next 10 % for validation, the last 10 % for testing)
  and ``_unknown_`` (every other word). As TensorFlow's ``input_data.py``, each split holds
  ``silence_percentage`` % and ``unknown_percentage`` % as many silence and unknown clips as
  keyword clips (unknown clips drawn at random; ``unknown_percentage: null`` keeps them all).
* ``"all"``: one class per word folder (30 on v1, 35 on v2), no silence or unknown.

Each split's CSV has the columns ``ID, duration, wav, start, stop, spk_id, word, label``
(``start``/``stop`` in samples: a silence clip is a 1-s window of a noise file). Clips shorter
than 1 s are zero-padded to 1 s when read (:mod:`speechpos.speech.data.keyword_data`).

Example
-------
>>> label_of("yes", "12"), label_of("marvin", "12"), label_of("marvin", "all")
('yes', '_unknown_', 'marvin')
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf

from speechpos.speech.data.librispeech import DataPreparationError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# The dataset's layout, which the offline corpus maker (speechpos.corpora.speech_commands)
# writes too.
CORE_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
NOISE_FOLDER = "_background_noise_"
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
# Optional (not in the real dataset): a second test list, e.g. voices of an engine no training
# clip came from (tools/data/make_kws_corpus.py --held-out-engine); prepared as test_other.csv.
TESTING_OTHER_LIST = "testing_other_list.txt"
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
TASKS = ("12", "all")
SPLITS = ("train", "valid", "test")
OPTS_FILE = "speech_commands_prepare.json"
# Where in each background-noise file a split's silence clips are cut (fractions of its length).
NOISE_REGIONS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0), "test_other": (0.9, 1.0)}


def speaker_of(path: str) -> str:
    """The speaker id of a clip: its file name before ``_nohash_``.

    >>> speaker_of("yes/0a7c2a8d_nohash_0.wav")
    '0a7c2a8d'
    """
    return re.sub(r"_nohash_.*$", "", Path(path).name)


class SpeechCommandsError(DataPreparationError):
    """The folder is not a Speech Commands dataset as preparation expects; names the file."""


@dataclass(frozen=True)
class Row:
    """One CSV row (``start``/``stop`` in samples)."""

    ID: str
    duration: float
    wav: str
    start: int
    stop: int
    spk_id: str
    word: str
    label: str


def label_of(word: str, task: str) -> str:
    """The class of a word folder under ``task``."""
    if task == "all" or word in CORE_WORDS:
        return word
    return UNKNOWN


def class_labels(words: Sequence[str], task: str) -> list[str]:
    """Class names in a fixed order (the classifier's output index).

    >>> class_labels(["yes", "cat"], "all")
    ['cat', 'yes']
    >>> class_labels([], "12")[-2:]
    ['_silence_', '_unknown_']
    """
    if task == "all":
        return sorted(words)
    return [*CORE_WORDS, SILENCE, UNKNOWN]


def _frames(path: Path, sample_rate: int) -> int:
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise SpeechCommandsError(f"{path}: cannot read audio ({err})") from err
    if info.samplerate != sample_rate:
        raise SpeechCommandsError(
            f"{path}: sample rate is {info.samplerate} Hz, expected {sample_rate} Hz"
        )
    if info.channels != 1:
        raise SpeechCommandsError(f"{path}: {info.channels} channels, expected mono")
    return info.frames


def read_list(root: Path, name: str) -> list[str]:
    """Entries of a list file (``word/<speaker>_nohash_<n>.wav``), each checked to exist."""
    path = root / name
    if not path.is_file():
        raise SpeechCommandsError(
            f"{path}: list file not found (a Speech Commands folder holds {VALIDATION_LIST} "
            f"and {TESTING_LIST})"
        )
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        if not (root / entry).is_file():
            raise SpeechCommandsError(f"{path} line {number}: {entry} has no file under {root}")
        entries.append(entry)
    return entries


def word_folders(root: Path) -> dict[str, list[str]]:
    """{word: sorted relative paths of its WAVs}; an empty word folder is an error."""
    words = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        wavs = sorted(f"{folder.name}/{p.name}" for p in folder.glob("*.wav"))
        if not wavs:
            raise SpeechCommandsError(f"{folder}: word folder holds no .wav files")
        words[folder.name] = wavs
    if not words:
        raise SpeechCommandsError(f"{root}: no word folders (expected yes/, no/, ... of WAVs)")
    return words


def silence_rows(
    noise_files: Sequence[tuple[Path, int]], split: str, count: int, rng: random.Random
) -> list[Row]:
    """``count`` 1-s windows cut at random from the split's region of the noise files."""
    low, high = NOISE_REGIONS[split]
    rows = []
    for i in range(count):
        path, frames = noise_files[i % len(noise_files)]
        first, last = int(low * frames), int(high * frames) - SAMPLE_RATE
        if last < first:
            raise SpeechCommandsError(
                f"{path}: {frames / SAMPLE_RATE:.1f} s is too short to cut 1-s {split} silence "
                f"clips from its {int(100 * low)}-{int(100 * high)} % region"
            )
        start = rng.randint(first, last)
        rows.append(
            Row(f"silence_{split}_{i}", 1.0, str(path), start, start + SAMPLE_RATE, "noise",
                SILENCE, SILENCE)
        )
    return rows


def _write_csv(rows: Sequence[Row], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(Row.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def prepare_speech_commands(
    data_folder: str | Path,
    save_folder: str | Path,
    task: str = "12",
    silence_percentage: float = 10.0,
    unknown_percentage: float | None = 10.0,
    seed: int = 59185,
    sample_rate: int = SAMPLE_RATE,
    skip_prep: bool = False,
) -> dict[str, Path]:
    """Write ``<save_folder>/{train,valid,test}.csv`` and ``labels.txt`` (class order), and
    ``test_other.csv`` where the folder has the optional ``testing_other_list.txt`` (its clips
    never train; its silence clips come from the test region of the noise files).

    Skipped when the CSVs exist and were made with the same options. Raises
    :class:`SpeechCommandsError` naming the file for a missing list file, a list entry with no
    file, a clip or noise file of another sample rate, an empty word folder, or a 12-class
    task without one of its ten words or without background noise.
    """
    root, save = Path(data_folder), Path(save_folder)
    if task not in TASKS:
        raise SpeechCommandsError(f"task must be one of {TASKS}, got {task!r}")
    has_other = (root / TESTING_OTHER_LIST).is_file()
    csvs = {s: save / f"{s}.csv" for s in ((*SPLITS, "test_other") if has_other else SPLITS)}
    if skip_prep:
        return csvs
    if not root.is_dir():
        raise SpeechCommandsError(
            f"data_folder {root} does not exist: point --data_folder at Speech Commands, or make "
            "a corpus with tools/data/make_kws_corpus.py"
        )
    opts = {"data_folder": str(root.resolve()), "task": task, "silence": silence_percentage,
            "unknown": unknown_percentage, "seed": seed, "sample_rate": sample_rate}
    opts_file = save / OPTS_FILE
    if all(p.is_file() for p in csvs.values()) and opts_file.is_file():
        if json.loads(opts_file.read_text()) == opts:
            logger.info("%s: Speech Commands already prepared, skipping", save)
            return csvs
    listed = {"valid": read_list(root, VALIDATION_LIST), "test": read_list(root, TESTING_LIST)}
    if has_other:
        listed["test_other"] = read_list(root, TESTING_OTHER_LIST)
    words = word_folders(root)
    if task == "12":
        missing = [w for w in CORE_WORDS if w not in words]
        if missing:
            raise SpeechCommandsError(f"{root}: no folder for the word {missing[0]!r} of the 12-class task")
    held_out = set().union(*listed.values())
    splits = {
        "train": [p for w in words.values() for p in w if p not in held_out],
        **listed,
    }
    noise_files = []
    if task == "12" and silence_percentage > 0:
        noise_dir = root / NOISE_FOLDER
        wavs = sorted(noise_dir.glob("*.wav")) if noise_dir.is_dir() else []
        if not wavs:
            raise SpeechCommandsError(f"{noise_dir}: no background-noise WAVs to cut silence clips from")
        noise_files = [(p.resolve(), _frames(p, sample_rate)) for p in wavs]
    rng = random.Random(seed)
    save.mkdir(parents=True, exist_ok=True)
    (save / "test_other.csv").unlink(missing_ok=True)  # from an earlier preparation with the list
    for split, paths in splits.items():
        rows = []
        for rel in paths:
            path = (root / rel).resolve()
            word = rel.split("/")[0]
            frames = _frames(path, sample_rate)
            rows.append(Row(f"{word}_{Path(rel).stem}", round(frames / sample_rate, 4), str(path),
                            0, frames, speaker_of(rel), word, label_of(word, task)))
        if task == "12":
            known = [r for r in rows if r.label != UNKNOWN]
            unknown = [r for r in rows if r.label == UNKNOWN]
            if unknown_percentage is not None:
                count = min(len(unknown), math.ceil(len(known) * unknown_percentage / 100))
                unknown = sorted(rng.sample(unknown, count), key=lambda r: r.ID)
            silence_count = math.ceil(len(known) * silence_percentage / 100)
            rows = known + unknown + silence_rows(noise_files, split, silence_count, rng)
        _write_csv(rows, csvs[split])
        logger.info("%s: %d clips", csvs[split], len(rows))
    (save / "labels.txt").write_text("\n".join(class_labels(list(words), task)) + "\n")
    opts_file.write_text(json.dumps(opts))
    return csvs
