"""The Speech Commands-layout corpus maker: layout, hash split, determinism, no remake."""

import hashlib
import json

import pytest
import soundfile as sf

from speechpos.corpora.speech_commands import (
    OTHER_SPEAKERS,
    SIZES,
    WORDS_V1,
    expected_clips,
    make_kws_corpus,
    plan_speakers,
    speaker_of,
    which_set,
)


def test_layout(tiny_speech_commands):
    root = tiny_speech_commands
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")) == list(WORDS_V1)
    wavs = sorted(root.glob("*/*_nohash_*.wav"))
    assert len(wavs) == expected_clips("tiny")
    info = sf.info(wavs[0])
    assert info.samplerate == 16000 and info.channels == 1 and info.frames <= 16000
    noise = sorted(p.name for p in (root / "_background_noise_").glob("*.wav"))
    assert noise == ["babble.wav", "brown_noise.wav", "hum.wav", "pink_noise.wav", "white_noise.wav"]
    assert sf.info(root / "_background_noise_" / "hum.wav").duration >= 10
    for name in ("validation_list.txt", "testing_list.txt"):
        entries = (root / name).read_text().split()
        assert entries and all((root / e).is_file() for e in entries)


def test_which_set_is_speech_commands_rule():
    name = "yes/0a7c2a8d_nohash_0.wav"
    hashed = int(hashlib.sha1(b"0a7c2a8d").hexdigest(), 16)
    percentage = (hashed % (2**27)) * (100.0 / (2**27 - 1))
    expected = "validation" if percentage < 10 else "testing" if percentage < 20 else "training"
    assert which_set(name) == expected


def test_test_speakers_kept_out_of_training(tiny_speech_commands):
    root = tiny_speech_commands
    listed = set((root / "testing_list.txt").read_text().split()) | set(
        (root / "validation_list.txt").read_text().split())
    test_speakers = {speaker_of(p) for p in (root / "testing_list.txt").read_text().split()}
    training = [p for p in root.glob("*/*_nohash_*.wav") if f"{p.parent.name}/{p.name}" not in listed]
    assert training and test_speakers
    assert not test_speakers & {speaker_of(str(p)) for p in training}
    voices = dict(line.split(" | ")[::2] for line in (root / "SPEAKERS.txt").read_text().splitlines())
    assert len(set(voices.values())) == len(voices)  # every speaker is its own voice setting


def test_plan_is_deterministic():
    assert plan_speakers(SIZES["tiny"], 7, ["espeak-ng", "flite"]) == plan_speakers(
        SIZES["tiny"], 7, ["espeak-ng", "flite"])
    assert plan_speakers(SIZES["tiny"], 7, ["espeak-ng"]) != plan_speakers(SIZES["tiny"], 8, ["espeak-ng"])


def test_same_seed_same_audio_and_no_remake(tiny_speech_commands, tmp_path):
    again = make_kws_corpus(tmp_path / "again", size="tiny", seed=1234, jobs=2)
    for rel in ("yes/" + sorted(p.name for p in (tiny_speech_commands / "yes").iterdir())[0],
                "_background_noise_/babble.wav"):
        assert (again / rel).read_bytes() == (tiny_speech_commands / rel).read_bytes()
    stamp = (again / "kws_corpus.json").stat().st_mtime_ns
    make_kws_corpus(again, size="tiny", seed=1234, jobs=2)
    assert (again / "kws_corpus.json").stat().st_mtime_ns == stamp


def test_held_out_engine_speakers_are_only_in_their_own_list(tiny_speech_commands_other):
    root = tiny_speech_commands_other
    engine_of = {line.split(" | ")[0]: line.split(" | ")[2].split("/")[0]
                 for line in (root / "SPEAKERS.txt").read_text().splitlines()}
    other = (root / "testing_other_list.txt").read_text().split()
    assert len(other) == OTHER_SPEAKERS["tiny"] * len(WORDS_V1)
    other_speakers = {speaker_of(p) for p in other}
    assert {engine_of[s] for s in other_speakers} == {"flite"}
    assert "flite" not in {engine for s, engine in engine_of.items() if s not in other_speakers}
    listed = set((root / "testing_list.txt").read_text().split()) | set(
        (root / "validation_list.txt").read_text().split())
    assert not other_speakers & {speaker_of(p) for p in listed}
    # Their ids hash to testing: a tool that knows only the hash rule never trains on them.
    assert {which_set(p) for p in other} == {"testing"}
    assert len(list(root.glob("*/*_nohash_*.wav"))) == expected_clips("tiny", "flite")
    summary = json.loads((root / "kws_corpus.json").read_text())
    assert summary["settings"]["held_out_engine"] == "flite" and summary["speakers"]["testing_other"] == 2


def test_held_out_engine_must_be_one_of_several_engines():
    with pytest.raises(ValueError, match="held_out_engine 'festival' is not among the engines"):
        plan_speakers(SIZES["tiny"], 0, ["espeak-ng", "flite"], "festival", 2)
    with pytest.raises(ValueError, match="holding out 'flite' leaves no engine to train on"):
        plan_speakers(SIZES["tiny"], 0, ["flite"], "flite", 2)


def test_the_other_speakers_leave_the_rest_of_the_plan_as_it_was():
    plain = plan_speakers(SIZES["tiny"], 3, ["espeak-ng"])
    held = plan_speakers(SIZES["tiny"], 3, ["espeak-ng", "flite"], "flite", 2)
    assert held[:len(plain)] == plain and len(held) == len(plain) + 2
