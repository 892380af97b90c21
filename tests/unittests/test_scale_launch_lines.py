"""The LibriSpeech-scale launch lines of docs/gpu.md name only keys their hparams files have, and the
recipes' preparation joins several training splits into the train.csv those lines point at."""

import re
import shlex
from pathlib import Path

import pytest

from speechpos.recipes import load_recipe_hparams

ROOT = Path(__file__).resolve().parents[2]


def scale_lines() -> list[list[str]]:
    text = (ROOT / "docs" / "gpu.md").read_text()
    section = text.split("## Train at LibriSpeech scale on GPUs", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```bash")[1:]]
    commands = [c for b in blocks for c in re.sub(r"\\\n\s*", " ", b).splitlines()]
    return [shlex.split(c) for c in commands if c.startswith("torchrun")]


def test_there_are_pretraining_and_ctc_lines():
    scripts = [next(a for a in argv if a.endswith(".py")) for argv in scale_lines()]
    assert scripts == ["pretrain.py", "asr_ctc.py", "asr_ctc.py"]


@pytest.mark.parametrize("argv", scale_lines(), ids=lambda a: next(x for x in a if x.endswith(".py")))
def test_every_override_is_a_key_of_its_hparams(argv, tmp_path):
    script = next(i for i, a in enumerate(argv) if a.endswith(".py"))
    recipe = ROOT / "recipes" / "LibriSpeech" / argv[script]
    args = [a for a in argv[script + 1:] if not a.startswith("--output_folder=")]
    args.append(f"--output_folder={tmp_path}")
    _, run_opts, _, hparams = load_recipe_hparams(args, str(recipe))
    keys = [a[2:].split("=", 1)[0] for a in args[1:] if "=" in a]
    assert keys and all(k in hparams or k in run_opts.overridden_args for k in keys)


def test_several_training_splits_are_joined_into_train_csv(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("speechpos.speech.data.librispeech.prepare_librispeech",
                        lambda **kwargs: seen.update(kwargs))
    from speechpos.recipes import prepare_speech_data

    hparams = {"skip_prep": False, "data_folder": str(tmp_path), "prep_folder": str(tmp_path / "prep"),
               "train_splits": ["train-clean-100", "train-clean-360"], "dev_splits": ["dev-clean"]}
    prepare_speech_data(hparams)
    assert seen["merge_lst"] == ["train-clean-100", "train-clean-360"] and seen["merge_name"] == "train.csv"
    hparams["train_splits"] = ["train-clean-100"]
    prepare_speech_data(hparams)
    assert not seen["merge_lst"] and seen["merge_name"] is None
