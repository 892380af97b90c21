"""Tests of the offline LibriSpeech-layout corpus maker (tools/data/make_corpus.py)."""

import json
import re
import sys
from pathlib import Path

import pytest
import soundfile as sf

from speechpos.corpora.librispeech import (
    LM_TEXT,
    SIZES,
    SPLITS,
    TEST_OTHER,
    held_out_engines,
    make_corpus,
    plan_corpus,
)
from speechpos.experiments.runs import run_python

TOOL = Path(__file__).resolve().parents[2] / "tools" / "data" / "make_corpus.py"
SEED = 1234  # the seed of the tiny_librispeech fixture
ALL_SPLITS = (*SPLITS, TEST_OTHER)


def corpus_listing(root):
    """{relative path of every FLAC / trans.txt: transcript text (or None)}."""
    out = {}
    for path in sorted(root.glob("*/*/*/*")):
        rel = str(path.relative_to(root))
        out[rel] = path.read_text() if path.name.endswith(".trans.txt") else None
    return out


def transcripts(root, split):
    lines = {}
    for trans in (root / split).glob("*/*/*.trans.txt"):
        for line in trans.read_text().splitlines():
            utt_id, words = line.split(" ", 1)
            lines[utt_id] = words
    return lines


def test_layout_and_audio_format(tiny_librispeech):
    root = tiny_librispeech
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(ALL_SPLITS)
    for split in ALL_SPLITS:
        lines = transcripts(root, split)
        assert 2 <= len(lines) <= 20
        for chapter in (root / split).glob("*/*"):
            spk, chap = chapter.parent.name, chapter.name
            assert spk.isdigit() and chap.isdigit()
            names = sorted(p.name for p in chapter.iterdir())
            assert f"{spk}-{chap}.trans.txt" in names
            for flac in chapter.glob("*.flac"):
                assert re.fullmatch(rf"{spk}-{chap}-\d{{4}}\.flac", flac.name)
                assert flac.stem in lines
                info = sf.info(flac)
                assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
                assert 0.5 < info.duration < 35
        for utt_id, words in lines.items():
            assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", words), words
            spk, chap, _ = utt_id.split("-")
            assert (root / split / spk / chap / f"{utt_id}.flac").is_file()
    speakers = (root / "SPEAKERS.TXT").read_text()
    assert "espeak-ng/" in speakers


def test_splits_share_no_speaker_sentence_or_document(tiny_librispeech):
    root = tiny_librispeech
    speakers = {s: {p.name for p in (root / s).iterdir()} for s in ALL_SPLITS}
    words = {s: set(transcripts(root, s).values()) for s in ALL_SPLITS}
    summary = json.loads((root / "corpus.json").read_text())
    docs = {s: set(summary["summary"]["splits"][s]["documents"]) for s in ALL_SPLITS}
    voices = summary["voices"]
    for i, a in enumerate(ALL_SPLITS):
        for b in ALL_SPLITS[i + 1:]:
            assert not speakers[a] & speakers[b]
            assert not words[a] & words[b]
            assert not docs[a] & docs[b]
            settings = {json.dumps({k: v for k, v in voices[x].items() if k != "split"})
                        for x in speakers[a]}
            assert not settings & {json.dumps({k: v for k, v in voices[x].items()
                                               if k != "split"}) for x in speakers[b]}
    # no sentence repeated inside the corpus either
    all_lines = [w for s in ALL_SPLITS for w in transcripts(root, s).values()]
    assert len(all_lines) == len(set(all_lines))


def test_test_other_is_read_by_voices_no_other_split_uses(tiny_librispeech):
    voices = json.loads((tiny_librispeech / "corpus.json").read_text())["voices"]
    other = [v for v in voices.values() if v["split"] == TEST_OTHER]
    rest = [v for v in voices.values() if v["split"] != TEST_OTHER]
    assert {v["engine"] for v in other} == set(held_out_engines()) == {"festival-hts", "espeak-ng"}
    assert "festival-hts" not in {v["engine"] for v in rest}
    accent = {v["voice"].split("+")[0] for v in rest if v["engine"] == "espeak-ng"}
    assert {v["voice"].split("+")[0] for v in other if v["engine"] == "espeak-ng"} == {"en-us-nyc"}
    assert "en-us-nyc" not in accent


def test_test_other_is_added_to_a_corpus_made_without_it_leaving_the_rest(tiny_librispeech, tmp_path):
    without = tmp_path / "without"
    plan = plan_corpus(size="tiny", seed=SEED)
    with_other = plan_corpus(size="tiny", seed=SEED, other_engines=held_out_engines())
    assert [c for c in with_other if c.split != TEST_OTHER] == plan
    make_corpus(without, size="tiny", seed=SEED, jobs=1, progress=False, test_other=False)
    assert not (without / TEST_OTHER).exists()
    before = {k: v for k, v in corpus_listing(without).items()}
    flac = next(without.glob("train-clean-100/*/*/*.flac"))
    mtime = flac.stat().st_mtime_ns
    summary = make_corpus(without, size="tiny", seed=SEED, jobs=1, progress=False)
    assert summary["splits"][TEST_OTHER]["utterances"] > 0
    after = corpus_listing(without)
    assert {k: v for k, v in after.items() if not k.startswith(TEST_OTHER)} == before
    assert after == corpus_listing(tiny_librispeech)
    assert flac.stat().st_mtime_ns == mtime
    assert (without / "SPEAKERS.TXT").read_text() == (tiny_librispeech / "SPEAKERS.TXT").read_text()
    assert (without / LM_TEXT).read_text() == (tiny_librispeech / LM_TEXT).read_text()


def test_plan_is_deterministic_and_matches_the_corpus(tiny_librispeech):
    plan = plan_corpus(size="tiny", seed=SEED)
    again = plan_corpus(size="tiny", seed=SEED)
    as_lines = {c.utt_id(i): u.words for c in plan for i, u in enumerate(c.utterances)}
    assert as_lines == {c.utt_id(i): u.words for c in again for i, u in enumerate(c.utterances)}
    assert [c.voice for c in plan] == [c.voice for c in again]
    on_disk = {k: v for s in SPLITS for k, v in transcripts(tiny_librispeech, s).items()}
    plan = plan_corpus(size="tiny", seed=SEED, other_engines=held_out_engines())
    as_lines = {c.utt_id(i): u.words for c in plan for i, u in enumerate(c.utterances)}
    on_disk.update(transcripts(tiny_librispeech, TEST_OTHER))
    assert as_lines == on_disk
    other = plan_corpus(size="tiny", seed=SEED + 1)
    assert {c.utt_id(i): u.words for c in other for i, u in enumerate(c.utterances)} != as_lines


def test_same_seed_same_corpus(tiny_librispeech, tmp_path):
    make_corpus(tmp_path / "again", size="tiny", seed=SEED, jobs=1, progress=False)
    assert corpus_listing(tmp_path / "again") == corpus_listing(tiny_librispeech)
    for flac in sorted(tiny_librispeech.glob("*/*/*/*.flac"))[:4]:
        twin = tmp_path / "again" / flac.relative_to(tiny_librispeech)
        assert (sf.read(twin)[0] == sf.read(flac)[0]).all()


def test_finished_corpus_is_not_made_again(tiny_librispeech):
    flac = next(tiny_librispeech.glob("train-clean-100/*/*/*.flac"))
    mtime = flac.stat().st_mtime_ns
    summary = make_corpus(tiny_librispeech, size="tiny", seed=SEED, jobs=2, progress=False)
    assert summary["splits"]["train-clean-100"]["utterances"] > 0
    assert flac.stat().st_mtime_ns == mtime


def test_refuses_foreign_or_differently_made_folders(tiny_librispeech, tmp_path):
    (tmp_path / "real" / "dev-clean").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not made by make_corpus"):
        make_corpus(tmp_path / "real", size="tiny", progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_corpus(tiny_librispeech, size="tiny", seed=SEED + 1, progress=False)


def test_size_and_hours_checks():
    with pytest.raises(ValueError, match="unknown size"):
        plan_corpus(size="huge")
    with pytest.raises(ValueError, match="positive"):
        plan_corpus(size="tiny", hours={"dev-clean": 0})


def test_cli_help():
    out = run_python([sys.executable, str(TOOL), "--help"], capture_output=True, text=True,
                         check=True).stdout
    for option in ("--out", "--size", "--seed", "--jobs", "--train-hours", "--overwrite"):
        assert option in out


def test_lm_text_holds_the_training_text_and_no_held_out_sentence(tiny_librispeech, tmp_path):
    from speechpos.corpora.librispeech import corpus_lm_text, write_lm_text

    def transcripts(split):
        return {line.split(" ", 1)[1] for t in Path(tiny_librispeech, split).rglob("*.trans.txt")
                for line in t.read_text().splitlines()}

    out = tmp_path / "lm.txt"
    info = write_lm_text(tiny_librispeech, out)
    lines = out.read_text().splitlines()
    assert len(lines) == info["sentences"] and info["held_out_documents"]
    joined = " " + " ".join(lines) + " "  # an utterance may read consecutive sentences
    assert all(f" {t} " in joined for t in transcripts("train-clean-100"))
    held_out = transcripts("dev-clean") | transcripts("test-clean") | transcripts(TEST_OTHER)
    assert held_out and not any(f" {t} " in joined for t in held_out)
    assert len(lines) > 10 * len(transcripts("train-clean-100"))  # the unused documents too
    # the corpus maker wrote it into the corpus, where the recipes and tools find it (the tiny
    # size's capped: the training documents first, then unused ones to 20,000 words)
    assert corpus_lm_text(tiny_librispeech) == tiny_librispeech / LM_TEXT
    capped = write_lm_text(tiny_librispeech, tmp_path / "capped.txt", max_words=SIZES["tiny"].lm_words)
    assert (tiny_librispeech / LM_TEXT).read_text() == (tmp_path / "capped.txt").read_text()
    assert 20_000 <= capped["words"] < 40_000 and capped["held_out_documents"] == info["held_out_documents"]
    kept = " " + " ".join((tmp_path / "capped.txt").read_text().split()) + " "
    assert all(f" {t} " in kept for t in transcripts("train-clean-100"))
    assert not any(f" {t} " in kept for t in held_out)
    manifest = json.loads((tiny_librispeech / "corpus.json").read_text())
    assert manifest["lm_text"]["words"] == capped["words"]
    with pytest.raises(FileNotFoundError, match="corpus.json: not found; make the corpus"):
        write_lm_text(tmp_path, tmp_path / "x.txt")
