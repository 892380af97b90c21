"""Make a LibriSpeech-layout speech corpus offline, by text-to-speech of public-domain text.

Layout written under ``out`` (what ``recipes/LibriSpeech/librispeech_prepare.py`` reads, so
the recipes run unchanged on this corpus and on the real LibriSpeech)::

    out/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac   16 kHz mono 16-bit
    out/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt        "<ID> <UPPERCASE WORDS>"
    out/SPEAKERS.TXT                                             speaker id | split | minutes | voice
    out/corpus.json                                              settings + summary (done marker)
    out/librispeech-lm-norm.txt                                  LM text (see write_lm_text)

Splits keep LibriSpeech's names: ``train-clean-100``, ``dev-clean``, ``test-clean``, and
``test-other``: voices of engines that no other split uses (``HELD_OUT_CYCLE``: the HMM-based
festival voice, and espeak-ng's ``en-us-nyc`` accent, half of its speakers each) reading documents
that no other split reads. It is planned after the others from the documents they leave, with
speaker and chapter ids after theirs, so the other splits are exactly those of a corpus made
without it, and it can be added to such a corpus later (``make_corpus`` does so).

``librispeech-lm-norm.txt`` (named after LibriSpeech's own LM text) holds every document that
dev, test and test-other do not read, one sentence a line: the word LM text that the recipes and
tools use by default.

How the corpus is drawn (all from ``seed``, so the same seed gives the same corpus):

* documents (Bible books, WordNet gloss groups; see :mod:`speechpos.corpora.text`) are shuffled
  and dealt to the splits, held-out splits first, each split taking whole documents until it
  has enough text: a document, hence a sentence, belongs to one split only;
* every split has its own speakers (:class:`speechpos.corpora.tts.Voice`: engine + voice + pitch +
  speed + level); engines are mixed (espeak-ng, flite, festival) and an espeak-ng accent+variant
  is used by one speaker of the whole corpus only. flite and festival have few voices (4 and 2),
  so those voices recur across splits with different pitch/speed settings;
* consecutive sentences of a document are joined into utterances of at most ``max_words``
  words; speakers take turns reading "chapters" (``chapter_utts`` consecutive utterances of
  one document) until the split's duration budget is met. Durations are planned from a speaking
  rate per engine before synthesis, so a split's real duration is within about 15 % of its
  budget (the summary reports the real one).

Example
-------
>>> SIZES["default"].hours            # hours per split of the demo corpus
{'train-clean-100': 2.0, 'dev-clean': 0.1, 'test-clean': 0.1}
>>> # make_corpus("data/LibriSpeech", size="default", seed=1234, jobs=2)
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import random
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from speechpos.corpora.text import SOURCES, Document, Sentence, load_documents
from speechpos.corpora.tts import (
    ENGINES,
    ESPEAK_ACCENTS,
    ESPEAK_VARIANTS,
    HELD_OUT_ESPEAK_ACCENTS,
    VOICES,
    Voice,
    available_engines,
    missing_engine_hint,
    synthesize,
)

logger = logging.getLogger(__name__)

TRAIN, DEV, TEST = "train-clean-100", "dev-clean", "test-clean"
SPLITS = (TRAIN, DEV, TEST)
TEST_OTHER = "test-other"
HELD_OUT_SPLITS = (DEV, TEST, TEST_OTHER)  # none of their documents is in the LM text
LM_TEXT = "librispeech-lm-norm.txt"  # the corpus's LM text, in the corpus root
MANIFEST = "corpus.json"
IN_PROGRESS = ".make_corpus_in_progress"
WORDS_PER_CHAR = 1 / 5.6  # transcript words per transcript character (spaces included)


@dataclass(frozen=True)
class SizeSpec:
    """Duration budget (hours) and number of speakers per split, and how utterances are cut."""

    hours: Mapping[str, float]
    speakers: Mapping[str, int]
    max_words: int = 30
    chapter_utts: int = 8
    other_hours: float = 0.0  # test-other (held-out engines), planned after the other splits
    other_speakers: int = 0
    lm_words: int | None = None  # cap on the LM text (training documents first); None: all


SIZES: dict[str, SizeSpec] = {
    # For tests: about ten short utterances in train and four in dev and test, made in seconds.
    "tiny": SizeSpec(
        hours={TRAIN: 40 / 3600, DEV: 15 / 3600, TEST: 15 / 3600},
        speakers={TRAIN: 4, DEV: 2, TEST: 2},
        max_words=10,
        chapter_utts=2,
        other_hours=15 / 3600,
        other_speakers=2,
        lm_words=20_000,  # an LM text the tests build an n-gram of in a second
    ),
    # For the demo: 2 hours of training audio (a recognizer that works after a CPU quarter of an
    # hour needs more voices and sentences than it can memorise), 6 minutes each of dev and test.
    "default": SizeSpec(
        hours={TRAIN: 2.0, DEV: 0.1, TEST: 0.1},
        speakers={TRAIN: 40, DEV: 8, TEST: 8},
        max_words=30,
        chapter_utts=6,
        other_hours=0.1,
        other_speakers=8,
    ),
    # For benchmarks: 10 hours of training audio (enough for a train-10h subset), 30 min dev/test.
    "bench": SizeSpec(
        hours={TRAIN: 10.0, DEV: 0.5, TEST: 0.5},
        speakers={TRAIN: 120, DEV: 20, TEST: 20},
        max_words=30,
        chapter_utts=12,
        other_hours=0.5,
        other_speakers=20,
    ),
}
# The engines in turn (espeak-ng 40 %, flite 40 %, festival 20 % of each split's speakers).
ENGINE_CYCLE = ("espeak-ng", "flite", "festival", "espeak-ng", "flite")
# test-other's speakers in turn: the HMM-based festival voice, espeak-ng's held-out accent.
HELD_OUT_CYCLE = ("festival-hts", "espeak-ng")


@dataclass
class Chapter:
    """A unit of work: one speaker reading consecutive utterances of one document."""

    split: str
    speaker_id: int
    chapter_id: int
    voice: Voice
    doc_id: str
    utterances: list[Sentence] = field(default_factory=list)

    @property
    def folder(self) -> str:
        """Path of the chapter folder relative to the corpus root."""
        return f"{self.split}/{self.speaker_id}/{self.chapter_id}"

    def utt_id(self, index: int) -> str:
        """LibriSpeech utterance ID ``<spk>-<chapter>-<utt:04d>``."""
        return f"{self.speaker_id}-{self.chapter_id}-{index:04d}"


@functools.lru_cache(maxsize=4)
def _cached_documents(sources: tuple[str, ...]) -> tuple[Document, ...]:
    return tuple(load_documents(sources))


def join_sentences(sentences: Sequence[Sentence], max_words: int) -> list[Sentence]:
    """Join consecutive sentences into utterances of at most ``max_words`` words.

    A sentence longer than ``max_words`` stays an utterance on its own.

    >>> s = [Sentence("Jesus wept.", "JESUS WEPT"), Sentence("Go now.", "GO NOW")]
    >>> join_sentences(s, 4)
    [Sentence(speak='Jesus wept. Go now.', words='JESUS WEPT GO NOW')]
    >>> len(join_sentences(s, 3))
    2
    """
    out: list[Sentence] = []
    speak: list[str] = []
    words: list[str] = []
    for s in sentences:
        if words and len(words) + s.n_words > max_words:
            out.append(Sentence(" ".join(speak), " ".join(words)))
            speak, words = [], []
        speak.append(s.speak)
        words.extend(s.words.split())
    if words:
        out.append(Sentence(" ".join(speak), " ".join(words)))
    return out


def _estimate_seconds(utt: Sentence, voice: Voice) -> float:
    return len(utt.words) / voice.chars_per_second() + 2 * voice.pad_s


def assign_documents(
    docs: Sequence[Document], words_needed: Mapping[str, float], seed: int,
    extra: Mapping[str, float] | None = None,
) -> dict[str, list[Document]]:
    """Deal whole documents to splits, held-out splits first, until each has enough words;
    then the ``extra`` splits from the documents left (so the others are dealt as without them).

    Documents are shuffled per source and interleaved (so every split mixes sources); each split
    takes at least two documents where it can.

    >>> from speechpos.corpora.text import Document, Sentence
    >>> docs = [Document(f"d{i}", "x", [Sentence("a b c", "A B C")] * 10) for i in range(6)]
    >>> got = assign_documents(docs, {"train": 50, "test": 20}, seed=0)
    >>> [len(got[s]) for s in ("train", "test")]
    [2, 2]
    >>> more = assign_documents(docs, {"train": 50, "test": 20}, seed=0, extra={"other": 20})
    >>> more["train"] == got["train"], len(more["other"])
    (True, 2)
    """
    rng = random.Random(f"{seed}/documents")
    by_source: dict[str, list[Document]] = {}
    for doc in docs:
        by_source.setdefault(doc.source, []).append(doc)
    for source in sorted(by_source):
        rng.shuffle(by_source[source])
    queue: list[Document] = []
    for i in range(max(len(v) for v in by_source.values())):
        queue.extend(v[i] for _, v in sorted(by_source.items()) if i < len(v))
    order = sorted(words_needed, key=lambda s: (s.startswith("train"), s))
    words_needed = {**words_needed, **(extra or {})}
    assigned: dict[str, list[Document]] = {}
    for split in [*order, *(extra or {})]:
        taken: list[Document] = []
        while queue and (sum(d.n_words for d in taken) < words_needed[split] or len(taken) < 2):
            taken.append(queue.pop(0))
        if sum(d.n_words for d in taken) < words_needed[split]:
            raise ValueError(
                f"not enough text for split {split}: need about {words_needed[split]:.0f} "
                f"words, {sum(d.n_words for d in taken)} left; lower the hours"
            )
        assigned[split] = taken
    return assigned


def make_voices(
    n_per_split: Mapping[str, int], engines: Sequence[str], seed: int
) -> dict[str, list[Voice]]:
    """Draw distinct speakers for every split: no setting is shared between splits.

    An espeak-ng accent+variant belongs to a single speaker of the whole corpus.

    >>> v = make_voices({"train": 3, "test": 2}, ["espeak-ng", "flite"], seed=0)
    >>> [x.engine for x in v["train"]], len({x.name for x in v["train"] + v["test"]})
    (['espeak-ng', 'flite', 'espeak-ng'], 5)
    """
    rng = random.Random(f"{seed}/voices")
    cycle = [e for e in ENGINE_CYCLE if e in engines] or list(engines)
    espeak_pool = [f"{a}+{v}" for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    rng.shuffle(espeak_pool)
    used: set[str] = set()
    voices: dict[str, list[Voice]] = {}
    for k, split in enumerate(n_per_split):
        voices[split] = []
        for i in range(n_per_split[split]):
            engine = cycle[(i + k) % len(cycle)]
            for _ in range(1000):
                if engine == "espeak-ng":
                    if not espeak_pool:
                        raise ValueError("more espeak-ng speakers requested than voices exist")
                    name = espeak_pool.pop()
                else:
                    name = rng.choice(VOICES[engine])
                voice = _draw_setting(rng, engine, name)
                if voice.name not in used:
                    break
            else:
                raise ValueError(f"could not draw a new {engine} speaker for {split}")
            used.add(voice.name)
            voices[split].append(voice)
    return voices


def _draw_setting(rng: random.Random, engine: str, name: str) -> Voice:
    """A speaker of ``engine``'s voice ``name`` with a random pitch, speed, level and padding."""
    return Voice(
        engine,
        name,
        semitones=rng.choice([x / 2 for x in range(-6, 7)]),
        speed=rng.choice([0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15]),
        level_db=rng.choice([-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]),
        pad_s=rng.choice([0.05, 0.1, 0.15, 0.2, 0.25, 0.3]),
    )


def held_out_engines() -> list[str]:
    """test-other's engines that are installed: ``festival-hts`` where its voice is, and espeak-ng
    (its held-out accent) where espeak-ng is."""
    return available_engines(HELD_OUT_CYCLE)


def make_held_out_voices(n: int, engines: Sequence[str], seed: int) -> list[Voice]:
    """test-other's ``n`` speakers: the engines of ``engines`` in turn (``HELD_OUT_CYCLE``
    order), espeak-ng with its held-out accent only; drawn from their own random stream, so the
    other splits' speakers are the same with or without them.

    >>> v = make_held_out_voices(4, ["festival-hts", "espeak-ng"], seed=0)
    >>> [x.engine for x in v], all(x.voice.startswith("en-us-nyc+") for x in v[1::2])
    (['festival-hts', 'espeak-ng', 'festival-hts', 'espeak-ng'], True)
    """
    cycle = [e for e in HELD_OUT_CYCLE if e in engines]
    if not cycle:
        raise ValueError(f"no held-out engine among {list(engines)}; test-other needs one of {HELD_OUT_CYCLE}")
    rng = random.Random(f"{seed}/voices/{TEST_OTHER}")
    espeak_pool = [f"{a}+{v}" for a in HELD_OUT_ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    rng.shuffle(espeak_pool)
    voices: list[Voice] = []
    used: set[str] = set()
    for i in range(n):
        engine = cycle[i % len(cycle)]
        for _ in range(1000):
            name = espeak_pool.pop() if engine == "espeak-ng" else rng.choice(VOICES[engine])
            voice = _draw_setting(rng, engine, name)
            if voice.name not in used:
                break
        else:
            raise ValueError(f"could not draw a new {engine} speaker for {TEST_OTHER}")
        used.add(voice.name)
        voices.append(voice)
    return voices


def plan_split(
    split: str,
    docs: Sequence[Document],
    voices: Sequence[Voice],
    seconds: float,
    spec: SizeSpec,
    first_speaker_id: int,
    first_chapter_id: int,
) -> list[Chapter]:
    """Cut a split's documents into chapters read in turn by its speakers.

    Every speaker reads about ``seconds / len(voices)`` (planned from the engines' speaking
    rates; an utterance is left out when the speaker is closer to that without it), in chapters of at most ``spec.chapter_utts`` utterances, each chapter from the next
    document in turn.
    """
    streams = [(d.doc_id, join_sentences(d.sentences, spec.max_words)) for d in docs]
    positions = [0] * len(streams)
    quota = seconds / len(voices)
    read = [0.0] * len(voices)
    chapters: list[Chapter] = []
    turn = 0
    while any(r < quota for r in read):
        s = turn % len(voices)
        turn += 1
        if read[s] >= quota:
            continue
        open_docs = [k for k, (_, utts) in enumerate(streams) if positions[k] < len(utts)]
        if not open_docs:
            raise ValueError(f"split {split}: ran out of text at {sum(read):.0f} of {seconds:.0f} s")
        d = open_docs[len(chapters) % len(open_docs)]
        doc_id, utts = streams[d]
        chapter = Chapter(split, first_speaker_id + s, first_chapter_id + len(chapters),
                          voices[s], doc_id)
        while positions[d] < len(utts) and len(chapter.utterances) < spec.chapter_utts:
            estimate = _estimate_seconds(utts[positions[d]], voices[s])
            if read[s] > 0 and read[s] + estimate / 2 > quota:  # closer to quota without it
                read[s] = quota
                break
            chapter.utterances.append(utts[positions[d]])
            positions[d] += 1
            read[s] += estimate
        if chapter.utterances:
            chapters.append(chapter)
    return chapters


def resolve_size(size: str, hours: Mapping[str, float] | None = None) -> SizeSpec:
    """The SizeSpec of ``size`` with per-split hours overridden by ``hours``.

    >>> resolve_size("default", {"train-clean-100": 1.0}).hours["train-clean-100"]
    1.0
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    spec = SIZES[size]
    overrides = {k: v for k, v in (hours or {}).items() if v is not None}
    unknown = set(overrides) - {*SPLITS, TEST_OTHER}
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; splits are {(*SPLITS, TEST_OTHER)}")
    if any(v <= 0 for v in overrides.values()):
        raise ValueError(f"hours must be positive: {overrides}")
    other_hours = overrides.pop(TEST_OTHER, spec.other_hours)
    return SizeSpec({**spec.hours, **overrides}, spec.speakers, spec.max_words, spec.chapter_utts,
                    other_hours, spec.other_speakers, spec.lm_words)


def plan_corpus(
    size: str = "default",
    seed: int = 1234,
    hours: Mapping[str, float] | None = None,
    engines: Sequence[str] | None = None,
    sources: Sequence[str] = SOURCES,
    other_engines: Sequence[str] = (),
) -> list[Chapter]:
    """Plan the whole corpus (who reads what); no audio is made. Deterministic in ``seed``.

    With ``other_engines`` (see :func:`held_out_engines`) also ``test-other``, planned after the
    other splits (their plan is the same with or without it)."""
    spec = resolve_size(size, hours)
    engines = list(engines or ENGINES)
    voices = make_voices(spec.speakers, engines, seed)
    seconds = {s: spec.hours[s] * 3600 for s in SPLITS}
    words = {s: 1.3 * seconds[s] * 18.0 * WORDS_PER_CHAR for s in SPLITS}
    extra = {}
    if other_engines:
        seconds[TEST_OTHER] = spec.other_hours * 3600
        extra[TEST_OTHER] = 1.3 * seconds[TEST_OTHER] * 18.0 * WORDS_PER_CHAR
        voices[TEST_OTHER] = make_held_out_voices(spec.other_speakers, other_engines, seed)
    docs = assign_documents(_cached_documents(tuple(sources)), words, seed, extra)
    chapters: list[Chapter] = []
    speaker_id, chapter_id = 100, 1000
    for split in [*SPLITS, *extra]:
        chapters += plan_split(split, docs[split], voices[split], seconds[split], spec,
                               speaker_id, chapter_id)
        speaker_id += len(voices[split])
        chapter_id = 1000 + len(chapters)
    return chapters


def render_chapter(chapter: Chapter, out: str) -> list[tuple[str, float]]:
    """Synthesise one chapter into ``out`` (FLACs + trans.txt); return (ID, seconds) pairs."""
    folder = Path(out) / chapter.folder
    folder.mkdir(parents=True, exist_ok=True)
    ids = [chapter.utt_id(i) for i in range(len(chapter.utterances))]
    flacs = [folder / f"{i}.flac" for i in ids]
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        synthesize(chapter.voice, [u.speak for u in chapter.utterances], flacs, tmp)
    trans = folder / f"{chapter.speaker_id}-{chapter.chapter_id}.trans.txt"
    trans.write_text("".join(f"{i} {u.words}\n" for i, u in zip(ids, chapter.utterances,
                                                                 strict=True)))
    return [(i, sf.info(str(f)).duration) for i, f in zip(ids, flacs, strict=True)]


def _render_job(args: tuple[Chapter, str]) -> tuple[Chapter, list[tuple[str, float]]]:
    chapter, out = args
    return chapter, render_chapter(chapter, out)


def _run_jobs(work: list[tuple[Chapter, str]], jobs: int):
    """Yield rendered chapters, in this process for one job, else from a spawned pool."""
    if jobs <= 1:
        yield from map(_render_job, work)
        return
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        yield from pool.imap_unordered(_render_job, work)


def _settings(size: str, seed: int, spec: SizeSpec, engines: Sequence[str],
              sources: Sequence[str]) -> dict:
    return {"size": size, "seed": seed, "hours": dict(spec.hours), "engines": list(engines),
            "sources": list(sources), "max_words": spec.max_words,
            "chapter_utts": spec.chapter_utts, "speakers": dict(spec.speakers)}


def foreign_corpus(out: str | Path) -> bool:
    """A LibriSpeech-layout folder that :func:`make_corpus` did not make (LibriSpeech itself, or
    one's own): a tool pointed at it uses it as it is and never writes into it.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> foreign_corpus(root), (root / TRAIN).mkdir(), foreign_corpus(root)
    (False, None, True)
    """
    out = Path(out)
    return (not (out / MANIFEST).is_file() and not (out / IN_PROGRESS).is_file()
            and any((out / split).is_dir() for split in SPLITS))


def _prepare_output(out: Path, settings: dict, overwrite: bool) -> bool:
    """Return True if a finished corpus with these settings is already there; clear a stale one."""
    manifest = out / MANIFEST
    if manifest.is_file() and not overwrite:
        if json.loads(manifest.read_text()).get("settings") == settings:
            return True
    ours = manifest.is_file() or (out / IN_PROGRESS).is_file()
    existing = [s for s in SPLITS if (out / s).exists()]
    if existing and not ours:
        raise FileExistsError(
            f"{out / existing[0]} exists and was not made by make_corpus; refusing to overwrite "
            "it (choose another --out)"
        )
    if existing and not overwrite and manifest.is_file():
        raise FileExistsError(
            f"{manifest} was made with other settings; pass --overwrite to remake the corpus"
        )
    for split in existing:
        shutil.rmtree(out / split)
    manifest.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / IN_PROGRESS).touch()
    return False


def _speaker_lines(chapters: Sequence[Chapter], durations: Mapping[str, float]) -> list[str]:
    minutes: dict[int, float] = {}
    for c in chapters:
        ids = [c.utt_id(i) for i in range(len(c.utterances))]
        minutes[c.speaker_id] = minutes.get(c.speaker_id, 0.0) + sum(durations[i] for i in ids)
    voices = {c.speaker_id: (c.split, c.voice) for c in chapters}
    return [f"{spk:<4}| {voices[spk][0]:<16}| {minutes[spk] / 60:6.2f}| {voices[spk][1].name}"
            for spk in sorted(voices)]


def read_speakers(corpus: Path) -> dict[str, dict[str, str]]:
    """The ``SPEAKERS.TXT`` that :func:`make_corpus` writes, as {speaker id: {"split", "engine",
    "voice"}} (``voice`` the whole ``engine/voice/semitones/speed`` field); {} for a corpus
    whose file is not of that kind (the real LibriSpeech's has other columns) or that has none.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "SPEAKERS.TXT").write_text(SPEAKERS_HEADER[1] + "\\n7   | test-other      |   1.50| flite/slt/+0/1.00\\n")
    >>> read_speakers(d)["7"]
    {'split': 'test-other', 'engine': 'flite', 'voice': 'flite/slt/+0/1.00'}
    """
    path = Path(corpus) / "SPEAKERS.TXT"
    lines = path.read_text().splitlines() if path.is_file() else []
    if SPEAKERS_HEADER[1] not in lines:
        return {}
    speakers = {}
    for line in lines:
        parts = [x.strip() for x in line.split("|")]
        if not line.startswith(";") and len(parts) == 4:
            speakers[parts[0]] = {"split": parts[1], "engine": parts[3].split("/")[0], "voice": parts[3]}
    return speakers


SPEAKERS_HEADER = ("; Synthetic speakers of the offline corpus (tools/data/make_corpus.py)",
                   "; ID |SUBSET           |MINUTES| VOICE (engine/voice/semitones/speed)")


def _write_speakers(out: Path, chapters: Sequence[Chapter], durations: Mapping[str, float]):
    (out / "SPEAKERS.TXT").write_text("\n".join([*SPEAKERS_HEADER] + _speaker_lines(chapters, durations)) + "\n")


def _render(out: Path, chapters: Sequence[Chapter], jobs: int, desc: str, progress: bool) -> dict[str, float]:
    """Synthesise the chapters (longest first); return {utterance ID: seconds}."""
    durations: dict[str, float] = {}
    bar = tqdm(total=sum(len(c.utterances) for c in chapters), unit="utt", desc=desc, disable=not progress)
    work = [(c, str(out)) for c in sorted(chapters, key=lambda c: -len(c.utterances))]
    with bar:
        for chapter, result in _run_jobs(work, jobs):
            durations.update(result)
            bar.update(len(chapter.utterances))
    return durations


def _other_settings(spec: SizeSpec, engines: Sequence[str]) -> dict:
    return {"hours": spec.other_hours, "speakers": spec.other_speakers, "engines": list(engines)}


def add_test_other(out: str | Path, jobs: int = 2, hours: float | None = None,
                   progress: bool = True) -> dict:
    """Add ``test-other`` (or make it again if it was made with other settings or left half
    made) to a finished corpus made without it, leaving every other split as it is; the LM text
    is written again without test-other's documents. Returns test-other's summary."""
    out = Path(out)
    manifest = out / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: not found; make the corpus with tools/data/make_corpus.py first")
    info = json.loads(manifest.read_text())
    st = info["settings"]
    spec = resolve_size(st["size"], {**st["hours"], TEST_OTHER: hours})
    engines = held_out_engines()
    if not engines:
        raise RuntimeError(f"no held-out engine installed for {TEST_OTHER}; "
                           f"{missing_engine_hint(list(HELD_OUT_CYCLE))}")
    other = _other_settings(spec, engines)
    if info.get(TEST_OTHER, {}).get("settings") == other and (out / TEST_OTHER).is_dir():
        return info["summary"]["splits"][TEST_OTHER]
    if "festival-hts" not in engines:
        logger.warning("%s without festival-hts: %s", TEST_OTHER, missing_engine_hint(["festival-hts"]))
    shutil.rmtree(out / TEST_OTHER, ignore_errors=True)
    start = time.time()
    chapters = [c for c in plan_corpus(st["size"], st["seed"], spec.hours, st["engines"], st["sources"],
                                       other_engines=engines) if c.split == TEST_OTHER]
    durations = _render(out, chapters, jobs, f"make_corpus {TEST_OTHER}", progress)
    summary = _summarise(chapters, durations, time.time() - start, time.time() - start, jobs)
    info["summary"]["splits"][TEST_OTHER] = summary["splits"][TEST_OTHER]
    info[TEST_OTHER] = {"settings": other, "summary": {k: v for k, v in summary.items() if k != "splits"}}
    info["voices"] = {k: v for k, v in info.get("voices", {}).items() if v["split"] != TEST_OTHER}
    info["voices"].update(_voice_table(chapters))
    speakers = [line for line in (out / "SPEAKERS.TXT").read_text().splitlines()
                if f"| {TEST_OTHER} " not in line]
    (out / "SPEAKERS.TXT").write_text("\n".join(speakers + _speaker_lines(chapters, durations)) + "\n")
    info.pop("lm_text", None)
    manifest.write_text(json.dumps(info, indent=1))
    logger.info("%s added to %s: %s", TEST_OTHER, out, json.dumps(info["summary"]["splits"][TEST_OTHER]))
    return info["summary"]["splits"][TEST_OTHER]


def corpus_lm_text(corpus: str | Path) -> Path | None:
    """The corpus's LM text (``<corpus>/librispeech-lm-norm.txt``) where there is one, else None.

    >>> corpus_lm_text("/nonexistent") is None
    True
    """
    path = Path(corpus) / LM_TEXT
    return path if path.is_file() else None


def make_corpus(
    out: str | Path,
    size: str = "default",
    seed: int = 1234,
    jobs: int = 2,
    hours: Mapping[str, float] | None = None,
    engines: Sequence[str] | None = None,
    sources: Sequence[str] = SOURCES,
    overwrite: bool = False,
    progress: bool = True,
    test_other: bool = True,
) -> dict:
    """Make (or find already made) the offline LibriSpeech-layout corpus under ``out``.

    Arguments
    ---------
    out : folder of the corpus (the ``data_folder`` of ``prepare_librispeech``).
    size : ``tiny`` | ``default`` | ``bench`` (see ``SIZES``).
    seed : everything drawn (documents, speakers, order) follows from it.
    jobs : worker processes synthesising chapters in parallel.
    hours : per-split overrides of the size's hours, e.g. ``{"train-clean-100": 2.0}``
        (``test-other`` too).
    engines : subset of ``espeak-ng``, ``flite``, ``festival`` (default: all installed).
    overwrite : remake a corpus made with other settings.
    test_other : also make ``test-other`` (held-out engines; added to a corpus made without it).

    Also writes the LM text ``out/librispeech-lm-norm.txt`` (:func:`write_lm_text`) when missing.
    Returns the summary also stored in ``out/corpus.json`` (hours, utterances, speakers per
    split, wall time, audio seconds per wall second).
    """
    out = Path(out)
    spec = resolve_size(size, hours)
    wanted = list(engines or ENGINES)
    engines = available_engines(wanted)
    missing = [e for e in wanted if e not in engines]
    if missing:
        logger.warning("engines not installed, left out: %s; %s", missing,
                       missing_engine_hint(missing))
    if not engines:
        raise RuntimeError(f"no speech engine installed; {missing_engine_hint(wanted)}")
    settings = _settings(size, seed, spec, engines, sources)
    other_hours = (hours or {}).get(TEST_OTHER)
    if _prepare_output(out, settings, overwrite):
        logger.info("corpus already made in %s (same settings): skipping", out)
        if test_other:
            _add_test_other_if_possible(out, jobs, other_hours, progress)
        _ensure_lm_text(out)
        return json.loads((out / MANIFEST).read_text())["summary"]
    shutil.rmtree(out / TEST_OTHER, ignore_errors=True)
    start = time.time()
    chapters = plan_corpus(size, seed, spec.hours, engines, sources)
    planned = time.time()
    durations = _render(out, chapters, jobs, f"make_corpus {size}", progress)
    summary = _summarise(chapters, durations, time.time() - start, time.time() - planned, jobs)
    _write_speakers(out, chapters, durations)
    (out / MANIFEST).write_text(json.dumps({"settings": settings, "summary": summary,
                                            "voices": _voice_table(chapters)}, indent=1))
    (out / IN_PROGRESS).unlink(missing_ok=True)
    logger.info("corpus made in %s: %s", out, json.dumps(summary))
    if test_other:
        _add_test_other_if_possible(out, jobs, other_hours, progress)
    _ensure_lm_text(out)
    return json.loads((out / MANIFEST).read_text())["summary"]


def _add_test_other_if_possible(out: Path, jobs: int, hours: float | None, progress: bool) -> None:
    """test-other where a held-out engine is installed; else a warning (the corpus stays usable)."""
    if held_out_engines():
        add_test_other(out, jobs, hours, progress)
    else:
        logger.warning("no held-out engine installed: %s not made; %s", TEST_OTHER,
                       missing_engine_hint(list(HELD_OUT_CYCLE)))


def _ensure_lm_text(out: Path) -> None:
    """Write the corpus's LM text unless the manifest says it is there and current."""
    info = json.loads((out / MANIFEST).read_text())
    if info.get("lm_text") and (out / LM_TEXT).is_file():
        return
    cap = SIZES[info["settings"]["size"]].lm_words
    info["lm_text"] = {k: v for k, v in write_lm_text(out, max_words=cap).items() if k != "held_out_documents"}
    (out / MANIFEST).write_text(json.dumps(info, indent=1))
    logger.info("LM text %s: %s", out / LM_TEXT, json.dumps(info["lm_text"]))


def _voice_table(chapters: Sequence[Chapter]) -> dict[str, dict]:
    return {str(c.speaker_id): {"split": c.split, **asdict(c.voice)} for c in chapters}


def _summarise(chapters: Sequence[Chapter], durations: Mapping[str, float], wall: float,
               synth: float, jobs: int) -> dict:
    splits: dict[str, dict] = {}
    for c in chapters:
        entry = splits.setdefault(c.split, {"hours": 0.0, "utterances": 0, "speakers": set(),
                                            "documents": set()})
        entry["hours"] += sum(durations[c.utt_id(i)] for i in range(len(c.utterances))) / 3600
        entry["utterances"] += len(c.utterances)
        entry["speakers"].add(c.speaker_id)
        entry["documents"].add(c.doc_id)
    for entry in splits.values():
        entry["hours"] = round(entry["hours"], 4)
        entry["speakers"] = len(entry["speakers"])
        entry["documents"] = sorted(entry["documents"])
    audio = sum(durations.values())
    return {"splits": splits, "audio_hours": round(audio / 3600, 4),
            "wall_seconds": round(wall, 2), "synthesis_seconds": round(synth, 2), "jobs": jobs,
            "audio_seconds_per_wall_second": round(audio / max(wall, 1e-9), 1)}


def write_lm_text(corpus: str | Path, out: str | Path | None = None,
                  sources: Sequence[str] | None = None, max_words: int | None = None) -> dict:
    """The text of every document the corpus does not read in dev, test or test-other (the
    training documents and the unused ones), one transcript a line, as LibriSpeech's
    ``librispeech-lm-norm.txt`` is laid out: a word LM text with no held-out sentence.

    Reads ``corpus/corpus.json`` for the documents of each split; writes ``out`` (default
    ``corpus/librispeech-lm-norm.txt``); with ``max_words``, the training documents and then the
    unused ones (in their order) until that many words; returns
    ``{"sentences", "words", "documents", "held_out_documents"}``.
    """
    corpus = Path(corpus)
    out = Path(out) if out is not None else corpus / LM_TEXT
    manifest = corpus / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: not found; make the corpus with tools/data/make_corpus.py first")
    info = json.loads(manifest.read_text())
    held_out = {d for split in HELD_OUT_SPLITS
                for d in info["summary"]["splits"].get(split, {}).get("documents", [])}
    docs = [d for d in _cached_documents(tuple(sources or info["settings"]["sources"])) if d.doc_id not in held_out]
    if max_words is not None:
        train = set(info["summary"]["splits"].get(TRAIN, {}).get("documents", []))
        docs = sorted(docs, key=lambda d: d.doc_id not in train)
        kept, words = [], 0
        for d in docs:
            if words >= max_words and d.doc_id not in train:
                break
            kept.append(d)
            words += d.n_words
        docs = kept
    lines = [s.words for d in docs for s in d.sentences]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"sentences": len(lines), "words": sum(len(x.split()) for x in lines), "documents": len(docs),
            "held_out_documents": sorted(held_out)}

