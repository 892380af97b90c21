"""ImageFolder loading: bad files fail with errors that name them."""

import numpy as np
import pytest
from PIL import Image

from speechpos.vision.data import ImageLoadError, image_folder, image_transforms, load_rgb


@pytest.fixture
def folder(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "train" / label).mkdir(parents=True)
        Image.new("L", (12, 12), 100).save(tmp_path / "train" / label / "good.png")
    return tmp_path


def test_good_images_become_rgb_tensors(folder):
    Image.new("P", (12, 12)).save(folder / "train" / "a" / "palette.png")
    Image.new("CMYK", (12, 12)).save(folder / "train" / "b" / "cmyk.jpg")
    ds = image_folder(folder, "train", image_transforms(8, train=True, mean=[0.5], std=[0.5]))
    assert len(ds) == 4
    for i in range(len(ds)):
        image, _ = ds[i]
        assert tuple(image.shape) == (3, 8, 8)


def test_corrupt_file_names_the_file(folder):
    bad = folder / "train" / "b" / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    ds = image_folder(folder, "train")
    index = ds.samples.index((str(bad), 1))
    with pytest.raises(ImageLoadError, match=f"cannot read image {bad}"):
        ds[index]


def test_truncated_file_names_the_file(folder, tmp_path):
    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        full
    )
    cut = folder / "train" / "a" / "truncated.png"
    cut.write_bytes(full.read_bytes()[:2000])
    with pytest.raises(ImageLoadError, match=f"cannot read image {cut}"):
        load_rgb(cut)


def test_sixteen_bit_image_is_refused_not_clipped(folder):
    deep = folder / "train" / "a" / "deep.png"
    Image.fromarray(np.full((8, 8), 60000, dtype=np.uint16)).save(deep)
    ds = image_folder(folder, "train")
    index = ds.samples.index((str(deep), 0))
    with pytest.raises(ImageLoadError, match=rf"unsupported image {deep}: mode 'I;16'"):
        ds[index]


def test_missing_split_is_a_clear_error(folder):
    with pytest.raises(FileNotFoundError, match="no 'val' split"):
        image_folder(folder, "val")
