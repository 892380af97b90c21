"""Read-aloud text for the offline corpus: public-domain documents, normalised like LibriSpeech.

Two Debian packages supply the text:

* ``bible-kjv`` (the King James Bible, public domain): one document per book (66 books);
* ``wordnet-base`` (WordNet 3.0, free licence): the usage examples quoted in its glosses, one
  document per lexicographer file (``noun.animal``, ``verb.motion``, ... : 45 groups).

A sentence is kept only when it can be written the way a LibriSpeech transcript is written
(``A``-``Z``, apostrophe, space) without guessing how a voice would read it: sentences with
digits, symbols, non-ASCII letters, abbreviations (``Mr.``, ``e.g.``, initials) or acronyms
(``TV``, ``DNA``, Roman numerals) are dropped. Every sentence keeps two forms: ``speak``, the
text given to the synthesiser (punctuation kept for prosody, all-capital words lowered so that
no engine spells them out), and ``words``, the transcript.

Example
-------
>>> s = normalise_sentence("And God said, Let there be light: and there was light.")
>>> s.words
'AND GOD SAID LET THERE BE LIGHT AND THERE WAS LIGHT'
>>> s.speak
'And God said, Let there be light: and there was light.'
>>> normalise_sentence("figure 2 shows the equipment") is None
True
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

KJV_COMMAND = "bible"
KJV_RANGE = "Gen1:1-Rev22:21"
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
SOURCES = ("kjv", "wordnet")

MIN_WORDS = 3
MAX_WORDS = 40

# Abbreviations that end with a period (compared lower-cased, without the period).
ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr etc vs viz cf eg ie co corp inc ltd prof gen gov sen rep "
    "rev capt col lt sgt maj mt ft ave blvd dept est fig approx al esp vol pp ch sec min hr "
    "oz lb lbs km cm mm kg".split()
)
_QUOTES = str.maketrans({"`": " ", '"': " ", "(": " ", ")": " ", "[": " ", "]": " "})
_ALLOWED = re.compile(r"^[A-Za-z ,;:.?!'\-]*$")
_BACKTICK_QUOTE = re.compile(r"`([^`']*)'")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
_EDGE_PUNCT = ",;:.?!"
_VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+)\s+(.*)$")


class TextSourceError(RuntimeError):
    """A text source (a Debian package) is missing or unreadable."""


@dataclass(frozen=True)
class Sentence:
    """One read-aloud sentence: ``speak`` goes to the synthesiser, ``words`` is the transcript."""

    speak: str
    words: str

    @property
    def n_words(self) -> int:
        """Number of words of the transcript.

        >>> Sentence("Go home.", "GO HOME").n_words
        2
        """
        return len(self.words.split())


@dataclass
class Document:
    """A unit of text that belongs to exactly one split (a Bible book, a WordNet gloss group)."""

    doc_id: str
    source: str
    sentences: list[Sentence] = field(default_factory=list)

    @property
    def n_words(self) -> int:
        """Total number of transcript words."""
        return sum(s.n_words for s in self.sentences)


def has_abbreviation(text: str) -> bool:
    """True if ``text`` holds an abbreviation or an initial (a token ending in a period).

    >>> has_abbreviation("Mr. Smith came home.")
    True
    >>> has_abbreviation("the U.S. economy")
    True
    >>> has_abbreviation("J. S. Bach wrote it")
    True
    >>> has_abbreviation("He came home. Then he slept.")
    False
    """
    for token in text.split():
        core = token.strip("\"'`()[],;:?!")
        if not core.endswith("."):
            continue
        stem = core.rstrip(".")
        if "." in stem or len(stem) == 1 and stem.isalpha() and stem not in "aAI":
            return True
        if stem.lower().replace(".", "") in ABBREVIATIONS:
            return True
    return False


def split_sentences(text: str) -> list[str]:
    """Split a paragraph after ``.``, ``?`` or ``!`` followed by white space.

    >>> split_sentences("Jesus wept. Who is he? Go!")
    ['Jesus wept.', 'Who is he?', 'Go!']
    """
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _clean_token(token: str) -> str | None:
    """Strip edge punctuation and quote-like apostrophes; None if the token is not a word."""
    token = token.strip(_EDGE_PUNCT).lstrip("'")
    if token.endswith("'") and not token.lower().endswith("s'"):
        token = token.rstrip("'")
    if not token or not re.fullmatch(r"[A-Za-z]+(?:'[A-Za-z]*)*", token):
        return None
    return token


def is_acronym(token: str, vocabulary: set[str] | None = None) -> bool:
    """True for an all-capital token of two or more letters that is not an ordinary word.

    ``vocabulary`` holds lower-cased words seen written in ordinary case in the same source;
    an all-capital token found there (the KJV's ``LORD``) is a word set in capitals, not an
    acronym. Without a vocabulary every all-capital token counts as an acronym.

    >>> is_acronym("TV"), is_acronym("LORD", {"lord"}), is_acronym("I"), is_acronym("Lord")
    (True, False, False, False)
    """
    letters = token.replace("'", "")
    if len(letters) < 2 or not letters.isupper():
        return False
    return vocabulary is None or token.lower() not in vocabulary


def normalise_sentence(
    raw: str,
    vocabulary: set[str] | None = None,
    min_words: int = MIN_WORDS,
    max_words: int = MAX_WORDS,
) -> Sentence | None:
    """Normalise one sentence to LibriSpeech form, or return None if it must be dropped.

    >>> normalise_sentence("the children's `toys' were well-worn").words
    "THE CHILDREN'S TOYS WERE WELL WORN"
    >>> normalise_sentence("And the LORD spake unto Moses, saying,", {"lord"}).speak
    'And the lord spake unto Moses, saying,'
    >>> normalise_sentence("he watched TV all day") is None
    True
    """
    if has_abbreviation(raw):
        return None
    text = _BACKTICK_QUOTE.sub(r" \1 ", raw)
    text = text.translate(_QUOTES).replace("--", " ").replace("-", " ")
    text = " ".join(text.split())
    if not _ALLOWED.match(text):
        return None
    speak_tokens, words = [], []
    for token in text.split():
        word = _clean_token(token)
        if word is None:
            if token.strip(_EDGE_PUNCT + "'"):
                return None
            continue
        if is_acronym(word, vocabulary if vocabulary is not None else set()):
            return None
        if len(word) > 1 and word.replace("'", "").isupper():
            token = token.replace(word, word.lower())
        speak_tokens.append(token)
        words.append(word.upper())
    if not min_words <= len(words) <= max_words:
        return None
    return Sentence(speak=" ".join(speak_tokens), words=" ".join(words))


def _ordinary_vocabulary(paragraphs: Iterable[str]) -> set[str]:
    """Lower-cased words that occur at least once not written in all capitals."""
    vocab: set[str] = set()
    for text in paragraphs:
        for token in re.findall(r"[A-Za-z']+", text):
            if not token.isupper() or len(token) == 1:
                vocab.add(token.lower())
    return vocab


def _documents_from_paragraphs(
    groups: dict[str, list[str]], source: str, min_words: int, max_words: int
) -> list[Document]:
    """Turn {doc_id: [paragraph, ...]} into Documents of normalised sentences."""
    vocab = _ordinary_vocabulary(p for paras in groups.values() for p in paras)
    docs = []
    for doc_id, paragraphs in groups.items():
        doc = Document(doc_id=doc_id, source=source)
        for paragraph in paragraphs:
            if has_abbreviation(paragraph):
                continue
            for raw in split_sentences(paragraph):
                sentence = normalise_sentence(raw, vocab, min_words, max_words)
                if sentence is not None:
                    doc.sentences.append(sentence)
        docs.append(doc)
    return docs


def read_kjv_verses(command: str = KJV_COMMAND) -> dict[str, list[str]]:
    """Return the King James Bible as {book abbreviation: [verse text, ...]} in canonical order."""
    exe = shutil.which(command)
    if exe is None:
        raise TextSourceError(
            f"'{command}' not found: install the Debian package bible-kjv "
            "(apt-get install bible-kjv, or bash tools/setup/setup.sh)"
        )
    out = subprocess.run(
        [exe, "-f", KJV_RANGE], capture_output=True, text=True, check=True
    ).stdout
    books: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = _VERSE.match(line)
        if match:
            books.setdefault(match.group(1), []).append(match.group(4))
    if len(books) < 66:
        raise TextSourceError(f"'{exe} -f {KJV_RANGE}' gave {len(books)} books, expected 66")
    return books


def read_wordnet_examples(wordnet_dir: Path | str = WORDNET_DIR) -> dict[str, list[str]]:
    """Return WordNet's quoted usage examples as {'wn<lexfile>': [example, ...]}, file order."""
    wordnet_dir = Path(wordnet_dir)
    groups: dict[int, list[str]] = {}
    for name in WORDNET_FILES:
        path = wordnet_dir / name
        if not path.is_file():
            raise TextSourceError(
                f"{path} not found: install the Debian package wordnet-base "
                "(apt-get install wordnet-base, or bash tools/setup/setup.sh)"
            )
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.startswith(" ") or "|" not in line:
                    continue
                lexfile = int(line.split(" ", 2)[1])
                gloss = line.split("|", 1)[1]
                groups.setdefault(lexfile, []).extend(re.findall(r'"([^"]+)"', gloss))
    return {f"wn{k:02d}": groups[k] for k in sorted(groups)}


def load_documents(
    sources: Sequence[str] = SOURCES,
    min_words: int = MIN_WORDS,
    max_words: int = MAX_WORDS,
) -> list[Document]:
    """Load every document of ``sources``; each sentence is kept once, in its first document.

    Removing repeats across documents (the KJV repeats formulas such as "And the LORD spake
    unto Moses, saying") is what lets splits drawn from different documents share no sentence.
    """
    docs: list[Document] = []
    for source in sources:
        if source == "kjv":
            groups = {f"kjv-{k}": v for k, v in read_kjv_verses().items()}
        elif source == "wordnet":
            groups = read_wordnet_examples()
        else:
            raise ValueError(f"unknown text source {source!r}; choose from {SOURCES}")
        docs.extend(_documents_from_paragraphs(groups, source, min_words, max_words))
    seen: set[str] = set()
    for doc in docs:
        unique = [s for s in doc.sentences if s.words not in seen]
        seen.update(s.words for s in unique)
        doc.sentences = unique
    docs = [d for d in docs if d.sentences]
    logger.info(
        "text: %d documents, %d sentences, %d words",
        len(docs),
        sum(len(d.sentences) for d in docs),
        sum(d.n_words for d in docs),
    )
    return docs
