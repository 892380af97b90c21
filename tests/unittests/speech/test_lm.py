"""The n-gram LM: ARPA writer (Kneser-Ney), lexicon, overlap with evaluation sentences, and the
LM beam search of torchaudio's ctc_decoder (flashlight-text + KenLM) on synthetic CTC outputs."""

import io
import itertools
import logging
import random

import pytest
import torch
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary, load_words
from speechbrain.lm.arpa import read_arpa
from speechbrain.lm.ngram import BackoffNgramLM

from speechpos.speech.ctc import CharTokenizer, greedy_decode
from speechpos.speech.lm import (
    EOS,
    SOS,
    UNK,
    LMTextError,
    adjusted_counts,
    char_sentences,
    count_ngrams,
    discounts,
    lexicon_entries,
    out_of_lexicon,
    sentence_overlap,
    write_arpa,
    write_lexicon,
)
from speechpos.speech.lm_decoding import (
    LMDecoder,
    build_char_lm,
    build_lm_files,
    check_overlap,
    decoder_tokens,
    lm_sentences,
    read_lm_text,
)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ' "


def random_text(n=300, seed=0):
    """Sentences over a small vocabulary, with enough repeats for every count-of-count."""
    rng = random.Random(seed)
    words = ["THE", "CAT", "SAT", "ON", "A", "MAT", "DOG", "RAN"]
    return [" ".join(rng.choices(words, weights=range(8, 0, -1), k=rng.randint(1, 6))) for _ in range(n)]


def arpa_model(sentences, order):
    out = io.StringIO()
    write_arpa(sentences, out, order)
    out.seek(0)
    sizes, ngrams, backoffs = read_arpa(out)
    return sizes, ngrams, backoffs, out.getvalue()


# ------------------------------------------------------------------ ARPA writer


def test_known_counts_give_known_probabilities():
    """["A B", "A"], bigrams, by hand: unigram continuation counts A=1, B=1, </s>=2 (n1=2, n2=1:
    D=0.5); bigram counts <s>A=2, AB=1, A</s>=1, B</s>=1 (n1=3, n2=1: D=0.6)."""
    sizes, ngrams, backoffs, _ = arpa_model(["A B", "A"], order=2)
    assert sizes == {1: 5, 2: 4}
    gamma = 3 * 0.5 / 4  # left-over unigram mass, spread uniformly over A, B, </s>, <unk>
    unigram = {"A": (1 - 0.5) / 4 + gamma / 4, "B": (1 - 0.5) / 4 + gamma / 4,
               EOS: (2 - 0.5) / 4 + gamma / 4, UNK: gamma / 4}
    bigram = {
        (SOS, "A"): (2 - 0.6) / 2 + 0.6 / 2 * unigram["A"],
        ("A", "B"): (1 - 0.6) / 2 + 1.2 / 2 * unigram["B"],
        ("A", EOS): (1 - 0.6) / 2 + 1.2 / 2 * unigram[EOS],
        ("B", EOS): (1 - 0.6) / 1 + 0.6 / 1 * unigram[EOS],
    }
    for word, p in unigram.items():
        assert 10 ** ngrams[1][()][word] == pytest.approx(p, rel=1e-6)
    assert ngrams[1][()][SOS] == -99
    for (ctx, word), p in bigram.items():
        assert 10 ** ngrams[2][(ctx,)][word] == pytest.approx(p, rel=1e-6)
    assert 10 ** backoffs[1][(SOS,)] == pytest.approx(0.3, rel=1e-6)
    assert 10 ** backoffs[1][("A",)] == pytest.approx(0.6, rel=1e-6)
    assert ("B",) in backoffs[1] and ("<unk>",) not in backoffs[1]


def test_continuation_counts_and_modified_discounts():
    adj = adjusted_counts(count_ngrams(["A B C", "D B C", "B C"], order=3))
    assert adj[3][("A", "B", "C")] == 1  # raw at the highest order
    assert adj[2][("B", "C")] == 3 and adj[2][(SOS, "B")] == 1  # left words A, D, <s>; raw after <s>
    assert adj[1][("C",)] == 1 and adj[1][("B",)] == 3
    # Chen & Goodman: Y = n1/(n1+2n2), D_k = k - (k+1) Y n_{k+1}/n_k
    n1, n2, n3, n4 = 6, 3, 2, 1
    y = n1 / (n1 + 2 * n2)
    expected = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    assert discounts([1] * n1 + [2] * n2 + [3] * n3 + [4] * n4 + [9]) == pytest.approx(expected)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_sums_to_one(order):
    """Over the vocabulary (</s> and <unk> included, <s> never predicted), by SpeechBrain's
    back-off reader, for every context of up to order - 1 words, seen or not."""
    text = random_text()
    _, ngrams, backoffs, _ = arpa_model(text, order)
    lm = BackoffNgramLM(ngrams, backoffs)
    vocab = sorted({w for s in text for w in s.split()}) + [EOS, UNK]
    if order > 1:  # the modified discounts (three values) are used, not only the fallback
        adjusted = adjusted_counts(count_ngrams(text, order))[1:]
        assert any(len(set(discounts(c.values()))) == 3 for c in adjusted)
    history = [w for w in vocab if w != EOS]
    contexts = [()] + [(SOS, *h) for n in range(order - 1) for h in itertools.product(history, repeat=n)]
    contexts += [h for h in itertools.product(history, repeat=order - 1)]
    for ctx in contexts:
        assert sum(10 ** lm.logprob(w, ctx) for w in vocab) == pytest.approx(1.0, abs=1e-5), ctx


@pytest.mark.parametrize("order, prune", [(2, 1), (3, 1), (4, 2)])
def test_pruned_model_drops_rare_ngrams_and_every_context_still_sums_to_one(order, prune):
    """Count pruning keeps the unigrams and the n-grams seen more than ``prune`` times; the
    back-off weights are computed again, so every distribution sums to one (SpeechBrain's reader)."""
    text = random_text(200, seed=3)
    full = arpa_model(text, order)
    out = io.StringIO()
    write_arpa(text, out, order, prune=prune)
    out.seek(0)
    sizes, ngrams, backoffs = read_arpa(out)
    counts = count_ngrams(text, order)
    assert sizes[1] == full[0][1]
    for n in range(2, order + 1):
        kept = {(*ctx, w) for ctx, words in ngrams[n].items() for w in words}
        assert kept == {g for g, c in counts[n].items() if c > prune} and sizes[n] < full[0][n]
    lm = BackoffNgramLM(ngrams, backoffs)
    vocab = sorted({w for s in text for w in s.split()}) + [EOS, UNK]
    history = [w for w in vocab if w != EOS]
    contexts = [(SOS, *h) for n in range(order - 1) for h in itertools.product(history, repeat=n)]
    contexts += list(itertools.product(history, repeat=order - 1))
    for ctx in contexts:
        assert sum(10 ** lm.logprob(w, ctx) for w in vocab) == pytest.approx(1.0, abs=1e-5), ctx
    with pytest.raises(ValueError, match="prune must be 0 or more, got -1"):
        write_arpa(text, io.StringIO(), order, prune=-1)


def test_out_of_lexicon_counts_running_words_and_char_text_marks_word_ends():
    assert out_of_lexicon({"THE", "CAT"}, ["the cat sat", "THE DOG"]) == {
        "words": 5, "out_of_lexicon": 2, "percent": 40.0}
    assert char_sentences(["IT'S A", " "]) == ["I T ' S | A |"]


def test_kenlm_loads_the_arpa_and_its_distributions_sum_to_one(tmp_path):
    """flashlight-text's KenLM reads the file; from <s> and after any two words, the
    probabilities of the words, <unk> and </s> sum to 1."""
    text = random_text(100, seed=1)
    path = tmp_path / "lm.arpa"
    write_arpa(text, path, order=3)
    words = sorted({w for s in text for w in s.split()}) + [UNK]
    kenlm = KenLM(str(path), Dictionary(words))
    start = kenlm.start(False)

    def total(state):
        return sum(10 ** kenlm.score(state, i)[1] for i in range(len(words))) + 10 ** kenlm.finish(state)[1]

    for history in [(), *itertools.product(range(len(words)), repeat=1), *itertools.product(range(len(words)), repeat=2)]:
        state = start
        for i in history:
            state, _ = kenlm.score(state, i)
        assert total(state) == pytest.approx(1.0, abs=1e-5), [words[i] for i in history]
    # and the same numbers as the file says: log10 p(CAT | <s> THE)
    _, ngrams, backoffs, _ = arpa_model(text, 3)
    state, _ = kenlm.score(start, words.index("THE"))
    expected = BackoffNgramLM(ngrams, backoffs).logprob("CAT", (SOS, "THE"))
    assert kenlm.score(state, words.index("CAT"))[1] == pytest.approx(expected, abs=1e-5)


def test_bad_lm_texts_are_refused(tmp_path):
    with pytest.raises(LMTextError, match="^the LM text has no words$"):
        write_arpa(["", "  "], io.StringIO())
    with pytest.raises(LMTextError, match="may not contain <s> or </s>"):
        write_arpa(["A <s> B"], io.StringIO())
    with pytest.raises(ValueError, match="^the n-gram order must be at least 1, got 0$"):
        write_arpa(["A"], io.StringIO(), order=0)
    missing = tmp_path / "no_such_text.txt"
    with pytest.raises(FileNotFoundError) as err:
        read_lm_text(str(missing))
    assert str(err.value) == f"lm_text {missing} does not exist"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n")
    with pytest.raises(LMTextError) as err:
        read_lm_text(str(empty))
    assert str(err.value) == f"lm_text {empty} has no sentences (expected one per line)"


def test_lm_text_is_a_file_or_the_training_transcripts(tmp_path):
    text = tmp_path / "lm.txt"
    text.write_text("THE  CAT\n\n A DOG \n")
    assert lm_sentences(str(text), "unused.csv") == (["THE CAT", "A DOG"], f"lm_text {text}")
    csv = tmp_path / "train.csv"
    csv.write_text("ID,duration,wav,spk_id,wrd\nu1,1.0,x.flac,s,HELLO  WORLD\nu2,1.0,y.flac,s,IT'S\n")
    assert lm_sentences(None, str(csv)) == (["HELLO WORLD", "IT'S"], f"the transcripts of {csv}")


# ------------------------------------------------------------------ lexicon and LM files


def test_lexicon_spells_words_in_characters_ending_with_the_boundary(tmp_path):
    entries = lexicon_entries(["IT'S", "CAT", "CAT", "naïve", ""], units=LETTERS)
    assert entries == {"CAT": ["C", "A", "T", "|"], "IT'S": ["I", "T", "'", "S", "|"]}
    path = tmp_path / "lexicon.txt"
    write_lexicon(entries, str(path))
    assert path.read_text() == "CAT\tC A T |\nIT'S\tI T ' S |\n"
    read = load_words(str(path))  # torchaudio's reader (which adds <unk>)
    assert read == {"CAT": [["C", "A", "T", "|"]], "IT'S": [["I", "T", "'", "S", "|"]], UNK: []}


def test_decoder_units_rename_the_space_and_need_one():
    tok = CharTokenizer.from_texts(["AB C"])
    assert decoder_tokens(tok) == ["<blank>", "|", "A", "B", "C"]

    class Pieces:
        vocab_list = ["<blank>", "▁A", "B"]
        space_token = " "

    with pytest.raises(LMTextError, match="needs character units with a space"):
        decoder_tokens(Pieces())


def test_lm_files_are_built_once_and_rebuilt_for_another_order(tmp_path, caplog):
    tok = CharTokenizer.from_texts([LETTERS])
    arpa, lexicon = build_lm_files(str(tmp_path), ["THE CAT", "A DOG"], tok, order=3, source="t")
    assert arpa.endswith("lm_3gram.arpa") and open(lexicon).read().startswith("A\tA |\nCAT\tC A T |")
    stamp = (tmp_path / "lm_3gram.arpa").stat().st_mtime_ns
    assert build_lm_files(str(tmp_path), ["THE CAT", "A DOG"], tok, order=3, source="t") == (arpa, lexicon)
    assert (tmp_path / "lm_3gram.arpa").stat().st_mtime_ns == stamp
    arpa2, _ = build_lm_files(str(tmp_path), ["THE CAT", "A DOG"], tok, order=2, source="t")
    assert arpa2.endswith("lm_2gram.arpa")
    with caplog.at_level(logging.WARNING):
        build_lm_files(str(tmp_path / "b"), ["THE CAFÉ", "A DOG"], tok, order=2, source="t")
    assert "1 of 4 LM words have units the tokenizer lacks and cannot be decoded (e.g. CAFÉ)" in caplog.text
    with pytest.raises(LMTextError) as err:
        build_lm_files(str(tmp_path / "c"), ["the cat"], tok, source="lm_text x.txt")
    assert str(err.value) == (
        "none of the 2 words of the LM text (lm_text x.txt) can be spelled with the tokenizer's "
        "units (e.g. 'cat'): write it as the transcripts are (upper case)"
    )


# ------------------------------------------------------------------ overlap


def test_overlap_counts_evaluation_sentences_found_in_the_lm_text(tmp_path, caplog):
    lm_text = ["THE CAT SAT", "A DOG RAN", "THE CAT"]
    assert sentence_overlap(lm_text, ["the cat  sat", "A DOG", "THE CAT SAT ON"]) == {
        "sentences": 1, "of": 3, "percent": 33.33,
    }
    assert sentence_overlap(lm_text, []) == {"sentences": 0, "of": 0, "percent": 0.0}
    csv = tmp_path / "test.csv"
    csv.write_text("ID,duration,wav,spk_id,wrd\nu1,1.0,x.flac,s,A DOG RAN\nu2,1.0,y.flac,s,NEW ONE\n")
    with caplog.at_level(logging.INFO):
        overlap = check_overlap(lm_text, str(csv), "test-clean", "lm_text t.txt")
    assert overlap == {"sentences": 1, "of": 2, "percent": 50.0}
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and warning[0].getMessage() == (
        "!!! test-clean: 1 of 2 transcripts (50.00%) are sentences of the LM text "
        "(lm_text t.txt): WER_lm on it is optimistic !!!"
    )
    caplog.clear()
    with caplog.at_level(logging.INFO):
        check_overlap(["OTHER"], str(csv), "dev-clean", "t")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------------ LM beam search


def emissions(tok, spelling, ambiguous=None, frames_per_unit=2):
    """CTC log-probabilities that spell ``spelling`` (each unit then a blank); at ``?`` the
    frame is shared by the two units of ``ambiguous`` (the first slightly more likely)."""
    rows = []
    for ch in spelling:
        row = torch.full((len(tok),), -12.0)
        if ch == "?":
            row[tok.encode(ambiguous[0])[0]], row[tok.encode(ambiguous[1])[0]] = -0.6, -0.8
        else:
            row[tok.encode(ch)[0]] = 0.0
        blank = torch.full((len(tok),), -12.0)
        blank[tok.blank_index] = 0.0
        rows += [row] + [blank] * (frames_per_unit - 1)
    return torch.log_softmax(torch.stack(rows), -1)


@pytest.fixture
def tok():
    return CharTokenizer.from_texts([LETTERS])


def decoder_for(tok, tmp_path, text, **kw):
    arpa, lexicon = build_lm_files(str(tmp_path), text, tok, order=3, source="test")
    return LMDecoder(tok, arpa, lexicon, **kw)


def test_lexicon_fixes_a_spelling_greedy_gets_wrong(tok, tmp_path):
    """H and C are acoustically ambiguous (H a little likelier): greedy reads HAT, but only CAT
    is a word of the LM."""
    logp = emissions(tok, "THE ?AT SAT", ambiguous="HC")[None]
    assert greedy_decode(logp, torch.ones(1), tok) == ["THE HAT SAT"]
    decoder = decoder_for(tok, tmp_path, ["THE CAT SAT", "A CAT SAT ON THE MAT"])
    assert decoder(logp, torch.ones(1)) == ["THE CAT SAT"]


def test_lm_context_chooses_between_two_words(tok, tmp_path):
    """HAT and CAT are both words; the LM has seen THE CAT SAT, so it wins with an LM weight,
    while without one the beam search follows the acoustics as greedy does."""
    text = ["THE CAT SAT"] * 5 + ["A HAT", "A HAT ON", "THE DOG SAT"]
    logp = emissions(tok, "THE ?AT SAT", ambiguous="HC")[None]
    assert decoder_for(tok, tmp_path, text, lm_weight=2.0)(logp, torch.ones(1)) == ["THE CAT SAT"]
    no_lm = decoder_for(tok, tmp_path, text, lm_weight=0.0, word_score=0.0)
    assert no_lm(logp, torch.ones(1)) == ["THE HAT SAT"]


def test_padded_batch_decodes_each_utterance_to_its_length(tok, tmp_path):
    """The second utterance is shorter: its padding (here: letters) is not decoded; bf16 in."""
    long, short = emissions(tok, "A DOG RAN"), emissions(tok, "THE ?AT", ambiguous="HC")
    padding = emissions(tok, "DOG")[: len(long) - len(short)]
    batch = torch.stack([long, torch.cat([short, padding])]).to(torch.bfloat16)
    lengths = torch.tensor([1.0, len(short) / len(long)])
    decoder = decoder_for(tok, tmp_path, ["THE CAT SAT", "A DOG RAN"])
    assert decoder(batch, lengths) == ["A DOG RAN", "THE CAT"]


def test_lexicon_free_decoding_spells_a_word_the_lexicon_lacks(tok, tmp_path):
    """CHAT is not a word of the text; the lexicon decoder must output a lexicon word, the
    lexicon-free one with a character LM follows the acoustics and spells it."""
    logp = emissions(tok, "THE CHAT")[None]
    text = ["THE CAT SAT", "A HAT", "THE CAT", "CAT"]
    assert "CHAT" not in decoder_for(tok, tmp_path, text, lm_weight=1.0)(logp, torch.ones(1))[0].split()
    arpa = build_char_lm(str(tmp_path), text, tok, order=4, source="test")
    assert "\\4-grams:" in open(arpa).read()
    free = LMDecoder(tok, arpa, None, lm_weight=0.5, word_score=0.0)
    assert free(logp, torch.ones(1)) == ["THE CHAT"]


def test_character_lm_breaks_an_acoustic_tie_toward_seen_spellings(tok, tmp_path):
    """H or C at the start of ?AT (H a little likelier): with the character LM of a text full of
    CAT, lexicon-free decoding reads CAT; without LM weight it reads HAT as greedy does."""
    logp = emissions(tok, "THE ?AT", ambiguous="HC")[None]
    arpa = build_char_lm(str(tmp_path), ["THE CAT"] * 5 + ["A CAT SAT"], tok, order=5, source="test")
    assert LMDecoder(tok, arpa, None, lm_weight=2.0, word_score=0.0)(logp, torch.ones(1)) == ["THE CAT"]
    assert LMDecoder(tok, arpa, None, lm_weight=0.0, word_score=0.0)(logp, torch.ones(1)) == ["THE HAT"]
