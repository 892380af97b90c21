"""LibriSpeech data preparation: one CSV per split, checked inputs, Libri-light-style subsets.

Reads the LibriSpeech layout (the real corpus, or the offline one of ``tools/data/make_corpus.py``)::

    <data_folder>/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
    <data_folder>/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt   ("<ID> <WORDS>" lines)

and writes ``<save_folder>/<split>.csv`` with SpeechBrain's columns ``ID, duration, wav, spk_id,
wrd`` (duration in seconds from the FLAC header, ``wav`` an absolute path, ``spk_id`` the
reader's id, rows sorted by ID). Every problem stops the preparation with a
:class:`DataPreparationError` that names the file: a missing split folder, a transcript line
without its audio file, an audio file without a transcript line, an empty transcript, an
unreadable or corrupt FLAC (the header is read and, by default, the last sample decoded, which
catches truncated files; ``check_audio="full"`` decodes everything), a sample rate other than
16 kHz or more than one channel.

Low-label subsets (like Libri-light's limited-supervision sets) are drawn from the training
splits by speaker: speakers are shuffled with ``low_label_seed``, and the subset takes one
utterance from each speaker in turn (the speaker's utterances in shuffled order) while the
total stays within budget. Subsets are nested (10 min inside 1 h inside 10 h), deterministic,
never over budget, and spread over as many speakers as the budget allows. When the training
splits hold less audio than a budget, a warning says so and the subset is all of it (so a demo
corpus still gets its ``train-10h.csv``).

Example
-------
>>> import tempfile
>>> from speechpos.speech.data.librispeech import prepare_librispeech, DataPreparationError
>>> with tempfile.TemporaryDirectory() as empty:
...     try:
...         prepare_librispeech(empty, f"{empty}/prep", tr_splits=["train-clean-100"])
...     except DataPreparationError as err:
...         print("split folder not found" in str(err))
True
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CSV_HEADER = ("ID", "duration", "wav", "spk_id", "wrd")
OPTS_FILE = "librispeech_prepare.json"
LOW_LABEL_BUDGETS = {"10min": 600.0, "1h": 3600.0, "10h": 36000.0}
CHECK_AUDIO = ("header", "tail", "full")


class DataPreparationError(ValueError):
    """The corpus on disk is not what LibriSpeech preparation expects; names the file."""


@dataclass(frozen=True)
class Row:
    """One CSV row: utterance ID, duration (s), absolute audio path, speaker id, transcript."""

    ID: str
    duration: float
    wav: str
    spk_id: str
    wrd: str


def audio_duration(path: str | Path, sample_rate: int = SAMPLE_RATE, check: str = "tail") -> float:
    """Duration in seconds of a mono FLAC at ``sample_rate``; DataPreparationError otherwise.

    ``check``: ``header`` reads the header only, ``tail`` also decodes the last sample
    (catches truncated files), ``full`` decodes the whole file (catches any corrupt frame).

    >>> import tempfile, numpy as np, soundfile as sf
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     sf.write(f"{tmp}/a.flac", np.zeros(8000), 16000)
    ...     audio_duration(f"{tmp}/a.flac")
    0.5
    """
    try:
        info = sf.info(str(path))
        if check in ("tail", "full") and info.frames > 0:
            with sf.SoundFile(str(path)) as f:
                if check == "full":
                    n = sum(len(block) for block in f.blocks(blocksize=1 << 16))
                else:
                    f.seek(info.frames - 1)
                    n = info.frames - 1 + len(f.read(1))
            if n != info.frames:
                raise RuntimeError(f"decoded {n} samples, header says {info.frames}")
    except (RuntimeError, OSError) as err:
        raise DataPreparationError(f"{path}: unreadable or corrupt audio file ({err})") from err
    if info.samplerate != sample_rate:
        raise DataPreparationError(
            f"{path}: sample rate {info.samplerate} Hz, expected {sample_rate} Hz"
        )
    if info.channels != 1:
        raise DataPreparationError(f"{path}: {info.channels} channels, expected mono")
    if info.frames <= 0:
        raise DataPreparationError(f"{path}: audio file holds no samples")
    return info.frames / info.samplerate


def read_transcripts(chapter_dir: Path) -> dict[str, tuple[str, Path, int]]:
    """Read every ``*.trans.txt`` of a chapter folder: {ID: (words, file, line number)}."""
    out: dict[str, tuple[str, Path, int]] = {}
    for trans in sorted(chapter_dir.glob("*.trans.txt")):
        with open(trans, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                utt_id, _, words = line.strip().partition(" ")
                words = " ".join(words.split())
                if not words:
                    raise DataPreparationError(
                        f"{trans}: line {number}: empty transcript for {utt_id}"
                    )
                if utt_id in out:
                    raise DataPreparationError(
                        f"{trans}: line {number}: {utt_id} already has a transcript "
                        f"({out[utt_id][1]} line {out[utt_id][2]})"
                    )
                out[utt_id] = (words, trans, number)
    return out


def split_references(split_dir: Path) -> dict[str, str]:
    """{flac path: transcript} of a split folder ``<split>/<spk>/<chapter>/``, from its
    ``*.trans.txt`` alone (no audio opened): what a scorer needs beside a list of files.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "test-clean"
    >>> (d / "1" / "2").mkdir(parents=True)
    >>> _ = (d / "1" / "2" / "1-2.trans.txt").write_text("1-2-0000 HELLO  WORLD\\n")
    >>> [(Path(f).name, words) for f, words in split_references(d).items()]
    [('1-2-0000.flac', 'HELLO WORLD')]
    """
    chapters = sorted({trans.parent for trans in Path(split_dir).rglob("*.trans.txt")})
    return {str(chapter / f"{utt_id}.flac"): words
            for chapter in chapters for utt_id, (words, _, _) in read_transcripts(chapter).items()}


def read_chapter(chapter_dir: Path, sample_rate: int = SAMPLE_RATE, check: str = "tail") -> list[Row]:
    """The rows of one chapter folder, every transcript line matched with its FLAC file."""
    transcripts = read_transcripts(chapter_dir)
    flacs = {p.name[: -len(".flac")]: p for p in chapter_dir.glob("*.flac")}
    for utt_id, (_, trans, number) in transcripts.items():
        if utt_id not in flacs:
            raise DataPreparationError(
                f"{trans}: line {number}: no audio file for {utt_id} "
                f"(expected {chapter_dir / (utt_id + '.flac')})"
            )
    rows = []
    for utt_id in sorted(flacs):
        path = flacs[utt_id]
        if utt_id not in transcripts:
            raise DataPreparationError(
                f"{path}: no transcript line for {utt_id} in the *.trans.txt of {chapter_dir}"
            )
        duration = audio_duration(path, sample_rate, check)
        rows.append(Row(utt_id, duration, str(path.resolve()), utt_id.split("-")[0],
                        transcripts[utt_id][0]))
    return rows


def read_split(
    split_dir: Path, sample_rate: int = SAMPLE_RATE, check: str = "tail", progress: bool = True
) -> list[Row]:
    """All rows of a split folder ``<split>/<spk>/<chapter>/``, sorted by ID."""
    if not split_dir.is_dir():
        raise DataPreparationError(
            f"{split_dir}: split folder not found (is data_folder the LibriSpeech root?)"
        )
    chapters = sorted(c for s in split_dir.iterdir() if s.is_dir() for c in s.iterdir()
                      if c.is_dir())
    rows: list[Row] = []
    for chapter in tqdm(chapters, desc=f"prepare {split_dir.name}", unit="chapter",
                        disable=not progress):
        rows.extend(read_chapter(chapter, sample_rate, check))
    if not rows:
        raise DataPreparationError(f"{split_dir}: no utterances found in this split folder")
    return sorted(rows, key=lambda r: r.ID)


def write_csv(rows: Sequence[Row], path: Path) -> None:
    """Write rows with SpeechBrain's header ``ID,duration,wav,spk_id,wrd`` (atomically)."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        writer.writerows(astuple(r) for r in rows)
    os.replace(tmp, path)


def read_csv(path: str | Path) -> list[Row]:
    """Read a CSV written by :func:`write_csv` back into rows."""
    with open(path, newline="", encoding="utf-8") as f:
        return [Row(r["ID"], float(r["duration"]), r["wav"], r["spk_id"], r["wrd"])
                for r in csv.DictReader(f)]


def _budgets(low_label: Sequence[str] | Mapping[str, float] | None) -> dict[str, float]:
    """Normalise ``low_label`` to {name: seconds}.

    >>> _budgets(["1h", "10min"])
    {'10min': 600.0, '1h': 3600.0}
    >>> _budgets({"30s": 30})
    {'30s': 30.0}
    """
    if not low_label:
        return {}
    if isinstance(low_label, Mapping):
        budgets = {str(k): float(v) for k, v in low_label.items()}
    else:
        unknown = [n for n in low_label if n not in LOW_LABEL_BUDGETS]
        if unknown:
            raise ValueError(
                f"unknown low-label subset(s) {unknown}: use {list(LOW_LABEL_BUDGETS)} "
                "or a mapping {name: seconds}"
            )
        budgets = {n: LOW_LABEL_BUDGETS[n] for n in low_label}
    if any(v <= 0 for v in budgets.values()):
        raise ValueError(f"low-label budgets must be positive: {budgets}")
    return dict(sorted(budgets.items(), key=lambda kv: kv[1]))


def speaker_interleaved(rows: Sequence[Row], seed: int) -> list[Row]:
    """Order rows one speaker at a time in turn (speakers and their utterances shuffled by seed)."""
    rng = random.Random(f"{seed}/low-label")
    by_speaker: dict[str, list[Row]] = {}
    for row in sorted(rows, key=lambda r: r.ID):
        by_speaker.setdefault(row.spk_id, []).append(row)
    speakers = sorted(by_speaker)
    rng.shuffle(speakers)
    queues = []
    for spk in speakers:
        utts = by_speaker[spk]
        rng.shuffle(utts)
        queues.append(utts)
    order = []
    for i in range(max((len(q) for q in queues), default=0)):
        order.extend(q[i] for q in queues if i < len(q))
    return order


def low_label_subsets(
    rows: Sequence[Row], budgets: Mapping[str, float], seed: int = 1234
) -> dict[str, list[Row]]:
    """Nested, speaker-balanced subsets of ``rows`` of at most ``budgets[name]`` seconds each.

    >>> rows = [Row(f"{s}-1-{i:04d}", 10.0, "x", str(s), "A") for s in (1, 2) for i in range(3)]
    >>> sub = low_label_subsets(rows, {"20s": 20, "45s": 45}, seed=0)
    >>> [len(sub["20s"]), len(sub["45s"])], sorted({r.spk_id for r in sub["20s"]})
    ([2, 4], ['1', '2'])
    """
    order = speaker_interleaved(rows, seed)
    total_available = sum(r.duration for r in order)
    subsets = {}
    for name, budget in budgets.items():
        taken, total = [], 0.0
        for row in order:
            if total + row.duration > budget:
                break
            taken.append(row)
            total += row.duration
        if total_available < budget:
            logger.warning(
                "low-label subset %s: asked for %.2f h but the training splits hold only "
                "%.2f h; the subset is all of it", name, budget / 3600, total_available / 3600
            )
        subsets[name] = sorted(taken, key=lambda r: r.ID)
    return subsets


def _options(**kwargs) -> dict:
    return json.loads(json.dumps(kwargs, default=str))


def _already_done(save_folder: Path, csvs: Sequence[Path], opts: dict) -> bool:
    opts_file = save_folder / OPTS_FILE
    if not all(p.is_file() for p in csvs) or not opts_file.is_file():
        return False
    if json.loads(opts_file.read_text()) != opts:
        logger.info("%s: preparation options changed, preparing again", opts_file)
        return False
    return True


def prepare_librispeech(
    data_folder: str | Path,
    save_folder: str | Path,
    tr_splits: Sequence[str] = (),
    dev_splits: Sequence[str] = (),
    te_splits: Sequence[str] = (),
    select_n_sentences: int | Sequence[int | None] | None = None,
    merge_lst: Sequence[str] = (),
    merge_name: str | None = None,
    skip_prep: bool = False,
    low_label: Sequence[str] | Mapping[str, float] | None = None,
    low_label_seed: int = 1234,
    check_audio: str = "tail",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``<save_folder>/<split>.csv`` (``ID, duration, wav, spk_id, wrd``) for each split.

    Arguments
    ---------
    data_folder : the LibriSpeech root (holding ``train-clean-100/``, ``dev-clean/``, ...).
    save_folder : where the CSVs go (created if needed).
    tr_splits, dev_splits, te_splits : split folder names.
    select_n_sentences : keep only the first n utterances (by ID) of each split; an int for all
        splits or one value (or None) per split in the order tr + dev + te.
    merge_lst, merge_name : also write ``merge_name`` (e.g. ``train.csv``) joining these splits.
    skip_prep : do nothing (SpeechBrain convention).
    low_label : Libri-light-style subsets of the training splits, names from
        ``LOW_LABEL_BUDGETS`` (``["10min", "1h", "10h"]``) or a mapping {name: seconds};
        written as ``train-<name>.csv``.
    low_label_seed : seed of the speaker/utterance draw of the subsets.
    check_audio : ``header`` | ``tail`` (default: also decode the last sample) | ``full``.
    overwrite : prepare again even if the CSVs exist with the same options.

    Returns {name: csv path} for every CSV of this call. Work already done (all CSVs present and
    the options recorded in ``librispeech_prepare.json`` unchanged) is skipped.

    Example (see the module docstring for a runnable one)::

        prepare_librispeech("data/LibriSpeech", "results/prep", tr_splits=["train-clean-100"],
                            dev_splits=["dev-clean"], te_splits=["test-clean"],
                            low_label=["10min", "1h", "10h"])
        # -> {'train-clean-100': PosixPath('results/prep/train-clean-100.csv'), ...,
        #     'train-10min': ..., 'train-1h': ..., 'train-10h': ...}
    """
    if skip_prep:
        return {}
    if check_audio not in CHECK_AUDIO:
        raise ValueError(f"check_audio must be one of {CHECK_AUDIO}, got {check_audio!r}")
    data_folder, save_folder = Path(data_folder), Path(save_folder)
    splits = [*tr_splits, *dev_splits, *te_splits]
    if not splits:
        raise ValueError("no split given: pass tr_splits, dev_splits and/or te_splits")
    n_select = _select_counts(select_n_sentences, len(splits))
    budgets = _budgets(low_label)
    if budgets and not tr_splits:
        raise ValueError("low_label subsets are drawn from tr_splits, which is empty")
    if merge_lst and not merge_name:
        raise ValueError("merge_lst given without merge_name")
    names = splits + [f"train-{n}" for n in budgets] + ([Path(merge_name).stem] if merge_lst
                                                         else [])
    csvs = {name: save_folder / f"{name}.csv" for name in names}
    opts = _options(data_folder=data_folder.resolve(), splits=splits, tr_splits=list(tr_splits),
                    select_n_sentences=n_select, merge_lst=list(merge_lst),
                    merge_name=merge_name, low_label=budgets, low_label_seed=low_label_seed,
                    check_audio=check_audio)
    if not overwrite and _already_done(save_folder, list(csvs.values()), opts):
        logger.info("LibriSpeech CSVs already in %s: skipping preparation", save_folder)
        return csvs
    for split in splits:  # fail fast, before reading any audio
        if not (data_folder / split).is_dir():
            read_split(data_folder / split)
    save_folder.mkdir(parents=True, exist_ok=True)
    (save_folder / OPTS_FILE).unlink(missing_ok=True)
    rows_of: dict[str, list[Row]] = {}
    for split, n in zip(splits, n_select, strict=True):
        rows = read_split(data_folder / split, SAMPLE_RATE, check_audio, progress)
        rows_of[split] = rows[:n] if n is not None else rows
        write_csv(rows_of[split], csvs[split])
        hours = sum(r.duration for r in rows_of[split]) / 3600
        logger.info("%s: %d utterances, %.2f h", csvs[split], len(rows_of[split]), hours)
    if budgets:
        train_rows = [r for s in tr_splits for r in rows_of[s]]
        for name, rows in low_label_subsets(train_rows, budgets, low_label_seed).items():
            write_csv(rows, csvs[f"train-{name}"])
            logger.info("%s: %d utterances from %d speakers, %.3f h", csvs[f"train-{name}"],
                        len(rows), len({r.spk_id for r in rows}),
                        sum(r.duration for r in rows) / 3600)
    if merge_lst:
        missing = [s for s in merge_lst if s not in rows_of]
        if missing:
            raise ValueError(f"merge_lst names splits not prepared in this call: {missing}")
        write_csv([r for s in merge_lst for r in rows_of[s]], csvs[Path(merge_name).stem])
    (save_folder / OPTS_FILE).write_text(json.dumps(opts, indent=1))
    return csvs


def _select_counts(select: int | Sequence[int | None] | None, n_splits: int) -> list[int | None]:
    """Per-split utterance limits.

    >>> _select_counts(None, 2), _select_counts(5, 2), _select_counts([3, None], 2)
    ([None, None], [5, 5], [3, None])
    """
    if select is None or isinstance(select, int):
        return [select] * n_splits
    select = list(select)
    if len(select) != n_splits:
        raise ValueError(f"select_n_sentences has {len(select)} values for {n_splits} splits")
    return select
