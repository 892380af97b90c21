"""LibriSpeech data preparation for the speechpos recipes (SpeechBrain convention).

``prepare_librispeech`` walks ``<data_folder>/<split>/<spk>/<chapter>/`` (``*.flac`` and
``*.trans.txt``) and writes ``<save_folder>/<split>.csv`` with the columns
``ID, duration, wav, spk_id, wrd``; it skips work already done, fails with a
``DataPreparationError`` naming the offending file, and can write Libri-light-style low-label
subsets (``train-10min.csv``, ``train-1h.csv``, ``train-10h.csv``). The implementation lives
in :mod:`speechpos.speech.data.librispeech`; this file keeps the recipe layout of SpeechBrain,
where each ``train.py`` does ``from librispeech_prepare import prepare_librispeech``.

Command line::

    python recipes/LibriSpeech/librispeech_prepare.py data/LibriSpeech results/prep \\
        --tr train-clean-100 --dev dev-clean --te test-clean --low-label 10min 1h 10h

Example
-------
>>> from librispeech_prepare import prepare_librispeech  # doctest: +SKIP
>>> prepare_librispeech("data/LibriSpeech", "results/prep", tr_splits=["train-clean-100"],
...                     dev_splits=["dev-clean"], te_splits=["test-clean"])  # doctest: +SKIP
"""

import argparse
import logging

from speechpos.speech.data.librispeech import (
    LOW_LABEL_BUDGETS,
    DataPreparationError,
    prepare_librispeech,
)

__all__ = ["DataPreparationError", "LOW_LABEL_BUDGETS", "prepare_librispeech"]

logger = logging.getLogger(__name__)


def main(argv=None):
    """Command-line entry point: prepare the CSVs and print their paths."""
    p = argparse.ArgumentParser(description="Write LibriSpeech CSVs (ID,duration,wav,spk_id,wrd)")
    p.add_argument("data_folder")
    p.add_argument("save_folder")
    p.add_argument("--tr", nargs="*", default=["train-clean-100"], help="training splits")
    p.add_argument("--dev", nargs="*", default=["dev-clean"], help="validation splits")
    p.add_argument("--te", nargs="*", default=["test-clean"], help="test splits")
    p.add_argument("--low-label", nargs="*", choices=list(LOW_LABEL_BUDGETS), default=None)
    p.add_argument("--low-label-seed", type=int, default=1234)
    p.add_argument("--check-audio", choices=["header", "tail", "full"], default="tail")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    csvs = prepare_librispeech(
        args.data_folder,
        args.save_folder,
        tr_splits=args.tr,
        dev_splits=args.dev,
        te_splits=args.te,
        low_label=args.low_label,
        low_label_seed=args.low_label_seed,
        check_audio=args.check_audio,
        overwrite=args.overwrite,
    )
    for name, path in csvs.items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
