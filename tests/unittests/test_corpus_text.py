"""Unit tests of the corpus maker's pieces: text normalisation, speakers, document split."""

import pytest

from speechpos.corpora.librispeech import (
    SPLITS,
    assign_documents,
    join_sentences,
    make_voices,
    plan_split,
    resolve_size,
)
from speechpos.corpora.text import Document, Sentence, has_abbreviation, normalise_sentence
from speechpos.corpora.tts import ENGINES, Voice, sox_effects


@pytest.mark.parametrize(
    "raw, words",
    [
        ("And God said, Let there be light: and there was light.",
         "AND GOD SAID LET THERE BE LIGHT AND THERE WAS LIGHT"),
        ("the scientists' forays into politics", "THE SCIENTISTS' FORAYS INTO POLITICS"),
        ("he said `no' and left (quickly)", "HE SAID NO AND LEFT QUICKLY"),
        ("a well-known fact -- really", "A WELL KNOWN FACT REALLY"),
        ("Who is he? I don't know!", "WHO IS HE I DON'T KNOW"),
    ],
)
def test_normalise_keeps_plain_sentences(raw, words):
    sentence = normalise_sentence(raw)
    assert sentence is not None and sentence.words == words


@pytest.mark.parametrize(
    "raw",
    [
        "figure 2 shows the equipment",  # digit
        "it costs $ fifty today",  # symbol
        "he watched TV all day",  # acronym
        "World War II ended then",  # Roman numeral
        "Mr. Smith went to Washington",  # abbreviation
        "the U.S. economy is large",  # abbreviation with dots
        "J. Smith wrote the book",  # initial
        "a café by the sea",  # non-ASCII letter
        "fire",  # too short
    ],
)
def test_normalise_drops_what_a_voice_may_not_read_as_written(raw):
    assert normalise_sentence(raw) is None


def test_capitals_of_ordinary_words_are_kept_and_lowered_for_the_voice():
    s = normalise_sentence("And the LORD spake unto Moses, saying,", vocabulary={"lord"})
    assert s.words == "AND THE LORD SPAKE UNTO MOSES SAYING"
    assert "lord" in s.speak and "LORD" not in s.speak
    assert normalise_sentence("And the LORD spake unto Moses, saying,") is None
    assert not has_abbreviation("so said I. Then he left.")


def test_join_sentences_respects_max_words():
    sentences = [Sentence(f"w{i} x y.", f"W{i} X Y") for i in range(7)]
    utts = join_sentences(sentences, max_words=7)
    assert [u.n_words for u in utts] == [6, 6, 6, 3]
    assert " ".join(u.words for u in utts) == " ".join(s.words for s in sentences)


def test_voices_are_distinct_across_splits_and_espeak_voices_unique():
    voices = make_voices({"train": 30, "dev": 10, "test": 10}, list(ENGINES), seed=5)
    assert voices == make_voices({"train": 30, "dev": 10, "test": 10}, list(ENGINES), seed=5)
    names = [v.name for vs in voices.values() for v in vs]
    assert len(names) == len(set(names)) == 50
    espeak = [v.voice for vs in voices.values() for v in vs if v.engine == "espeak-ng"]
    assert len(espeak) == len(set(espeak)) >= 15
    assert {v.engine for v in voices["dev"]} == set(ENGINES)


def test_documents_go_to_one_split_each():
    docs = [Document(f"{src}{i}", src, [Sentence("a b c d", "A B C D")] * (5 + i))
            for src in ("kjv", "wordnet") for i in range(10)]
    got = assign_documents(docs, {SPLITS[0]: 60, SPLITS[1]: 15, SPLITS[2]: 15}, seed=2)
    ids = [d.doc_id for split in SPLITS for d in got[split]]
    assert len(ids) == len(set(ids))
    for split in SPLITS[1:]:  # held-out splits mix both sources
        assert {d.source for d in got[split]} == {"kjv", "wordnet"}
    with pytest.raises(ValueError, match="not enough text"):
        assign_documents(docs, {SPLITS[0]: 10**6}, seed=2)


def test_plan_split_balances_speakers():
    doc = Document("d", "kjv", [Sentence(f"s{i} a b c d e.", f"S{i} A B C D E")
                                for i in range(400)])
    voices = [Voice("espeak-ng", "en-us+m1", speed=1.0), Voice("flite", "slt", speed=1.1)]
    chapters = plan_split("dev-clean", [doc], voices, 120.0, resolve_size("default"), 100, 1000)
    per_speaker = {}
    for c in chapters:
        assert len(c.utterances) <= 6
        per_speaker[c.speaker_id] = per_speaker.get(c.speaker_id, 0) + sum(
            len(u.words) / c.voice.chars_per_second() + 2 * c.voice.pad_s for u in c.utterances)
    assert set(per_speaker) == {100, 101}
    assert all(abs(t - 60.0) < 5.0 for t in per_speaker.values())
    assert len({c.chapter_id for c in chapters}) == len(chapters)


def test_sox_effects_per_engine():
    assert "pitch" not in sox_effects(Voice("flite", "slt", semitones=2))  # flite's own F0
    assert "pitch" in sox_effects(Voice("flite", "rms", semitones=2))
    assert "tempo" in sox_effects(Voice("festival", "kal_diphone", speed=1.1))
    assert sox_effects(Voice("espeak-ng", "en-us+m1"))[-6:-3] == ["rate", "-v", "16000"]
