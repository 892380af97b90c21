"""Speech Commands preparation on a tiny made corpus: mapping, silence, padding, errors."""

import csv
import shutil

import numpy as np
import pytest
import soundfile as sf

from speechpos.corpora.speech_commands import CORE_WORDS, which_set
from speechpos.recipes import user_errors
from speechpos.speech.data.keyword_data import read_clip
from speechpos.speech.data.speech_commands import (
    SILENCE,
    UNKNOWN,
    SpeechCommandsError,
    prepare_speech_commands,
)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def prepared(tiny_speech_commands, tmp_path_factory):
    save = tmp_path_factory.mktemp("prep")
    prepare_speech_commands(tiny_speech_commands, save, task="12")
    return save


def test_12_class_mapping_and_counts(prepared, tiny_speech_commands):
    train = rows(prepared / "train.csv")
    labels = {r["label"] for r in train}
    assert labels == set(CORE_WORDS) | {SILENCE, UNKNOWN}
    for r in train:
        if r["word"] in CORE_WORDS:
            assert r["label"] == r["word"]
        elif r["label"] != SILENCE:
            assert r["label"] == UNKNOWN
    known = sum(r["label"] in CORE_WORDS for r in train)
    assert sum(r["label"] == UNKNOWN for r in train) == int(np.ceil(known * 0.1))
    assert sum(r["label"] == SILENCE for r in train) == int(np.ceil(known * 0.1))
    assert (prepared / "labels.txt").read_text().split() == [*CORE_WORDS, SILENCE, UNKNOWN]


def test_lists_by_speaker(prepared, tiny_speech_commands):
    split_of = {"train": "training", "valid": "validation", "test": "testing"}
    speakers = {}
    for split in ("train", "valid", "test"):
        for r in rows(prepared / f"{split}.csv"):
            if r["label"] == SILENCE:
                continue
            assert which_set(r["wav"]) == split_of[split]
            speakers.setdefault(r["spk_id"], set()).add(split)
    assert all(len(s) == 1 for s in speakers.values())
    listed = (tiny_speech_commands / "testing_list.txt").read_text().split()
    test_ids = {r["ID"] for r in rows(prepared / "test.csv")}
    known = [p for p in listed if p.split("/")[0] in CORE_WORDS]
    assert {f"{p.split('/')[0]}_{p.split('/')[1][:-4]}" for p in known} <= test_ids


def test_silence_cut_from_the_split_region_of_the_noise(prepared):
    for split, (low, high) in {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}.items():
        silence = [r for r in rows(prepared / f"{split}.csv") if r["label"] == SILENCE]
        assert silence
        for r in silence:
            frames = sf.info(r["wav"]).frames
            start, stop = int(r["start"]), int(r["stop"])
            assert "_background_noise_" in r["wav"] and stop - start == 16000
            assert low * frames <= start and stop <= high * frames + 1
            assert read_clip(r["wav"], start, stop).abs().sum() > 0


def test_short_clip_is_zero_padded(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.full(9000, 0.25, dtype="float32"), 16000)
    clip = read_clip(str(path), 0, 9000)
    assert clip.shape == (16000,) and float(clip[9000:].abs().sum()) == 0.0


def test_all_words_task(tiny_speech_commands, tmp_path):
    prepare_speech_commands(tiny_speech_commands, tmp_path, task="all")
    labels = (tmp_path / "labels.txt").read_text().split()
    assert len(labels) == 30 and SILENCE not in labels
    assert {r["label"] for r in rows(tmp_path / "train.csv")} == set(labels)


@pytest.fixture
def corpus_copy(tiny_speech_commands, tmp_path):
    root = tmp_path / "sc"
    shutil.copytree(tiny_speech_commands, root)
    return root


def check_error(root, tmp_path, message):
    with pytest.raises(SpeechCommandsError) as err:
        prepare_speech_commands(root, tmp_path / "prep")
    assert str(err.value) == message
    assert isinstance(err.value, user_errors())


def test_missing_list_file(corpus_copy, tmp_path):
    (corpus_copy / "testing_list.txt").unlink()
    check_error(corpus_copy, tmp_path, f"{corpus_copy}/testing_list.txt: list file not found "
                "(a Speech Commands folder holds validation_list.txt and testing_list.txt)")


def test_list_entry_without_file(corpus_copy, tmp_path):
    lst = corpus_copy / "validation_list.txt"
    lst.write_text(lst.read_text() + "yes/ffffffff_nohash_0.wav\n")
    line = len(lst.read_text().splitlines())
    check_error(corpus_copy, tmp_path, f"{lst} line {line}: yes/ffffffff_nohash_0.wav has no file "
                f"under {corpus_copy}")


def test_wrong_sample_rate(corpus_copy, tmp_path):
    bad = sorted((corpus_copy / "go").glob("*.wav"))[0]
    sf.write(bad, np.zeros(8000, dtype="float32"), 8000)
    check_error(corpus_copy, tmp_path, f"{bad.resolve()}: sample rate is 8000 Hz, expected 16000 Hz")


def test_empty_word_folder(corpus_copy, tmp_path):
    (corpus_copy / "backward").mkdir()
    check_error(corpus_copy, tmp_path, f"{corpus_copy}/backward: word folder holds no .wav files")


def test_missing_data_folder(tmp_path):
    check_error(tmp_path / "nowhere", tmp_path, f"data_folder {tmp_path}/nowhere does not exist: point "
                "--data_folder at Speech Commands, or make a corpus with tools/data/make_kws_corpus.py")


def test_prepared_once(prepared, tiny_speech_commands):
    before = (prepared / "train.csv").stat().st_mtime_ns
    prepare_speech_commands(tiny_speech_commands, prepared, task="12")
    assert (prepared / "train.csv").stat().st_mtime_ns == before


def test_the_real_layout_has_no_second_test_list(prepared):
    assert not (prepared / "test_other.csv").exists()


def test_a_second_test_list_is_prepared_and_never_trains(tiny_speech_commands_other, tmp_path):
    csvs = prepare_speech_commands(tiny_speech_commands_other, tmp_path, task="12")
    assert set(csvs) == {"train", "valid", "test", "test_other"}
    other = rows(tmp_path / "test_other.csv")
    listed = (tiny_speech_commands_other / "testing_other_list.txt").read_text().split()
    words = [r for r in other if r["label"] != SILENCE]
    known = [p for p in listed if p.split("/")[0] in CORE_WORDS]
    assert {f"{p.split('/')[0]}_{p.split('/')[1][:-4]}" for p in known} <= {r["ID"] for r in words}
    other_speakers = {r["spk_id"] for r in words}
    for split in ("train", "valid", "test"):
        assert not other_speakers & {r["spk_id"] for r in rows(tmp_path / f"{split}.csv")}, split
    for r in (r for r in other if r["label"] == SILENCE):  # cut from the noise's test region
        assert int(r["start"]) >= 0.9 * sf.info(r["wav"]).frames
    assert sum(r["label"] == SILENCE for r in other) == int(np.ceil(sum(r["label"] in CORE_WORDS for r in other) * 0.1))
