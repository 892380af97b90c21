"""Tests of LibriSpeech preparation (recipes/LibriSpeech/librispeech_prepare.py)."""

import csv
import importlib.util
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechpos.speech.data import librispeech
from speechpos.speech.data.librispeech import (
    CSV_HEADER,
    DataPreparationError,
    Row,
    low_label_subsets,
    prepare_librispeech,
    read_csv,
)

SPLITS = ["train-clean-100", "dev-clean", "test-clean"]
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "LibriSpeech" / "librispeech_prepare.py"


def transcripts_on_disk(split_dir):
    """{ID: words} from every trans.txt of a split folder."""
    out = {}
    for trans in split_dir.glob("*/*/*.trans.txt"):
        for line in trans.read_text().splitlines():
            utt_id, words = line.split(" ", 1)
            out[utt_id] = words
    return out


@pytest.fixture
def train_copy(tiny_librispeech, tmp_path):
    """A writable copy of the tiny corpus' train split, and its first chapter folder."""
    root = tmp_path / "LibriSpeech"
    shutil.copytree(tiny_librispeech / "train-clean-100", root / "train-clean-100")
    chapter = sorted((root / "train-clean-100").glob("*/*"))[0]
    return root, chapter


def prepare_train(root, tmp_path, **kwargs):
    return prepare_librispeech(root, tmp_path / "prep", tr_splits=["train-clean-100"],
                               progress=False, **kwargs)


def test_recipe_file_exposes_prepare():
    spec = importlib.util.spec_from_file_location("librispeech_prepare", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.prepare_librispeech is prepare_librispeech
    assert module.DataPreparationError is DataPreparationError
    assert issubclass(DataPreparationError, ValueError)


def test_csv_rows_and_durations(tiny_librispeech, tmp_path):
    csvs = prepare_librispeech(tiny_librispeech, tmp_path, tr_splits=SPLITS[:1],
                               dev_splits=SPLITS[1:2], te_splits=SPLITS[2:], progress=False)
    assert list(csvs) == SPLITS
    for split in SPLITS:
        with open(csvs[split], newline="") as f:
            reader = csv.reader(f)
            assert tuple(next(reader)) == CSV_HEADER
        rows = read_csv(csvs[split])
        expected = transcripts_on_disk(tiny_librispeech / split)
        assert {r.ID: r.wrd for r in rows} == expected
        assert [r.ID for r in rows] == sorted(expected)
        for r in rows:
            wav = Path(r.wav)
            assert wav.is_absolute() and wav.name == f"{r.ID}.flac"
            assert wav.parent == (tiny_librispeech / split / r.spk_id / r.ID.split("-")[1]).resolve()
            assert r.spk_id == r.ID.split("-")[0]
            assert r.duration == pytest.approx(sf.info(r.wav).duration, abs=1e-9)
            assert r.duration > 0.3


def test_select_n_sentences_and_merge(tiny_librispeech, tmp_path):
    csvs = prepare_librispeech(tiny_librispeech, tmp_path, tr_splits=SPLITS[:1],
                               dev_splits=SPLITS[1:2], select_n_sentences=[3, None],
                               merge_lst=SPLITS[:2], merge_name="all.csv", progress=False)
    assert [r.ID for r in read_csv(csvs["train-clean-100"])] == sorted(
        transcripts_on_disk(tiny_librispeech / "train-clean-100"))[:3]
    assert len(read_csv(csvs["all"])) == 3 + len(read_csv(csvs["dev-clean"]))


def test_skips_work_already_done(tiny_librispeech, tmp_path, monkeypatch):
    first = prepare_librispeech(tiny_librispeech, tmp_path, dev_splits=["dev-clean"],
                                progress=False)
    before = first["dev-clean"].read_text()

    def fail(*args, **kwargs):
        raise AssertionError("read_split called although the CSVs exist")

    monkeypatch.setattr(librispeech, "read_split", fail)
    again = prepare_librispeech(tiny_librispeech, tmp_path, dev_splits=["dev-clean"])
    assert again == first and again["dev-clean"].read_text() == before
    with pytest.raises(AssertionError, match="read_split called"):  # options changed: redo
        prepare_librispeech(tiny_librispeech, tmp_path, dev_splits=["dev-clean"],
                            select_n_sentences=1)
    with pytest.raises(AssertionError, match="read_split called"):
        prepare_librispeech(tiny_librispeech, tmp_path, dev_splits=["dev-clean"], overwrite=True)
    assert prepare_librispeech(tiny_librispeech, tmp_path, dev_splits=["x"], skip_prep=True) == {}


def test_missing_split_folder(tiny_librispeech, tmp_path):
    missing = tiny_librispeech / "train-other-500"
    with pytest.raises(DataPreparationError, match=re.escape(f"{missing}: split folder not found")):
        prepare_librispeech(tiny_librispeech, tmp_path, tr_splits=["train-other-500"])


def test_transcript_line_without_audio(train_copy, tmp_path):
    root, chapter = train_copy
    flac = sorted(chapter.glob("*.flac"))[-1]
    flac.unlink()
    trans = next(chapter.glob("*.trans.txt"))
    with pytest.raises(DataPreparationError,
                       match=re.escape(f"{trans}: line ") + r"\d+: no audio file for "
                       + re.escape(flac.stem)):
        prepare_train(root, tmp_path)


def test_audio_without_transcript(train_copy, tmp_path):
    root, chapter = train_copy
    extra = chapter / f"{chapter.parent.name}-{chapter.name}-0099.flac"
    shutil.copy(sorted(chapter.glob("*.flac"))[0], extra)
    with pytest.raises(DataPreparationError,
                       match=re.escape(f"{extra}: no transcript line for {extra.stem}")):
        prepare_train(root, tmp_path)


def test_chapter_without_trans_file(train_copy, tmp_path):
    root, chapter = train_copy
    next(chapter.glob("*.trans.txt")).unlink()
    first = sorted(chapter.glob("*.flac"))[0]
    with pytest.raises(DataPreparationError, match=re.escape(f"{first}: no transcript line")):
        prepare_train(root, tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_corrupt_flac(train_copy, tmp_path, damage):
    root, chapter = train_copy
    flac = sorted(chapter.glob("*.flac"))[0]
    data = flac.read_bytes()
    flac.write_bytes({"garbage": b"not a flac file" * 20, "empty": b"",
                      "truncated": data[: len(data) // 2]}[damage])
    with pytest.raises(DataPreparationError,
                       match=re.escape(f"{flac}: unreadable or corrupt audio file")):
        prepare_train(root, tmp_path)


def test_corrupt_frame_found_by_full_check(train_copy, tmp_path):
    root, chapter = train_copy
    flac = sorted(chapter.glob("*.flac"))[0]
    data = bytearray(flac.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b"\xff" * 64
    flac.write_bytes(bytes(data))
    with pytest.raises(DataPreparationError, match=re.escape(f"{flac}: unreadable or corrupt")):
        prepare_train(root, tmp_path, check_audio="full")


def test_wrong_sample_rate(train_copy, tmp_path):
    root, chapter = train_copy
    flac = sorted(chapter.glob("*.flac"))[0]
    sf.write(flac, np.zeros(22050, dtype=np.float32), 22050)
    with pytest.raises(DataPreparationError,
                       match=re.escape(f"{flac}: sample rate 22050 Hz, expected 16000 Hz")):
        prepare_train(root, tmp_path)


def test_stereo(train_copy, tmp_path):
    root, chapter = train_copy
    flac = sorted(chapter.glob("*.flac"))[0]
    sf.write(flac, np.zeros((16000, 2), dtype=np.float32), 16000)
    with pytest.raises(DataPreparationError, match=re.escape(f"{flac}: 2 channels")):
        prepare_train(root, tmp_path)


@pytest.mark.parametrize("line_end", ["", "   "])
def test_empty_transcript(train_copy, tmp_path, line_end):
    root, chapter = train_copy
    trans = next(chapter.glob("*.trans.txt"))
    lines = trans.read_text().splitlines()
    utt_id = lines[0].split()[0]
    trans.write_text("\n".join([utt_id + line_end, *lines[1:]]) + "\n")
    with pytest.raises(DataPreparationError,
                       match=re.escape(f"{trans}: line 1: empty transcript for {utt_id}")):
        prepare_train(root, tmp_path)


def fake_rows(n_speakers=5, per_speaker=6, seconds=10.0, step=1.0):
    return [Row(f"{s}-7-{i:04d}", seconds + step * i, f"/x/{s}-7-{i:04d}.flac", str(s), "A B")
            for s in range(100, 100 + n_speakers) for i in range(per_speaker)]


def test_low_label_subsets_deterministic_nested_within_budget():
    rows = fake_rows()
    budgets = {"a": 35.0, "b": 100.0, "c": 250.0}
    subsets = low_label_subsets(rows, budgets, seed=3)
    assert subsets == low_label_subsets(rows, budgets, seed=3)
    assert subsets != low_label_subsets(rows, budgets, seed=4)
    for name, budget in budgets.items():
        total = sum(r.duration for r in subsets[name])
        assert 0 < total <= budget
        # as full as the speaker-by-speaker order allows: the next utterance would not fit
        assert total > budget - 16.0
    ids = {name: {r.ID for r in s} for name, s in subsets.items()}
    assert ids["a"] <= ids["b"] <= ids["c"]


def test_low_label_subsets_drawn_by_speaker():
    rows = fake_rows(n_speakers=5, per_speaker=6, seconds=10.0, step=0.0)
    subsets = low_label_subsets(rows, {"three": 33.0, "ten": 110.0}, seed=0)
    # one utterance from each speaker in turn: 3 utterances -> 3 speakers
    assert len({r.spk_id for r in subsets["three"]}) == len(subsets["three"]) == 3
    counts = {}
    for r in subsets["ten"]:
        counts[r.spk_id] = counts.get(r.spk_id, 0) + 1
    assert len(counts) == 5 and max(counts.values()) - min(counts.values()) <= 1


def test_low_label_csvs_and_small_corpus_warning(tiny_librispeech, tmp_path, caplog):
    train = read_csv(prepare_train(tiny_librispeech, tmp_path)["train-clean-100"])
    total = sum(r.duration for r in train)
    with caplog.at_level(logging.WARNING, logger="speechpos.speech.data.librispeech"):
        csvs = prepare_train(tiny_librispeech, tmp_path, low_label={"15s": 15.0, "big": 1e5},
                             low_label_seed=7)
    small, big = read_csv(csvs["train-15s"]), read_csv(csvs["train-big"])
    assert csvs["train-15s"].name == "train-15s.csv"
    assert 0 < sum(r.duration for r in small) <= 15.0
    assert {r.ID for r in small} <= {r.ID for r in big} == {r.ID for r in train}
    assert "low-label subset big" in caplog.text and f"only {total / 3600:.2f} h" in caplog.text
    assert "low-label subset 15s" not in caplog.text
    again = prepare_train(tiny_librispeech, tmp_path / "again", low_label={"15s": 15.0},
                          low_label_seed=7)
    assert read_csv(again["train-15s"]) == small


def test_low_label_names():
    with pytest.raises(ValueError, match="unknown low-label subset"):
        prepare_librispeech("x", "y", tr_splits=["t"], low_label=["5min"])
    assert librispeech._budgets(["10h", "10min", "1h"]) == {"10min": 600.0, "1h": 3600.0,
                                                           "10h": 36000.0}
