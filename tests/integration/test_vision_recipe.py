"""The ImageNet recipes end to end on a tiny ImageFolder: pretraining learns, fine-tuning loads it."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from speechpos.vision.checkpoint import CheckpointMismatchError, find_encoder_checkpoint

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "ImageNet"
TINY = [
    "--image_size=16",
    "--patch_size=4",
    "--d_model=32",
    "--nhead=4",
    "--d_ffn=64",
    "--num_layers=2",
    "--batch_size=8",
    "--num_workers=0",
    "--crop_scale=[1.0,1.0]",
    "--hflip=0.0",
    "--eval_resize_ratio=1.0",
    "--mean=[0.5]",
    "--std=[0.5]",
    "--warmup_epochs=0",
    "--noprogressbar",
    "--device=cpu",
]


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(f"imagenet_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_losses(log: Path) -> list[float]:
    return [float(x) for x in re.findall(r"train loss: ([0-9.e+-]+)", log.read_text())]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """Two classes of 16x16 images whose intensity ramps along rows or along columns, so
    every patch's content tells its position."""
    root = tmp_path_factory.mktemp("tiny_imagefolder")
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 16)
    for split, count in (("train", 16), ("val", 4)):
        for label, image in (
            ("rows", ramp[:, None] + 0 * ramp),
            ("cols", ramp[None, :] + 0 * ramp[:, None]),
        ):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                noisy = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
                Image.fromarray(noisy).convert("RGB").save(root / split / label / f"{i}.png")
    return root


def pretrain_variant(tiny_folder, out, *extra):
    load_recipe("pretrain").main(
        [
            str(RECIPES / "hparams" / "pretrain.yaml"),
            f"--data_folder={tiny_folder}",
            f"--output_folder={out}",
            "--number_of_epochs=8",
            "--lr=0.003",
            "--context_ratio=0.5",
            *TINY,
            *extra,
        ]
    )
    return train_losses(out / "train_log.txt"), json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def pretrained(tiny_folder, tmp_path_factory, single_thread):
    out = tmp_path_factory.mktemp("pretrain")
    pretrain_variant(tiny_folder, out, "--sigma_start=1.0", "--attentive=True")
    return out


def test_pretraining_lowers_the_position_loss(pretrained):
    losses = train_losses(pretrained / "train_log.txt")
    assert len(losses) == 8
    assert losses[-1] < 0.8 * losses[0]
    assert "attentive_pass_s" in (pretrained / "train_log.txt").read_text()
    assert (pretrained / "results.json").is_file()


def test_finetuning_loads_the_pretrained_encoder_and_learns(
    pretrained, tiny_folder, tmp_path, monkeypatch
):
    finetune = load_recipe("finetune")
    seen = {}
    real_load = finetune.load_encoder_state

    def spy(model, path):
        seen["path"] = real_load(model, path)
        seen["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        return seen["path"]

    monkeypatch.setattr(finetune, "load_encoder_state", spy)
    out = tmp_path / "finetune"
    brain = finetune.main(
        [
            str(RECIPES / "hparams" / "finetune.yaml"),
            f"--data_folder={tiny_folder}",
            f"--output_folder={out}",
            f"--pretrained_path={pretrained}",
            "--number_of_epochs=6",
            "--lr=0.003",
            "--num_classes=2",
            "--label_smoothing=0.0",
            *TINY,
        ]
    )
    assert seen["path"] == find_encoder_checkpoint(pretrained)
    saved = torch.load(seen["path"], weights_only=True)
    assert set(seen["state"]) - set(saved) == {"position_embedding.weight"}
    for key, value in saved.items():
        assert torch.equal(seen["state"][key], value), key
    assert not seen["state"]["position_embedding.weight"].any()
    assert brain.modules.vit.position_embedding.weight.abs().sum() > 0  # PE trained

    losses = train_losses(out / "train_log.txt")
    assert losses[-1] < 0.7 * losses[0]
    assert (out / "results.json").is_file()


def test_linear_probe_trains_only_the_classifier(pretrained, tiny_folder, tmp_path):
    brain = load_recipe("finetune").main(
        [
            str(RECIPES / "hparams" / "finetune.yaml"),
            f"--data_folder={tiny_folder}",
            f"--output_folder={tmp_path / 'probe'}",
            f"--pretrained_path={pretrained}",
            "--number_of_epochs=2",
            "--num_classes=2",
            "--position_embedding=False",
            "--linear_probe=True",
            *TINY,
        ]
    )
    saved = torch.load(find_encoder_checkpoint(pretrained), weights_only=True)
    for key, value in brain.modules.vit.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_finetuning_refuses_an_encoder_of_another_architecture(pretrained, tiny_folder, tmp_path):
    with pytest.raises(CheckpointMismatchError, match="different architecture"):
        load_recipe("finetune").main(
            [
                str(RECIPES / "hparams" / "finetune.yaml"),
                f"--data_folder={tiny_folder}",
                f"--output_folder={tmp_path / 'mismatch'}",
                f"--pretrained_path={pretrained}",
                "--num_classes=2",
                *[arg for arg in TINY if not arg.startswith("--num_layers=")],
                "--num_layers=3",
            ]
        )


def test_pretraining_refuses_a_smoothing_grid_that_is_not_the_patch_grid(
    tiny_folder, tmp_path, single_thread
):
    with pytest.raises(
        ValueError, match=r"grid \(16, 16\) differs from the ViT patch grid \(4, 4\)"
    ):
        load_recipe("pretrain").main(
            [
                str(RECIPES / "hparams" / "pretrain.yaml"),
                f"--data_folder={tiny_folder}",
                f"--output_folder={tmp_path / 'badgrid'}",
                "--grid_size=16",
                *TINY,
            ]
        )


def test_pretraining_with_anchors_and_sampled_targets_learns_the_positions(
    tiny_folder, tmp_path, single_thread
):
    losses, result = pretrain_variant(
        tiny_folder, tmp_path / "anchors", "--anchor_ratio=0.5", "--target_ratio=0.5"
    )
    assert losses[-1] < 0.85 * losses[0]
    assert result["position_accuracy"] > 2 * result["chance_accuracy"]
    assert result["position_error"] < result["chance_position_error"]


def test_pretraining_with_relative_targets_reports_the_offsets_chance(
    tiny_folder, tmp_path, single_thread
):
    losses, result = pretrain_variant(
        tiny_folder, tmp_path / "relative", "--position_target=relative", "--max_offset=3"
    )
    assert losses[-1] < losses[0]
    # Chance is a guess drawn from the offsets' own distribution: 2k + 1 = 7 classes at best
    # uniform, more peaked where an edge cuts the offsets off.
    assert 1 / 7 - 0.02 < result["chance_accuracy"] < 0.5
    assert result["position_accuracy"] > result["chance_accuracy"]


def test_pretraining_refuses_smoothing_relative_targets(tiny_folder, tmp_path, single_thread):
    with pytest.raises(ValueError, match="position smoothing works on grid positions, not on relative offsets"):
        pretrain_variant(
            tiny_folder, tmp_path / "bad", "--position_target=relative", "--sigma_start=1.0"
        )


def test_pretraining_with_a_gap_and_coarse_squares_learns_them(tiny_folder, tmp_path, single_thread):
    """No scored patch touches a context patch (a square gap of one cell), and the classes are
    2 x 2 squares of cells: chance is one in the coarse grid's 16 squares."""
    out = tmp_path / "gap_coarse"
    load_recipe("pretrain").main([
        str(RECIPES / "hparams" / "pretrain.yaml"), f"--data_folder={tiny_folder}", f"--output_folder={out}",
        "--number_of_epochs=8", "--lr=0.003", "--context_ratio=0.25", "--anchor_ratio=1.0", "--min_gap=1",
        "--coarse=2", "--image_size=32", *TINY[1:],
    ])
    losses, result = train_losses(out / "train_log.txt"), json.loads((out / "results.json").read_text())
    assert losses[-1] < losses[0]
    assert result["chance_accuracy"] == pytest.approx(1 / 16, abs=0.005)    # 8 x 8 grid -> 4 x 4 squares
    assert result["position_accuracy"] > result["chance_accuracy"]
