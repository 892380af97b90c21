"""Google Speech Commands (v1/v2) data preparation for the speechpos recipes (SpeechBrain style).

``prepare_speech_commands`` reads ``<data_folder>/<word>/<speaker>_nohash_<n>.wav``,
``_background_noise_/``, ``validation_list.txt`` and ``testing_list.txt`` and writes
``<save_folder>/{train,valid,test}.csv`` (``ID, duration, wav, start, stop, spk_id, word,
label``) and ``labels.txt``, for the 12-class task (10 words + silence + unknown) or one class
per word (``--task all``). It skips work already done and fails with a ``SpeechCommandsError``
naming the offending file. The implementation lives in
:mod:`speechpos.speech.data.speech_commands`.

Command line::

    python recipes/SpeechCommands/speech_commands_prepare.py data/speech_commands results/kws_prep
"""

import argparse
import logging

from speechpos.recipes import die
from speechpos.speech.data.speech_commands import (
    TASKS,
    SpeechCommandsError,
    prepare_speech_commands,
)

__all__ = ["SpeechCommandsError", "prepare_speech_commands"]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write Speech Commands CSV manifests.")
    parser.add_argument("data_folder")
    parser.add_argument("save_folder")
    parser.add_argument("--task", choices=TASKS, default="12")
    parser.add_argument("--seed", type=int, default=59185)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        prepare_speech_commands(args.data_folder, args.save_folder, task=args.task, seed=args.seed)
    except SpeechCommandsError as err:
        die(str(err))
