#!/usr/bin/env python3
"""Make an offline speech corpus in LibriSpeech layout by text-to-speech (no download needed).

Splits train-clean-100 / dev-clean / test-clean, each with its own synthetic speakers
(espeak-ng, flite, festival voices x pitch x speed) and its own documents (King James Bible
books, WordNet gloss groups), 16 kHz mono FLAC + UPPERCASE ``*.trans.txt``. Same seed, same
corpus. A finished corpus with the same settings is not made again.

Usage::

    python tools/data/make_corpus.py --out data/LibriSpeech --size default --seed 1234 --jobs 2
    python tools/data/make_corpus.py --out data/LibriSpeech-bench --size bench --train-hours 20

Sizes: ``tiny`` (tests, ~40 s train, ~15 s dev/test), ``default`` (demo, 2 h train,
6 min dev/test), ``bench`` (benchmarks, 10 h train, 30 min dev/test). Needs the Debian packages
listed in tools/setup/apt-packages.txt (``bash tools/setup/setup.sh`` installs them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from speechpos.corpora.librispeech import DEV, SIZES, TEST, TRAIN, make_corpus, write_lm_text
from speechpos.corpora.text import SOURCES
from speechpos.corpora.tts import ENGINES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the corpus maker.

    >>> a = parse_args(["--out", "x", "--size", "tiny", "--train-hours", "0.5"])
    >>> a.size, a.train_hours, a.jobs
    ('tiny', 0.5, 2)
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="corpus root, e.g. data/LibriSpeech")
    p.add_argument("--size", choices=sorted(SIZES), default="default")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--jobs", type=int, default=2, help="parallel synthesis processes")
    p.add_argument("--train-hours", type=float, help=f"override the hours of {TRAIN}")
    p.add_argument("--dev-hours", type=float, help=f"override the hours of {DEV}")
    p.add_argument("--test-hours", type=float, help=f"override the hours of {TEST}")
    p.add_argument("--engines", nargs="+", choices=ENGINES, help="engines to use (default all)")
    p.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    p.add_argument("--overwrite", action="store_true", help="remake a corpus of other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--lm-text", help="also write an LM text: every document not read in dev or test, "
                                     "one transcript a line (for asr_ctc.py --lm_text, speechpos export --lm-text)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the corpus maker; print the summary as JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = make_corpus(
        args.out,
        size=args.size,
        seed=args.seed,
        jobs=args.jobs,
        hours={TRAIN: args.train_hours, DEV: args.dev_hours, TEST: args.test_hours},
        engines=args.engines,
        sources=args.sources,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(json.dumps(summary, indent=1))
    if args.lm_text:
        lm = write_lm_text(args.out, args.lm_text, args.sources)
        print(f"{args.lm_text}: {lm['sentences']} sentences, {lm['words']} words from {lm['documents']} "
              f"documents (dev/test documents left out: {len(lm['held_out_documents'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
