"""Plot a position-prediction pretraining run: training curves and the validation confusion.

Reads ``<run>/train_log.txt`` (SpeechBrain ``FileTrainLogger`` lines written by
``recipes/LibriSpeech/pretrain.py``) and ``<run>/valid_confusion.npy`` (counts of true
position i predicted as j), and writes

- ``training_curves.png``: loss, position accuracy and position error per epoch, train and
  valid, accuracy and error with their chance levels (dashed: a guess uniform over each
  utterance's positions);
- ``valid_confusion.png``: predicted vs true position, rows normalised, log colour scale,
  the first ``--first`` positions;

and prints a markdown table of the epochs.

Usage::

    .venv/bin/python tools/plots/plot_pretraining.py --run results/pp/transformer/1234 [--out DIR]
        [--first 100] [--token-ms 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from speechpos.experiments.plots import (  # noqa: E402
    epoch_table,
    plot_confusion,
    plot_training_curves,
    read_train_log,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="pretraining output folder")
    parser.add_argument("--out", type=Path, help="folder for the PNGs (default: --run)")
    parser.add_argument("--first", type=int, default=100, help="positions shown in the confusion (0: all)")
    parser.add_argument("--token-ms", type=float, default=None, help="token duration, for axis labels")
    args = parser.parse_args(argv)

    log = args.run / "train_log.txt"
    if not log.is_file():
        parser.error(f"{log} not found: is {args.run} a pretraining output folder?")
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)

    records = read_train_log(log)
    if not any("epoch" in r for r in records):
        parser.error(f"{log} holds no epoch lines")
    print(f"## {args.run}\n")
    print(epoch_table(records))
    curves = plot_training_curves(records, out / "training_curves.png", title=str(args.run))
    print(f"\nwrote {curves}")

    confusion = args.run / "valid_confusion.npy"
    if confusion.is_file():
        path = plot_confusion(
            np.load(confusion), out / "valid_confusion.png", first=args.first or None,
            token_ms=args.token_ms,
        )
        print(f"wrote {path}")
    else:
        print(f"no {confusion}: confusion heatmap skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
