#!/usr/bin/env python3
"""Make an offline speech corpus in LibriSpeech layout by text-to-speech (no download needed).

Splits train-clean-100 / dev-clean / test-clean, each with its own synthetic speakers
(espeak-ng, flite, festival voices x pitch x speed) and its own documents (King James Bible
books, WordNet gloss groups), 16 kHz mono FLAC + UPPERCASE ``*.trans.txt``; and test-other, read
by engines and voices no other split uses (festival's HMM-based voice, espeak-ng's en-us-nyc
accent) from documents no other split reads. Same seed, same corpus. A finished corpus with the
same settings is not made again; one made without test-other gets it added (the other splits are
left as they are). The LM text ``<out>/librispeech-lm-norm.txt`` (every document not read in
dev, test or test-other, one sentence a line) is written with every corpus.

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

from speechpos.corpora.librispeech import (
    DEV,
    LM_TEXT,
    SIZES,
    TEST,
    TEST_OTHER,
    TRAIN,
    make_corpus,
    write_lm_text,
)
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
    p.add_argument("--other-hours", type=float, help=f"override the hours of {TEST_OTHER}")
    p.add_argument("--no-test-other", action="store_true", help=f"do not make {TEST_OTHER}")
    p.add_argument("--engines", nargs="+", choices=ENGINES, help="engines to use (default all)")
    p.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    p.add_argument("--overwrite", action="store_true", help="remake a corpus of other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--lm-text", help=f"also write a copy of the LM text (always written as <out>/{LM_TEXT}): "
                                     "every document not read in dev, test or test-other, one transcript a line")
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
        hours={TRAIN: args.train_hours, DEV: args.dev_hours, TEST: args.test_hours,
               TEST_OTHER: args.other_hours},
        engines=args.engines,
        sources=args.sources,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        test_other=not args.no_test_other,
    )
    print(json.dumps(summary, indent=1))
    if args.lm_text:
        lm = write_lm_text(args.out, args.lm_text, args.sources)
        print(f"{args.lm_text}: {lm['sentences']} sentences, {lm['words']} words from {lm['documents']} "
              f"documents (dev/test documents left out: {len(lm['held_out_documents'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
