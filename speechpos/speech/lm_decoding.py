"""CTC beam search with a word n-gram LM: torchaudio's ``ctc_decoder`` (Flashlight's lexicon
decoder with KenLM, from the ``flashlight-text`` package) over the ARPA file and lexicon of
:mod:`speechpos.speech.lm`.

The units are the character tokenizer's: the blank is index 0 and the space is Flashlight's word
boundary ``|``, which ends every spelling of the lexicon. A CTC model emits no space after the
last word, so each utterance gets one more frame in which ``|`` is certain: the last word then
ends as the others do. ``lm_weight`` scales the LM's log10 probabilities and ``word_score`` is
added per word; tune both on dev (``tools/studies/tune_lm.py``). Only words of the lexicon (those of the
LM text) can be output: out-of-vocabulary words of the test set are always errors.

Lexicon-free (``lexicon=None``): Flashlight's lexicon-free search with a character n-gram LM
(:func:`build_char_lm`: the LM text as letters, ``|`` after each word), so any spelling can be
output and the LM scores every letter; ``word_score`` is then added per ``|``.

Example
-------
>>> import tempfile, torch
>>> from speechpos.speech.ctc import CharTokenizer
>>> tok = CharTokenizer.from_texts(["CAT HAT"])
>>> arpa, lexicon = build_lm_files(tempfile.mkdtemp(), ["CAT"], tok, order=2)
>>> decoder = LMDecoder(tok, arpa, lexicon)
>>> c, h, a, t = (tok.encode(x)[0] for x in "CHAT")
>>> frames = torch.full((4, len(tok)), -8.0)
>>> frames[[0, 0, 1, 2, 3], [c, h, 0, a, t]] = torch.tensor([-0.9, -0.5, 0.0, 0.0, 0.0])
>>> decoder(frames[None], torch.ones(1))        # greedy would read HAT
['CAT']
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import torch
from torchaudio.models.decoder import ctc_decoder

from speechpos.speech.ctc import BLANK
from speechpos.speech.data.dataio import load_manifest
from speechpos.speech.lm import (
    UNK,
    WORD_BOUNDARY,
    LMTextError,
    char_sentences,
    lexicon_entries,
    sentence_overlap,
    write_arpa,
    write_lexicon,
)

logger = logging.getLogger(__name__)

OTHER_UNITS = -1e4  # log-probability of the units other than | in the appended last frame


def decoder_tokens(tokenizer) -> list[str]:
    """The tokenizer's units in index order, with the space renamed to Flashlight's ``|``."""
    units = tokenizer.vocab_list
    space = getattr(tokenizer, "space_token", None)
    if space not in units or WORD_BOUNDARY in units:
        raise LMTextError(
            "LM decoding needs character units with a space and without '|' "
            f"(units: {''.join(u for u in units if u != BLANK)!r})"
        )
    return [WORD_BOUNDARY if u == space else u for u in units]


def read_lm_text(path: str) -> list[str]:
    """Sentences of a text file, one per line (whitespace collapsed, blank lines skipped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"lm_text {path} does not exist")
    with open(path, encoding="utf-8") as f:
        sentences = [" ".join(line.split()) for line in f]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise LMTextError(f"lm_text {path} has no sentences (expected one per line)")
    return sentences


def default_lm_text(lm_text: str | None, data_folder: str | None) -> str | None:
    """The LM text to use: ``lm_text`` when given, else the corpus's own
    (``<data_folder>/librispeech-lm-norm.txt``, which ``tools/data/make_corpus.py`` writes) where there
    is one, else None (the training transcripts).

    >>> default_lm_text("my.txt", "data/LibriSpeech"), default_lm_text(None, "/nonexistent")
    ('my.txt', None)
    """
    if lm_text:
        return lm_text
    from speechpos.corpora.librispeech import corpus_lm_text

    path = corpus_lm_text(data_folder) if data_folder else None
    return str(path) if path else None


def lm_sentences(lm_text: str | None, train_csv: str) -> tuple[list[str], str]:
    """The LM's training text: ``lm_text`` (a file), or the transcripts of ``train_csv`` when
    it is None. Returns (sentences, a description of their source)."""
    if lm_text:
        return read_lm_text(lm_text), f"lm_text {lm_text}"
    rows = load_manifest(train_csv).data.values()
    sentences = [s for s in (" ".join(str(r["wrd"]).split()) for r in rows) if s]
    if not sentences:
        raise LMTextError(f"the transcripts of {train_csv} are empty: no LM text")
    return sentences, f"the transcripts of {train_csv}"


def _lm_info(sentences: list[str], source: str, order: int, prune: int) -> dict:
    digest = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
    return {"source": source, "order": order, "prune": prune, "sentences": len(sentences), "sha256": digest}


def _is_built(info_path: str, info: dict, *paths: str) -> bool:
    if not (os.path.isfile(info_path) and all(os.path.isfile(p) for p in paths)):
        return False
    with open(info_path, encoding="utf-8") as f:
        return {k: v for k, v in json.load(f).items() if k in info} == info


def build_lm_files(folder: str, sentences: list[str], tokenizer, order: int = 3, source: str = "",
                   prune: int = 0):
    """Write ``lm_<order>gram[_prune<k>].arpa`` and ``lm_lexicon.txt`` into ``folder`` (kept
    when they were built from the same sentences, order and pruning). Returns (arpa path,
    lexicon path)."""
    arpa = os.path.join(folder, f"lm_{order}gram{f'_prune{prune}' if prune else ''}.arpa")
    lexicon = os.path.join(folder, "lm_lexicon.txt")
    info_path = os.path.join(folder, "lm_info.json")
    info = _lm_info(sentences, source, order, prune)
    if _is_built(info_path, info, arpa, lexicon):
        return arpa, lexicon
    units = set(decoder_tokens(tokenizer)) - {BLANK, WORD_BOUNDARY}
    words = sorted({w for s in sentences for w in s.split()})
    entries = lexicon_entries(words, units)
    if not entries:
        raise LMTextError(
            f"none of the {len(words)} words of the LM text ({source}) can be spelled with the "
            f"tokenizer's units (e.g. {words[0]!r}): write it as the transcripts are (upper case)"
        )
    if len(entries) < len(words):
        left_out = [w for w in words if w not in entries]
        logger.warning(
            "%d of %d LM words have units the tokenizer lacks and cannot be decoded (e.g. %s)",
            len(left_out), len(words), ", ".join(left_out[:5]),
        )
    os.makedirs(folder, exist_ok=True)
    write_arpa(sentences, arpa, order, prune)
    write_lexicon(entries, lexicon)
    with open(info_path, "w", encoding="utf-8") as f:
        json.dump({**info, "words": len(words), "running_words": sum(len(s.split()) for s in sentences),
                   "lexicon_words": len(entries)}, f, indent=1)
    logger.info("%d-gram LM of %d sentences (%s) written to %s", order, len(sentences), source, arpa)
    return arpa, lexicon


def build_char_lm(folder: str, sentences: list[str], tokenizer, order: int = 6, source: str = "",
                  prune: int = 0) -> str:
    """Write the character LM ``lm_char_<order>gram[_prune<k>].arpa`` of lexicon-free decoding
    into ``folder`` (kept when built from the same sentences, order and pruning); sentences with
    a character the tokenizer lacks are left out. Returns its path."""
    arpa = os.path.join(folder, f"lm_char_{order}gram{f'_prune{prune}' if prune else ''}.arpa")
    info_path = os.path.join(folder, "lm_char_info.json")
    info = _lm_info(sentences, source, order, prune)
    if _is_built(info_path, info, arpa):
        return arpa
    units = set(decoder_tokens(tokenizer)) - {BLANK}
    chars = [s for s in char_sentences(sentences) if set(s.split()) <= units]
    if not chars:
        raise LMTextError(f"no sentence of the LM text ({source}) can be spelled with the tokenizer's units")
    os.makedirs(folder, exist_ok=True)
    write_arpa(chars, arpa, order, prune)
    with open(info_path, "w", encoding="utf-8") as f:
        json.dump({**info, "char_sentences": len(chars)}, f, indent=1)
    logger.info("%d-gram character LM of %d sentences (%s) written to %s", order, len(chars), source, arpa)
    return arpa


def check_overlap(sentences: list[str], csv: str, name: str, source: str) -> dict:
    """Overlap of the transcripts of ``csv`` with the LM text, logged, and a loud warning when
    the LM has seen any of them (their WER with the LM would then be optimistic)."""
    rows = load_manifest(csv).data.values()
    overlap = sentence_overlap(sentences, (str(r["wrd"]) for r in rows))
    message = "%s: %d of %d transcripts (%.2f%%) are sentences of the LM text (%s)"
    args = (name, overlap["sentences"], overlap["of"], overlap["percent"], source)
    if overlap["sentences"]:
        logger.warning("!!! " + message + ": WER_lm on it is optimistic !!!", *args)
    else:
        logger.info(message, *args)
    return overlap


class LMDecoder:
    """Best word sequence of each utterance under CTC scores + ``lm_weight`` x LM + words x
    ``word_score`` (Flashlight's lexicon beam search, on the CPU); with ``lexicon=None`` the
    lexicon-free search over a character LM (:func:`build_char_lm`)."""

    def __init__(
        self, tokenizer, arpa: str, lexicon: str | None, lm_weight: float = 2.0,
        word_score: float = -0.5, beam_size: int = 50, beam_threshold: float = 25.0,
    ):
        tokens = decoder_tokens(tokenizer)
        self.boundary = tokens.index(WORD_BOUNDARY)
        self.lexicon_free = lexicon is None
        lm_dict = None
        if self.lexicon_free:
            # The lexicon-free search scores unit index n as LM word n; torchaudio's own word
            # dictionary for it comes from an unordered map (its order is not the units'), so
            # the dictionary is given: the units in index order, then <unk>.
            lm_dict = os.path.splitext(arpa)[0] + ".units.txt"
            with open(lm_dict, "w", encoding="utf-8") as f:
                f.write("\n".join([*tokens, UNK]) + "\n")
        self.decoder = ctc_decoder(
            lexicon=lexicon, tokens=tokens, lm=arpa, lm_dict=lm_dict, beam_size=beam_size,
            beam_threshold=beam_threshold, lm_weight=lm_weight, word_score=word_score,
            blank_token=tokens[tokenizer.blank_index], sil_token=WORD_BOUNDARY, unk_word=UNK,
        )

    def __call__(self, log_probs: torch.Tensor, rel_lengths: torch.Tensor) -> list[str]:
        """(B, T, units) CTC log-probabilities and relative lengths -> B transcripts."""
        log_probs = log_probs.detach().float().cpu()
        frames = torch.round(rel_lengths.detach().float().cpu() * log_probs.shape[1]).long()
        end = torch.full((1, log_probs.shape[-1]), OTHER_UNITS)
        end[0, self.boundary] = 0.0
        texts = []
        for lp, n in zip(log_probs, frames.tolist(), strict=True):
            hyps = self.decoder(torch.cat([lp[:n], end])[None].contiguous())[0]
            if not hyps:
                texts.append("")
            elif self.lexicon_free:
                units = self.decoder.idxs_to_tokens(hyps[0].tokens)
                texts.append(" ".join("".join(units).replace(WORD_BOUNDARY, " ").split()))
            else:
                texts.append(" ".join(hyps[0].words))
        return texts
