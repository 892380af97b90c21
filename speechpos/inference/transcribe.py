"""Transcribe many files: batches by duration, a progress bar, bad files skipped, resumable output.

:func:`transcribe_files` reads the files in order, packs them into batches of at most
``batch_seconds`` of padded audio, and writes one record per file as each batch finishes
(text: ``path<TAB>transcript``; JSONL: ``{"path", "text", "seconds"}`` and, with ``times``,
``"words"``: ``[word, start_s, end_s]`` from the best CTC path; CTM: a line per word), flushed, so an
interrupted run loses nothing it wrote. Given an output file that already holds records, the
files it names are skipped: a re-run finishes the job. A missing, corrupt, empty or too short
file is reported (``on_error`` gets the one-line message naming it) and skipped; the others
are transcribed. After each batch the heap memory it freed goes back to the operating system
(:func:`release_freed_memory`), so the resident size stays flat over thousands of files
(docs/transcribe_load.md measures it both ways).

Example (with a trained run)::

    from speechpos.inference import SpeechModel
    from speechpos.inference.transcribe import transcribe_files
    model = SpeechModel.from_run("results/ctc/conformer/1234")
    summary = transcribe_files(model, ["a.flac", "b.flac"], "out.jsonl", fmt="jsonl")
    summary.failed          # [(path, message), ...]
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from speechpos.speech.data.audio import AudioError

FORMATS = ("text", "jsonl", "ctm")


@functools.cache
def _malloc_trim():
    libc = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None


def release_freed_memory() -> bool:
    """Hand the heap memory freed so far back to the operating system (glibc's ``malloc_trim``);
    False where the C library has none (macOS, musl), where it is a no-op.

    Each batch of a new padded length leaves freed blocks that glibc keeps (its mmap threshold
    rises after large tensors are freed, so later ones come from the heap); without this the
    resident size climbs in steps with every longer batch.

    >>> release_freed_memory()  # glibc, as on the project's Debian machines
    True
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@dataclass
class TranscribeSummary:
    """What a call of :func:`transcribe_files` did."""

    done: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def real_time_factor(self) -> float:
        """Wall time per second of audio (0.02: fifty times faster than real time)."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else 0.0


def done_paths(output: Path, fmt: str) -> set[str]:
    """Files already transcribed in ``output`` (a partial last line, from an interrupted
    write, does not count).

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "t.txt"
    >>> _ = out.write_text("a.flac\\tHELLO\\nb.fl")
    >>> sorted(done_paths(out, "text"))
    ['a.flac']
    """
    if not output.is_file():
        return set()
    done = set()
    for line in output.read_text(encoding="utf-8").split("\n")[:-1]:
        if fmt == "jsonl":
            try:
                done.add(json.loads(line)["path"])
            except (json.JSONDecodeError, KeyError):
                continue
        elif fmt == "ctm":
            if line.startswith(";; ") and line.endswith(" no words"):
                done.add(line[3:-len(" no words")])
            elif line.count(" ") >= 4:
                done.add(line.rsplit(" ", 4)[0])
        elif "\t" in line:
            done.add(line.split("\t", 1)[0])
    return done


def format_record(path: str, text: str, seconds: float, fmt: str, words=None) -> str:
    """One file's record (newline included): a line of text or JSON, or CTM lines (one per
    word: ``<file> 1 <start> <duration> <word>``, the file's path as its name; a file with no
    word gets a ``;;`` comment line so that a re-run knows it is done).

    >>> format_record("a.flac", "HI", 1.234, "jsonl", [("HI", 0.2, 0.44)])
    '{"path": "a.flac", "text": "HI", "seconds": 1.23, "words": [["HI", 0.2, 0.44]]}\\n'
    >>> format_record("a.flac", "HI YOU", 1.0, "ctm", [("HI", 0.2, 0.44), ("YOU", 0.5, 0.7)])
    'a.flac 1 0.200 0.240 HI\\na.flac 1 0.500 0.200 YOU\\n'
    """
    if fmt == "jsonl":
        record = {"path": path, "text": text, "seconds": round(seconds, 2)}
        if words is not None:
            record["words"] = [list(w) for w in words]
        return json.dumps(record) + "\n"
    if fmt == "ctm":
        if not words:
            return f";; {path} no words\n"
        return "".join(f"{path} 1 {s:.3f} {e - s:.3f} {w}\n" for w, s, e in words)
    return f"{path}\t{text}\n"


def transcribe_files(model, paths, output: str | Path | None = None, fmt: str = "text",
                     batch_seconds: float = 120.0, progress: bool = True,
                     on_error=None, times: bool = False, on_batch=None,
                     release_memory: bool = True) -> TranscribeSummary:
    """Transcribe ``paths`` with ``model`` (a :class:`~speechpos.inference.SpeechModel`),
    appending records to ``output`` (stdout when None); ``times`` adds word times (JSONL; CTM
    always has them); ``on_batch(summary)`` is called after each batch is written;
    ``release_memory`` returns freed heap memory to the system after each batch. Returns a
    :class:`TranscribeSummary`."""
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds must be positive, got {batch_seconds}")
    times = times or fmt == "ctm"
    on_error = on_error or (lambda message: tqdm.write(f"speechpos: error: {message}", file=sys.stderr))
    summary = TranscribeSummary()
    skip = done_paths(Path(output), fmt) if output else set()
    todo = [p for p in map(str, paths) if p not in skip]
    summary.skipped = len(paths) - len(todo)
    sink = open(output, "a", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="file", disable=not progress, file=sys.stderr)
    batch: list[tuple[str, torch.Tensor]] = []

    def flush():
        if not batch:
            return
        wavs = torch.nn.utils.rnn.pad_sequence([w for _, w in batch], batch_first=True)
        lengths = torch.tensor([len(w) for _, w in batch], dtype=torch.float) / wavs.shape[1]
        if times:
            texts, words = model.transcribe_batch_with_times(wavs, lengths)
        else:
            texts, words = model.transcribe_batch(wavs, lengths), [None] * len(batch)
        for (path, wav), text, w in zip(batch, texts, words, strict=True):
            sink.write(format_record(path, text, len(wav) / model.sample_rate, fmt, w))
            summary.audio_seconds += len(wav) / model.sample_rate
        sink.flush()
        summary.done += len(batch)
        bar.update(len(batch))
        summary.wall_seconds = time.perf_counter() - start
        bar.set_postfix(rtf=f"{summary.real_time_factor:.3f}")
        batch.clear()
        if release_memory:
            release_freed_memory()
        if on_batch is not None:
            on_batch(summary)

    try:
        for path in todo:
            try:
                wav = model.load_audio(path)
            except AudioError as err:
                summary.failed.append((path, str(err)))
                on_error(str(err))
                bar.update(1)
                continue
            longest = max([len(wav), *(len(w) for _, w in batch)])
            if batch and longest * (len(batch) + 1) > batch_seconds * model.sample_rate:
                flush()
            batch.append((path, wav))
        flush()
    finally:
        bar.close()
        summary.wall_seconds = time.perf_counter() - start
        if output:
            sink.close()
    return summary
