"""Small helpers shared by the recipes: hparams loading with clear errors, paths."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml.error import YAMLError

from speechpos.compilation import resolve_compile
from speechpos.precision import resolve_precision

# ctc.yaml's defaults build the from-scratch baseline (6-layer conformer on patch tokens,
# sinusoidal positions, no null key); these overrides give pp.yaml's / bestrq.yaml's encoder
# architecture instead, to fine-tune a pretrained encoder (zero-initialised learned positions).
PRETRAINED_ARCHITECTURE = (
    "--frontend=patch", "--encoder_kind=transformer", "--null_key=True",
    "--position_embedding=learned",
)


class ConfigError(ValueError):
    """An hparams file or override is wrong."""


def resolve_hparams_path(path: str, script_file: str) -> str:
    """``hparams/x.yaml`` works from the repo root and from the recipe folder alike."""
    if os.path.isfile(path):
        return path
    beside = os.path.join(os.path.dirname(os.path.abspath(script_file)), path)
    if os.path.isfile(beside):
        return beside
    raise ConfigError(f"hparams file not found: {path}")


def take_ckpt_interval_minutes(argv: list[str]) -> tuple[list[str], float | None]:
    """``--ckpt_interval_minutes`` taken out of ``argv`` as a number of minutes that may be a
    fraction (SpeechBrain's parser wants an int; its Brain compares minutes as floats), so a
    short run can checkpoint every few seconds.

    >>> take_ckpt_interval_minutes(["x.yaml", "--ckpt_interval_minutes=0.05", "--seed=1"])
    (['x.yaml', '--seed=1'], 0.05)
    >>> take_ckpt_interval_minutes(["x.yaml", "--ckpt_interval_minutes", "2"])
    (['x.yaml'], 2.0)
    >>> take_ckpt_interval_minutes(["x.yaml", "--ckpt_interval_minutes=soon"])
    Traceback (most recent call last):
    speechpos.recipes.ConfigError: --ckpt_interval_minutes must be a number of minutes, got 'soon'
    """
    rest, minutes, argv = [], None, list(argv)
    while argv:
        arg = argv.pop(0)
        name, eq, value = arg.partition("=")
        if name != "--ckpt_interval_minutes":
            rest.append(arg)
            continue
        if not eq:
            value = argv.pop(0) if argv else ""
        try:
            minutes = float(value)
        except ValueError as err:
            raise ConfigError(f"--ckpt_interval_minutes must be a number of minutes, got {value!r}") from err
    return rest, minutes


def load_recipe_hparams(argv: list[str], script_file: str, default_hparams: str | None = None):
    """Parse ``script.py hparams.yaml --key=value ...`` as SpeechBrain does, and load the yaml.

    Without an hparams file on the command line the recipe's ``default_hparams`` (a path beside
    the script, e.g. ``hparams/ctc.yaml``) is used. An override naming a key the yaml does not
    have is refused with the key's name (SpeechBrain raises a bare KeyError deep inside ruamel).
    Returns (hparams_file, run_opts, overrides, hparams).
    """
    argv = list(argv)
    if default_hparams and (not argv or argv[0].startswith("-")):
        argv.insert(0, default_hparams)
    argv, minutes = take_ckpt_interval_minutes(argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if minutes is not None:
        run_opts = dataclasses.replace(run_opts, ckpt_interval_minutes=minutes,
                                       overridden_args={*run_opts.overridden_args, "ckpt_interval_minutes"})
    # SpeechBrain 1.1.2 parses options whose default is None as strings; the step limit is an int.
    limit = run_opts.get("optimizer_step_limit")
    if isinstance(limit, str):
        try:
            run_opts = dataclasses.replace(run_opts, optimizer_step_limit=int(limit))
        except ValueError as err:
            raise ConfigError(f"--optimizer_step_limit must be an integer, got {limit!r}") from err
    hparams_file = resolve_hparams_path(hparams_file, script_file)
    with open(hparams_file, encoding="utf-8") as fin:
        text = fin.read()
    try:
        hparams = load_hyperpyyaml(text, overrides)
    except KeyError as err:
        raise ConfigError(
            f"{hparams_file}: {err.args[0]} (overrides must name keys of the hparams file)"
        ) from err
    except YAMLError as err:
        raise ConfigError(f"{hparams_file} with overrides {overrides!r}: {err}") from err
    return hparams_file, run_opts, overrides, hparams


def start_experiment(argv: list[str], script_file: str, default_hparams: str | None = None):
    """What every recipe does first: load the hparams (clear errors for bad keys), decide
    ``precision: auto`` (:mod:`speechpos.precision`) and ``compile: auto``
    (:mod:`speechpos.compilation`), join the DDP group when launched by
    torchrun, and create the experiment folder.
    Returns (run_opts, hparams)."""
    hparams_file, run_opts, overrides, hparams = load_recipe_hparams(
        argv, script_file, default_hparams
    )
    sb.utils.distributed.ddp_init_group(run_opts)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    try:  # after the experiment folder exists, so the choices are logged in its log.txt
        resolve_precision(run_opts, hparams)
        resolve_compile(run_opts, hparams)
    except ValueError as err:
        raise ConfigError(f"{hparams_file}: {err}") from err
    return run_opts, hparams


OPTIONAL_TEST_SPLITS = ("test-other",)  # corpora made before it existed lack it


def drop_missing_test_splits(hparams) -> list[str]:
    """Leave out of ``test_splits`` and ``test_csvs`` an optional test split (``test-other``)
    that the corpus does not hold (no folder in ``data_folder``; with ``skip_prep``, no CSV),
    with a warning; returns the splits left out.

    >>> hp = {"data_folder": "/nonexistent", "skip_prep": False, "test_splits": ["test-clean", "test-other"],
    ...       "test_csvs": {"test-clean": "a.csv", "test-other": "b.csv"}}
    >>> drop_missing_test_splits(hp), hp["test_splits"], list(hp["test_csvs"])
    (['test-other'], ['test-clean'], ['test-clean'])
    """
    missing = []
    for split in OPTIONAL_TEST_SPLITS:
        if split not in hparams["test_splits"] and split not in hparams["test_csvs"]:
            continue
        csv = hparams["test_csvs"].get(split)
        present = (os.path.isfile(csv) if hparams["skip_prep"] and csv
                   else os.path.isdir(os.path.join(hparams["data_folder"], split)))
        if not present:
            missing.append(split)
            hparams["test_splits"] = [s for s in hparams["test_splits"] if s != split]
            hparams["test_csvs"] = {k: v for k, v in hparams["test_csvs"].items() if k != split}
            logging.getLogger(__name__).warning(
                "%s: the corpus %s has no %s split (make it with tools/data/make_corpus.py): not tested",
                split, hparams["data_folder"], split)
    return missing


def prepare_speech_data(hparams, test_splits=(), low_label=None) -> None:
    """Write the LibriSpeech CSV manifests named by the hparams (skipped when already done,
    or when ``skip_prep`` is set)."""
    if hparams["skip_prep"]:
        return
    from speechpos.speech.data.librispeech import prepare_librispeech

    if not os.path.isdir(hparams["data_folder"]):
        raise FileNotFoundError(
            f"data_folder {hparams['data_folder']} does not exist: point --data_folder at a "
            "LibriSpeech folder, or make one with tools/data/make_corpus.py"
        )
    prepare_librispeech(
        data_folder=hparams["data_folder"],
        save_folder=hparams["prep_folder"],
        tr_splits=hparams["train_splits"],
        dev_splits=hparams["dev_splits"],
        te_splits=list(test_splits),
        low_label=low_label,
        # Several training splits (960 h): also one train.csv joining them, for --train_csv.
        merge_lst=hparams["train_splits"] if len(hparams["train_splits"]) > 1 else (),
        merge_name="train.csv" if len(hparams["train_splits"]) > 1 else None,
    )


def prepare_keyword_data(hparams) -> None:
    """Write the Speech Commands CSV manifests named by the hparams, on the main process only
    (skipped when already done, or when ``skip_prep`` is set)."""
    from speechpos.speech.data.speech_commands import prepare_speech_commands

    sb.utils.distributed.run_on_main(
        prepare_speech_commands,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["prep_folder"],
            "task": str(hparams["task"]),
            "silence_percentage": hparams["silence_percentage"],
            "unknown_percentage": hparams["unknown_percentage"],
            "skip_prep": hparams["skip_prep"],
        },
    )


def train_loader_options(hparams, train_set) -> dict:
    """``train_dataloader_opts``, or a SpeechBrain ``DynamicBatchSampler`` over ``duration``
    when ``dynamic_batching`` is set (batches of ``max_batch_length_train`` seconds). Where CUDA
    is available batches are pinned (``pin_memory``), unless the options say otherwise, so the
    host-to-GPU copy does not stall the step."""
    import torch

    pin = {"pin_memory": torch.cuda.is_available()}
    if not hparams.get("dynamic_batching"):
        return {**pin, **hparams["train_dataloader_opts"]}
    sampler = sb.dataio.sampler.DynamicBatchSampler(
        train_set,
        max_batch_length=hparams["max_batch_length_train"],
        num_buckets=hparams["num_buckets"],
        length_func=lambda x: x["duration"],
        shuffle=True,
        batch_ordering="random",
        max_batch_ex=hparams["max_batch_ex"],
    )
    return {"batch_sampler": sampler, "num_workers": hparams["num_workers"], **pin}


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input (files, configs, checkpoints), not a bug: the recipes
    print their message without a traceback."""
    from speechpos.speech.ctc import CTCAlignmentError, TranscriptError
    from speechpos.speech.data.audio import AudioError
    from speechpos.speech.data.librispeech import DataPreparationError  # SpeechCommandsError too
    from speechpos.speech.lm import LMTextError
    from speechpos.speech.model import CheckpointMismatchError

    return (
        ConfigError, FileNotFoundError, DataPreparationError, AudioError, TranscriptError,
        CTCAlignmentError, CheckpointMismatchError, LMTextError,
    )


def die(message: str) -> None:
    """Print a one-line error and exit non-zero (for recipe entry points)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
