#!/usr/bin/env python3
"""Make a keyword-spotting corpus offline in Google Speech Commands layout (v1's 30 words).

See :mod:`speechpos.corpora.speech_commands`. Sizes: ``tiny`` (16 speakers x 30 words, seconds; for
tests) and ``default`` (160 speakers x 30 words x 2 repetitions, a few minutes on 2 cores).
A finished corpus with the same settings is not remade.

Usage::

    .venv/bin/python tools/data/make_kws_corpus.py --out data/speech_commands --size default --seed 1234
    .venv/bin/python tools/data/make_kws_corpus.py --out data/kws_default_flite --held-out-engine flite
"""

from __future__ import annotations

import argparse
import logging
import sys

from speechpos.corpora.speech_commands import SIZES, make_kws_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/speech_commands")
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--held-out-engine", choices=["espeak-ng", "flite", "festival"],
                        help="train on the other engines; this engine's speakers go to testing_other_list.txt")
    parser.add_argument("--overwrite", action="store_true", help="remake a corpus of other settings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        make_kws_corpus(args.out, args.size, args.seed, args.jobs, overwrite=args.overwrite,
                        held_out_engine=args.held_out_engine)
    except (FileExistsError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
