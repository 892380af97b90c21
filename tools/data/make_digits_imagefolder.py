"""Write scikit-learn's shipped handwritten digits as an ImageFolder for the ImageNet recipe.

``sklearn.datasets.load_digits`` holds 1,797 real 8x8 grey-scale digits (values 0..16, ten
classes) inside the wheel, so no download is needed. Each digit is scaled to 0..255, upscaled
(bicubic) to ``--size`` pixels and saved as an RGB PNG under
``<out>/{train,val}/<digit>/<index>.png``. The split is stratified and deterministic
(``--seed``); a marker file records the settings, and a second run with the same settings
does nothing.

Usage::

    .venv/bin/python tools/data/make_digits_imagefolder.py --out data/digits --size 32
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

MARKER = "digits_imagefolder.json"


def digit_image(pixels: np.ndarray, size: int) -> Image.Image:
    """An (8, 8) array of values 0..16 -> a size x size RGB image."""
    grey = Image.fromarray(np.round(pixels * 255.0 / 16.0).astype(np.uint8), mode="L")
    return grey.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def make_digits_imagefolder(
    out: str | Path, size: int = 32, val_fraction: float = 0.2, seed: int = 0
) -> dict:
    """Write the ImageFolder (unless one with the same settings exists); returns its counts."""
    out = Path(out)
    settings = {"size": size, "val_fraction": val_fraction, "seed": seed}
    marker = out / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done["settings"] == settings:
            return done["counts"]
        shutil.rmtree(out)
    digits = load_digits()
    index = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(
        index, test_size=val_fraction, stratify=digits.target, random_state=seed
    )
    counts = {}
    for split, chosen in (("train", train_idx), ("val", val_idx)):
        for i in sorted(chosen):
            folder = out / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            digit_image(digits.images[i], size).save(folder / f"{i:04d}.png")
        counts[split] = len(chosen)
    marker.write_text(json.dumps({"settings": settings, "counts": counts}, indent=1))
    return counts


def digits_or_existing(data: str | Path) -> bool:
    """The digits written into ``data`` (new, empty, or made here before), or a folder of the
    user's used as it is, never written into: True when it is the user's. One that is not an
    ImageFolder (``train/`` and ``val/``, a folder per class) is refused.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "notes.txt").write_text("mine") and digits_or_existing(root)
    Traceback (most recent call last):
    ValueError: ...: not an ImageFolder (no train/ and val/ folders of one folder per class) and not made by make_digits_imagefolder; point --data at an ImageFolder, or at a new folder for the digits
    """
    data = Path(data)
    if not data.is_dir() or (data / MARKER).is_file() or not any(data.iterdir()):
        make_digits_imagefolder(data)
        return False
    classes = [sorted(p.name for p in (data / split).iterdir() if p.is_dir()) if (data / split).is_dir() else []
               for split in ("train", "val")]
    if not classes[0] or not classes[1]:
        raise ValueError(f"{data}: not an ImageFolder (no train/ and val/ folders of one folder per class) and not "
                         "made by make_digits_imagefolder; point --data at an ImageFolder, or at a new folder for the digits")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/digits", help="ImageFolder root to write")
    parser.add_argument("--size", type=int, default=32, help="side of the written images")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = make_digits_imagefolder(args.out, args.size, args.val_fraction, args.seed)
    print(f"{args.out}: {counts['train']} train, {counts['val']} val images")


if __name__ == "__main__":
    main()
