"""Show what a position-pretrained ViT believes: every patch moved to its predicted position.

For a few validation images, the model of a ``recipes/ImageNet/pretrain.py`` experiment
predicts each patch's position (with the context ratio it was trained with, or
``--context-ratio``); the figure shows the original next to the image rebuilt with every patch
at its predicted place, as the MP3 and DropPos papers visualise. Patches predicted at the same
place are averaged; places no patch was predicted at are blue.

Usage::

    .venv/bin/python tools/plots/plot_reassembled.py results/vision_benchmark/pretrain/mp3/0 \
        --out results/vision_benchmark/reassembled_mp3.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hyperpyyaml import load_hyperpyyaml  # noqa: E402

from speechpos.position import sample_context_2d  # noqa: E402
from speechpos.vision.data import imagefolder_datasets  # noqa: E402
from speechpos.vision.patches import reassemble  # noqa: E402

EMPTY_COLOUR = (0.2, 0.4, 0.9)


def load_experiment(folder: Path) -> dict:
    """The experiment's hparams with its latest checkpoint's encoder and head loaded."""
    with open(folder / "hyperparams.yaml") as fin:
        hparams = load_hyperpyyaml(fin)
    if hparams.get("position_target", "absolute") != "absolute":
        raise ValueError(f"{folder}: reassembling needs absolute position targets, "
                         f"the experiment predicts {hparams['position_target']} ones")
    if hparams.get("coarse", 1) != 1:
        raise ValueError(f"{folder}: reassembling needs one class per grid cell, the experiment "
                         f"predicts {hparams['coarse']} x {hparams['coarse']} squares (coarse: {hparams['coarse']})")
    if hparams["checkpointer"].recover_if_possible() is None:
        raise FileNotFoundError(f"no checkpoint under {folder / 'save'}")
    hparams["vit"].eval()
    hparams["position_head"].eval()
    return hparams


@torch.no_grad()
def predict_positions(hparams: dict, images: torch.Tensor, context_ratio: float, seed: int):
    """(predicted positions (B, N), context mask (B, N)) of the experiment's model."""
    vit = hparams["vit"]
    context = sample_context_2d(
        images.shape[0],
        vit.grid,
        context_ratio,
        tuple(hparams["context_block"]),
        generator=torch.Generator().manual_seed(seed),
    )
    logits = hparams["position_head"](vit(images, context))
    return logits.argmax(-1), context.mask


def plot(originals, rebuilt, accuracy, path: Path, title: str) -> None:
    """One row per image: original | reassembled."""
    rows = len(originals)
    fig, axes = plt.subplots(rows, 2, figsize=(4.4, 2.2 * rows), squeeze=False)
    for i in range(rows):
        for ax, image, name in (
            (axes[i, 0], originals[i], "original"),
            (axes[i, 1], rebuilt[i], f"reassembled ({accuracy[i]:.0%} exact)"),
        ):
            ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="output folder of a pretrain.py run")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write")
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument(
        "--context-ratio", type=float, default=None, help="default: the one trained with"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    hparams = load_experiment(args.experiment)
    dataset = imagefolder_datasets(hparams)["valid"]
    step = max(len(dataset) // args.num_images, 1)
    indices = list(range(0, len(dataset), step))[: args.num_images]
    images = torch.stack([dataset[i][0] for i in indices])
    ratio = hparams["context_ratio"] if args.context_ratio is None else args.context_ratio
    positions, _ = predict_positions(hparams, images, ratio, args.seed)

    mean = torch.tensor(hparams["mean"]).view(-1, 1, 1)
    std = torch.tensor(hparams["std"]).view(-1, 1, 1)
    originals = (images * std + mean).clamp(0, 1)
    rebuilt = reassemble(originals, positions, hparams["patch_size"], fill=EMPTY_COLOUR)
    truth = torch.arange(positions.shape[1])
    accuracy = (positions == truth).float().mean(1).tolist()
    out = args.out or args.experiment / "reassembled.png"
    title = f"{args.experiment}\ncontext ratio {ratio:g}; mean exact {sum(accuracy) / len(accuracy):.0%}"
    plot(originals, rebuilt, accuracy, out, title)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
