"""Word n-gram language models for CTC decoding: an ARPA writer, the decoder's lexicon, and the
overlap of evaluation sentences with the LM text.

KenLM's ``lmplz`` is not on PyPI and SpeechBrain reads ARPA files but does not write them, so
the counting and smoothing are done here: interpolated modified Kneser-Ney (Chen & Goodman
1998, as in KenLM and icefall's ``make_kn_lm.py``). Each sentence is ``<s> w1 ... wn </s>``;
the highest order uses raw counts, lower orders continuation counts (n-grams starting with
``<s>`` keep raw counts, nothing can precede them), each order has the discounts D1, D2, D3+
of its count-of-counts (one D = n1 / (n1 + 2 n2) when a tiny text cannot give them), and
unigrams are interpolated with the uniform distribution over the vocabulary, ``<unk>``
included. The ARPA file holds log10 probabilities and back-off weights, so the back-off
query of any reader (KenLM, SpeechBrain's ``BackoffNgramLM``) gives the interpolated model.

Any order is written (3 and 4 are the usual word LMs; a character LM for lexicon-free decoding
takes 6 or more). ``prune=k`` drops the n-grams of order 2 and up seen at most ``k`` times (as
KenLM's ``--prune``) and gives their probability to the back-off, whose weights are computed
again so that every context's distribution still sums to one.

Example
-------
>>> import io
>>> from speechbrain.lm.arpa import read_arpa
>>> arpa = io.StringIO()
>>> write_arpa(["THE CAT SAT", "THE DOG SAT"], arpa, order=2)
>>> _ = arpa.seek(0)
>>> sizes, ngrams, backoffs = read_arpa(arpa)
>>> sizes
{1: 7, 2: 6}
>>> round(10 ** ngrams[2][("THE",)]["CAT"], 3), round(10 ** ngrams[1][()]["<unk>"], 3)
(0.324, 0.093)
>>> lexicon_entries(["CAT", "DOG", "ÇA"], units="ACDGOT")
{'CAT': ['C', 'A', 'T', '|'], 'DOG': ['D', 'O', 'G', '|']}
>>> sentence_overlap(["THE CAT SAT"], ["the  cat sat", "A DOG"])
{'sentences': 1, 'of': 2, 'percent': 50.0}
>>> out_of_lexicon(["CAT", "SAT"], ["THE CAT SAT", "A CAT"])
{'words': 5, 'out_of_lexicon': 2, 'percent': 40.0}
>>> char_sentences(["THE CAT"])
['T H E | C A T |']
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

SOS, EOS, UNK = "<s>", "</s>", "<unk>"
WORD_BOUNDARY = "|"
LOG10_ZERO = -99.0  # ARPA's log10 probability of <s>, which is never predicted


class LMTextError(ValueError):
    """The LM text is empty or does not fit the tokenizer."""


def normalise(sentence: str) -> str:
    """Whitespace collapsed and upper case: the form in which sentences are compared.

    >>> normalise("  it's  a Test ")
    "IT'S A TEST"
    """
    return " ".join(sentence.upper().split())


def count_ngrams(sentences: Iterable[str], order: int) -> list[Counter]:
    """Raw counts of the 1..order-grams (tuples of words) of the sentences padded with
    ``<s>``/``</s>`` (index 0 of the list is unused); blank sentences are skipped.

    >>> counts = count_ngrams(["A B", "", "A"], order=2)
    >>> counts[1][("A",)], counts[2][("<s>", "A")], counts[2][("A", "</s>")]
    (2, 2, 1)
    """
    if order < 1:
        raise ValueError(f"the n-gram order must be at least 1, got {order}")
    counts = [Counter() for _ in range(order + 1)]
    for sentence in sentences:
        words = sentence.split()
        if not words:
            continue
        if SOS in words or EOS in words:
            raise LMTextError(f"the LM text may not contain {SOS} or {EOS}: {sentence!r}")
        words = [SOS, *words, EOS]
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                counts[n][tuple(words[i : i + n])] += 1
    return counts


def adjusted_counts(counts: list[Counter]) -> list[dict]:
    """Kneser-Ney counts: raw at the highest order and for n-grams starting with ``<s>``, else
    the number of distinct words seen before the n-gram.

    >>> adj = adjusted_counts(count_ngrams(["A B", "C B", "C B"], order=2))
    >>> adj[1][("B",)], adj[1][("C",)], adj[1][("<s>",)], adj[2][("C", "B")]
    (2, 1, 3, 2)
    """
    order = len(counts) - 1
    adjusted = [{} for _ in range(order + 1)]
    adjusted[order] = dict(counts[order])
    for n in range(order - 1, 0, -1):
        adj = {gram: c for gram, c in counts[n].items() if gram[0] == SOS}
        for longer in counts[n + 1]:
            adj[longer[1:]] = adj.get(longer[1:], 0) + 1
        adjusted[n] = adj
    return adjusted


def discounts(counts: Iterable[int]) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts (D1, D2, D3+) of one order from its count-of-counts
    n1..n4; one D = n1 / (n1 + 2 n2) for all three when those are out of range or undefined
    (tiny texts), and 0.5 when n1 or n2 is 0.

    >>> [round(d, 3) for d in discounts([1] * 10 + [2] * 4 + [3] * 2 + [4])]
    [0.556, 1.167, 1.889]
    >>> discounts([1, 1, 2])
    (0.5, 0.5, 0.5)
    >>> discounts([5, 6])
    (0.5, 0.5, 0.5)
    """
    n = Counter(c for c in counts if c <= 4)
    n1, n2, n3, n4 = (n[k] for k in (1, 2, 3, 4))
    if not (n1 and n2):
        return (0.5, 0.5, 0.5)
    y = n1 / (n1 + 2 * n2)
    if n3 and n4:
        d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
        if all(0 < dk < k for k, dk in zip((1, 2, 3), d, strict=True)):
            return d
    return (y, y, y)


def kneser_ney(sentences: Iterable[str], order: int = 3, prune: int = 0) -> tuple[list[dict], list[dict]]:
    """Interpolated modified Kneser-Ney model of the sentences; with ``prune``, the n-grams of
    order 2 and up seen at most ``prune`` times are left out (see :func:`prune_model`).

    Returns ``(probs, backoffs)``: ``probs[n][gram]`` is the probability of the gram's last word
    after its first n - 1 words, ``backoffs[n][gram]`` the weight of the lower order after the
    context ``gram`` (only grams that are contexts; index 0 unused).

    >>> probs, backoffs = kneser_ney(["A B", "A"], order=2)
    >>> round(sum(p for g, p in probs[1].items()), 6)       # <s> has probability 0
    1.0
    >>> round(probs[2][("<s>", "A")], 3), round(backoffs[1][("A",)], 3)
    (0.766, 0.6)
    >>> probs, backoffs = kneser_ney(["A B", "A B", "A"], order=2, prune=1)
    >>> sorted(probs[2])
    [('<s>', 'A'), ('A', 'B'), ('B', '</s>')]
    """
    if prune < 0:
        raise ValueError(f"prune must be 0 or more, got {prune}")
    raw = count_ngrams(sentences, order)
    adjusted = adjusted_counts(raw)
    words = {gram[0] for gram in adjusted[1]} - {SOS}
    if not words:
        raise LMTextError("the LM text has no words")
    vocab = sorted(words | {EOS, UNK})
    probs = [{} for _ in range(order + 1)]
    backoffs = [{} for _ in range(order + 1)]

    unigrams = {(w,): adjusted[1].get((w,), 0) for w in vocab}
    p, gamma = _discounted(unigrams, discounts(c for c in unigrams.values() if c))
    probs[1] = {gram: p[gram] + gamma[()] / len(vocab) for gram in unigrams}
    probs[1][(SOS,)] = 0.0
    for n in range(2, order + 1):
        p, gamma = _discounted(adjusted[n], discounts(adjusted[n].values()))
        probs[n] = {gram: p[gram] + gamma[gram[:-1]] * probs[n - 1][gram[1:]] for gram in p}
        backoffs[n - 1] = gamma
    if prune:
        prune_model(probs, backoffs, raw, prune)
    return probs, backoffs


def backoff_prob(probs: list[dict], backoffs: list[dict], context: tuple, word: str) -> float:
    """The probability of ``word`` after ``context`` as an ARPA reader computes it: the longest
    n-gram present, times the back-off weights of the contexts it backs off from.

    >>> probs, backoffs = kneser_ney(["A B", "A"], order=2)
    >>> backoff_prob(probs, backoffs, ("A",), "B") == probs[2][("A", "B")]
    True
    """
    weight = 1.0
    while context:
        gram = (*context, word)
        if gram in probs[len(gram)]:
            return weight * probs[len(gram)][gram]
        weight *= backoffs[len(context)].get(context, 1.0)
        context = context[1:]
    return weight * probs[1].get((word,), probs[1][(UNK,)])


def prune_model(probs: list[dict], backoffs: list[dict], counts: list[Counter], prune: int) -> None:
    """Drop (in place) the n-grams of order 2 and up seen at most ``prune`` times and set each
    context's back-off weight to the mass left over by its kept n-grams over the lower order's
    mass of the same words, so every context's distribution sums to one again. A kept n-gram's
    context and suffix have counts at least its own, so they are kept too (ARPA's rule)."""
    order = len(probs) - 1
    for n in range(2, order + 1):
        probs[n] = {g: p for g, p in probs[n].items() if counts[n][g] > prune}
    for n in range(2, order + 1):
        kept, lower = defaultdict(float), defaultdict(float)
        for gram, p in probs[n].items():
            kept[gram[:-1]] += p
            lower[gram[:-1]] += backoff_prob(probs, backoffs, gram[1:-1], gram[-1])
        backoffs[n - 1] = {
            ctx: (1.0 - kept[ctx]) / (1.0 - lower[ctx]) if lower[ctx] < 1.0 else 1.0
            for ctx in backoffs[n - 1] if ctx in probs[n - 1]
        }


def _discounted(adjusted: dict, d: tuple[float, float, float]) -> tuple[dict, dict]:
    """Discounted probability of each gram given its context, and the left-over mass of each
    context (the back-off weight)."""
    totals, left = defaultdict(int), defaultdict(float)
    for gram, c in adjusted.items():
        totals[gram[:-1]] += c
        if c:
            left[gram[:-1]] += d[min(c, 3) - 1]
    p = {
        gram: max(c - d[min(c, 3) - 1], 0.0) / totals[gram[:-1]] if c else 0.0
        for gram, c in adjusted.items()
    }
    return p, {ctx: left[ctx] / totals[ctx] for ctx in totals}


# torchaudio's CTC decoder reads ARPA files with a KenLM compiled for n-grams up to this order.
MAX_ORDER = 6


def write_arpa(sentences: Iterable[str], out, order: int = 3, prune: int = 0) -> None:
    """Write the interpolated modified Kneser-Ney model of ``sentences`` (one per item,
    words separated by spaces) in ARPA format to ``out`` (a path or a text stream); ``prune``
    as in :func:`kneser_ney`. An order above :data:`MAX_ORDER` is refused before any work (the
    decoder could not load the file).

    >>> import io
    >>> try:
    ...     write_arpa(["A B"], io.StringIO(), order=8)
    ... except LMTextError as err:
    ...     print(err)
    n-gram order 8: the CTC decoder (torchaudio's KenLM) reads orders 1 to 6
    """
    if order > MAX_ORDER:
        raise LMTextError(f"n-gram order {order}: the CTC decoder (torchaudio's KenLM) reads orders 1 to {MAX_ORDER}")
    if isinstance(out, str | bytes) or hasattr(out, "__fspath__"):
        with open(out, "w", encoding="utf-8") as f:
            write_arpa(sentences, f, order, prune)
        return
    probs, backoffs = kneser_ney(sentences, order, prune)
    out.write("\\data\\\n")
    for n in range(1, order + 1):
        out.write(f"ngram {n}={len(probs[n])}\n")
    for n in range(1, order + 1):
        out.write(f"\n\\{n}-grams:\n")
        for gram in sorted(probs[n]):
            p = probs[n][gram]
            line = f"{math.log10(p) if p > 0 else LOG10_ZERO:.7g}\t{' '.join(gram)}"
            if gram in backoffs[n]:
                line += f"\t{math.log10(backoffs[n][gram]) if backoffs[n][gram] > 0 else LOG10_ZERO:.7g}"
            out.write(line + "\n")
    out.write("\n\\end\\\n")


def lexicon_entries(words: Iterable[str], units) -> dict[str, list[str]]:
    """Spelling of each word in character units, ending with the word boundary ``|``; words
    with a character outside ``units`` cannot be decoded and are left out (sorted by word).

    >>> lexicon_entries(["IT'S", "A"], units="AIST'")
    {'A': ['A', '|'], "IT'S": ['I', 'T', "'", 'S', '|']}
    """
    units = set(units)
    return {
        w: [*w, WORD_BOUNDARY] for w in sorted(set(words)) if w and set(w) <= units
    }


def arpa_words(path: str) -> list[str]:
    """The words of an ARPA file's unigram section (``<s>``, ``</s>`` and ``<unk>`` left out):
    the vocabulary of a ready LM such as LibriSpeech's official 3-gram/4-gram.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "lm.arpa")
    >>> write_arpa(["CAT HAT", "CAT"], p, order=2)
    >>> arpa_words(p)
    ['CAT', 'HAT']
    """
    words, section = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\"):
                section = line
                if line == "\\2-grams:" or line == "\\end\\":
                    break
                continue
            if section == "\\1-grams:" and line:
                fields = line.split()
                if len(fields) >= 2 and fields[1] not in ("<s>", "</s>", "<unk>", UNK):
                    words.append(fields[1])
    if not words:
        raise LMTextError(f"{path}: no unigram section with words; not an ARPA language model")
    return words


def write_lexicon(entries: dict[str, list[str]], path: str) -> None:
    """The lexicon file of torchaudio's ``ctc_decoder``: ``word<TAB>unit unit ... |`` lines."""
    with open(path, "w", encoding="utf-8") as f:
        for word, spelling in entries.items():
            f.write(f"{word}\t{' '.join(spelling)}\n")


def sentence_overlap(lm_sentences: Iterable[str], sentences: Iterable[str]) -> dict:
    """How many of ``sentences`` occur verbatim (after :func:`normalise`) as a sentence of the
    LM text: an LM that has seen the test sentences makes its WER meaningless."""
    seen = {normalise(s) for s in lm_sentences}
    checked = [normalise(s) for s in sentences]
    hits = sum(s in seen for s in checked)
    percent = round(100 * hits / len(checked), 2) if checked else 0.0
    return {"sentences": hits, "of": len(checked), "percent": percent}


def out_of_lexicon(lexicon: Iterable[str], sentences: Iterable[str]) -> dict:
    """How many running words of ``sentences`` the lexicon lacks: a lexicon decoder gets each of
    them wrong whatever the acoustic model says."""
    known = set(lexicon)
    words = [w for s in sentences for w in normalise(s).split()]
    missing = sum(w not in known for w in words)
    percent = round(100 * missing / len(words), 2) if words else 0.0
    return {"words": len(words), "out_of_lexicon": missing, "percent": percent}


def char_sentences(sentences: Iterable[str]) -> list[str]:
    """The sentences as character "words" for a character LM (lexicon-free decoding): letters
    separated by spaces, the word boundary ``|`` after every word (the decoder emits it there)."""
    return [" ".join(c for w in s.split() for c in (*w, WORD_BOUNDARY)) for s in sentences if s.split()]
