"""ImageFolder data for the ImageNet recipes: a checked image loader and the transforms.

The layout is torchvision's ``ImageFolder`` one: ``<root>/<split>/<class>/<image>``.
:func:`load_rgb` replaces torchvision's default loader so that a corrupt, truncated or
unsupported file fails with an :class:`ImageLoadError` naming it, instead of a bare PIL error
deep inside a DataLoader worker, and so that 16-bit or float images are refused rather than
silently clipped to 8 bits by ``convert("RGB")``.

Example
-------
>>> import tempfile, pathlib
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for c in ("cat", "dog"):
...     (root / "train" / c).mkdir(parents=True)
...     Image.new("L", (8, 8), 128).save(root / "train" / c / "a.png")
>>> ds = image_folder(root, "train", image_transforms(8, train=False, mean=[0.5], std=[0.5]))
>>> image, label = ds[1]
>>> tuple(image.shape), label, ds.classes
((3, 8, 8), 1, ['cat', 'dog'])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from torchvision import datasets, transforms

# Modes whose conversion to 8-bit RGB keeps the picture; "I", "I;16*" and "F" (16/32-bit
# integer, float) would be clipped to 0..255 without a word.
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageLoadError(OSError):
    """An image file that cannot be used, with its path in the message."""


def load_rgb(path: str | Path) -> Image.Image:
    """Open, fully decode and convert an image file to RGB; errors name the file.

    >>> import tempfile, os
    >>> bad = os.path.join(tempfile.mkdtemp(), "bad.png")
    >>> _ = open(bad, "wb").write(b"not an image")
    >>> load_rgb(bad)
    Traceback (most recent call last):
    ...
    speechpos.vision.data.ImageLoadError: cannot read image .../bad.png: ...
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in SUPPORTED_MODES:
                raise ImageLoadError(
                    f"unsupported image {path}: mode {image.mode!r} cannot be converted to 8-bit "
                    f"RGB without losing its values (supported: {', '.join(sorted(SUPPORTED_MODES))})"
                )
            return image.convert("RGB")
    except ImageLoadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


def image_folder(root: str | Path, split: str, transform=None) -> datasets.ImageFolder:
    """``ImageFolder`` over ``<root>/<split>`` with the checked loader :func:`load_rgb`."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no {split!r} split at {folder}: expected an ImageFolder <root>/{split}/<class>/<image>"
        )
    return datasets.ImageFolder(str(folder), transform=transform, loader=load_rgb)


def imagefolder_datasets(hparams: dict) -> dict:
    """The recipes' train and valid ``ImageFolder`` datasets from their hparams.

    Reads ``data_folder``, ``train_split``, ``valid_split``, ``image_size``, ``mean``,
    ``std``, ``crop_scale``, ``hflip`` and ``eval_resize_ratio``.
    """
    common = {"mean": hparams["mean"], "std": hparams["std"]}
    train = image_transforms(
        hparams["image_size"],
        train=True,
        crop_scale=hparams["crop_scale"],
        hflip=hparams["hflip"],
        **common,
    )
    valid = image_transforms(
        hparams["image_size"], train=False, eval_resize_ratio=hparams["eval_resize_ratio"], **common
    )
    return {
        "train": image_folder(hparams["data_folder"], hparams["train_split"], train),
        "valid": image_folder(hparams["data_folder"], hparams["valid_split"], valid),
    }


def image_transforms(
    image_size: int,
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_scale: Sequence[float] = (0.08, 1.0),
    hflip: float = 0.5,
    eval_resize_ratio: float = 256 / 224,
) -> transforms.Compose:
    """Training: random resized crop + horizontal flip; evaluation: resize + centre crop.

    Arguments
    ---------
    image_size : int
        Side of the square crop fed to the ViT.
    train : bool
        Random augmentation (True) or the deterministic evaluation view.
    mean, std : sequence of float
        Per-channel normalisation (one value is broadcast to the three channels).
    crop_scale : (float, float)
        Area range of ``RandomResizedCrop``; (1, 1) with ``hflip=0`` gives no augmentation.
    hflip : float
        Probability of a horizontal flip (0 for digits or text).
    eval_resize_ratio : float
        Evaluation resizes the short side to ``image_size * eval_resize_ratio`` before the
        centre crop (256/224 for ImageNet; 1 when images are already at size).
    """
    mean = list(mean) * 3 if len(mean) == 1 else list(mean)
    std = list(std) * 3 if len(std) == 1 else list(std)
    if train:
        steps = [transforms.RandomResizedCrop(image_size, scale=tuple(crop_scale))]
        if hflip > 0:
            steps.append(transforms.RandomHorizontalFlip(hflip))
    else:
        steps = [
            transforms.Resize(round(image_size * eval_resize_ratio)),
            transforms.CenterCrop(image_size),
        ]
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)
