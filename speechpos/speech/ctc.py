"""CTC output units and decoding: characters or sentencepiece units, greedy or beam search.

Both tokenizers are thin layers over SpeechBrain (``CTCTextEncoder`` for characters, the
``SentencePiece`` wrapper for units) that give the recipe one interface: the blank is index
0, ``encode`` maps a transcript to indices, ``decode`` maps indices back to text, and
``vocab_list`` feeds SpeechBrain's ``CTCBeamSearcher``.

Example
-------
>>> tok = CharTokenizer.from_texts(["HELLO WORLD", "IT'S"])
>>> ids = tok.encode("HELLO")
>>> tok.decode(ids)
'HELLO'
>>> logp = torch.log_softmax(torch.randn(1, 6, len(tok)), -1)
>>> import torch.nn.functional as F
>>> known = torch.log(F.one_hot(torch.tensor([[0, ids[0], ids[0], 0, ids[1], 0]]), len(tok)).float() + 1e-9)
>>> greedy_decode(known, torch.tensor([1.0]), tok)
['HE']
"""

from __future__ import annotations

import logging
import os

import torch
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.decoders.ctc import CTCBeamSearcher, ctc_greedy_decode

logger = logging.getLogger(__name__)

BLANK = "<blank>"


class TranscriptError(ValueError):
    """A transcript cannot be turned into CTC targets."""


class CTCAlignmentError(ValueError):
    """Utterances have fewer output frames than CTC targets."""


class CharTokenizer:
    """Characters of the transcripts (A-Z, apostrophe, space) with the CTC blank at index 0."""

    space_token = " "

    def __init__(self, encoder: CTCTextEncoder):
        self.encoder = encoder
        self.encoder.expect_len(len(encoder.lab2ind))

    @classmethod
    def from_texts(cls, texts) -> CharTokenizer:
        """Collect the character set of ``texts`` (sorted, so the order is reproducible)."""
        encoder = CTCTextEncoder()
        encoder.insert_blank(BLANK, index=0)
        chars = sorted({c for t in texts for c in t})
        encoder.update_from_iterable(chars, sequence_input=False)
        return cls(encoder)

    @classmethod
    def load_or_create(cls, path: str, texts) -> CharTokenizer:
        """Load the tokenizer saved at ``path``, or create it from ``texts`` and save it."""
        if os.path.isfile(path):
            encoder = CTCTextEncoder()
            encoder.load(path)
            return cls(encoder)
        tok = cls.from_texts(texts)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tok.encoder.save(path)
        return tok

    def __len__(self) -> int:
        return len(self.encoder.lab2ind)

    @property
    def blank_index(self) -> int:
        return self.encoder.lab2ind[BLANK]

    @property
    def vocab_list(self) -> list[str]:
        return [self.encoder.ind2lab[i] for i in range(len(self))]

    def encode(self, text: str) -> list[int]:
        unknown = sorted({c for c in text if c not in self.encoder.lab2ind})
        if unknown:
            raise TranscriptError(f"characters {unknown} are not in the tokenizer's set")
        return self.encoder.encode_sequence(list(text))

    def decode(self, ids) -> str:
        return "".join(self.encoder.decode_ndim(list(ids)))


class SentencePieceTokenizer:
    """SpeechBrain's SentencePiece wrapper; unit ``i`` is CTC index ``i + 1`` (0 is blank)."""

    space_token = " "

    def __init__(self, model_dir: str, vocab_size: int, train_csv: str, model_type: str = "unigram"):
        from speechbrain.tokenizers.SentencePiece import SentencePiece

        self.sb = SentencePiece(
            model_dir=model_dir,
            vocab_size=vocab_size,
            annotation_train=train_csv,
            annotation_read="wrd",
            model_type=model_type,
        )
        self.sp = self.sb.sp

    def __len__(self) -> int:
        return self.sp.get_piece_size() + 1

    @property
    def blank_index(self) -> int:
        return 0

    @property
    def vocab_list(self) -> list[str]:
        return [BLANK] + [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode_as_ids(text)]

    def decode(self, ids) -> str:
        return self.sp.decode_ids([int(i) - 1 for i in ids if int(i) > 0])


def greedy_decode(log_probs: torch.Tensor, rel_lengths: torch.Tensor, tokenizer) -> list[str]:
    """Best path: arg-max per frame, repeats merged, blanks removed (SpeechBrain's decoder)."""
    hyps = ctc_greedy_decode(log_probs, rel_lengths, blank_id=tokenizer.blank_index)
    return [" ".join(tokenizer.decode(h).split()) for h in hyps]


def greedy_word_times(log_probs: torch.Tensor, rel_lengths: torch.Tensor, tokenizer,
                      frame_seconds: float) -> list[list[tuple[str, float, float]]]:
    """Words of the best path with their start and end times (seconds): a word starts at the
    first frame that emits one of its units and ends after the last frame of its last unit;
    blanks and word separators belong to no word. Characters split words at the space;
    SentencePiece units at a piece starting with ``▁``.

    >>> tok = CharTokenizer.from_texts(["AB C"])
    >>> a, b, c, sp = (tok.encode(x)[0] for x in "ABC ")
    >>> path = torch.tensor([[0, a, a, b, 0, sp, 0, 0, c, 0]])
    >>> logp = torch.log(torch.nn.functional.one_hot(path, len(tok)).float() + 1e-9)
    >>> greedy_word_times(logp, torch.tensor([1.0]), tok, 0.04)
    [[('AB', 0.04, 0.16), ('C', 0.32, 0.36)]]
    """
    best = log_probs.argmax(-1)
    lengths = torch.round(rel_lengths * log_probs.shape[1]).int()
    pieces = tokenizer.vocab_list
    out = []
    for seq, n in zip(best.tolist(), lengths.tolist(), strict=True):
        words, current, prev = [], None, None
        for t, unit in enumerate(seq[:n]):
            if unit == tokenizer.blank_index:
                prev = unit
                continue
            piece = pieces[unit]
            starts_word = piece.startswith("\u2581")
            if piece == tokenizer.space_token or (starts_word and unit != prev):
                if current is not None:
                    words.append(current)
                current = None
                if piece == tokenizer.space_token:
                    prev = unit
                    continue
            if unit != prev:
                if current is None:
                    current = [piece.lstrip("\u2581"), t, t + 1]
                else:
                    current[0] += piece
            if current is not None:
                current[2] = t + 1
            prev = unit
        if current is not None:
            words.append(current)
        out.append([(w, round(s * frame_seconds, 3), round(e * frame_seconds, 3)) for w, s, e in words if w])
    return out


def make_beam_searcher(tokenizer, beam_size: int = 20) -> CTCBeamSearcher:
    """SpeechBrain's CTC beam search over the tokenizer's units (no language model)."""
    return CTCBeamSearcher(
        blank_index=tokenizer.blank_index,
        vocab_list=tokenizer.vocab_list,
        space_token=tokenizer.space_token,
        beam_size=beam_size,
    )


def beam_decode(searcher: CTCBeamSearcher, log_probs: torch.Tensor, rel_lengths: torch.Tensor) -> list[str]:
    """Top hypothesis of each utterance."""
    hyps = searcher(log_probs, rel_lengths)
    return [" ".join(h[0].text.split()) for h in hyps]
