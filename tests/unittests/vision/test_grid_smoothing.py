"""DropPos' 2-D position smoothing targets on the real ViT patch grid."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechpos.position import PositionLayout, smoothed_targets
from speechpos.vision.vit import VisionTransformer

HPARAMS = Path(__file__).resolve().parents[3] / "recipes" / "ImageNet" / "hparams" / "pretrain.yaml"


def reference_targets(rows: int, cols: int, sigma: float) -> np.ndarray:
    """q[i, j] ∝ exp(-d((r_i, c_i), (r_j, c_j))² / σ²), computed from (row, col) directly."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    d2 = (r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2
    q = np.exp(-d2 / sigma**2)
    return q / q.sum(1, keepdims=True)


@pytest.mark.parametrize(("image_size", "patch_size"), [(32, 4), ((56, 40), 4), (224, 16)])
@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_targets_on_the_vit_grid(image_size, patch_size, sigma):
    vit = VisionTransformer(image_size, patch_size, d_model=8, num_layers=1, nhead=2, d_ffn=16)
    rows, cols = vit.grid
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    tokens = vit.patch_embedding(torch.zeros(1, 3, height, width)).shape[1]
    layout = PositionLayout(vit.grid)
    assert layout.num_positions == tokens == rows * cols
    true = torch.arange(tokens)[None]
    q = smoothed_targets(true, torch.tensor([tokens]), tokens, sigma, layout)[0]

    assert q.shape == (tokens, tokens)
    torch.testing.assert_close(q.sum(-1), torch.ones(tokens))
    assert torch.equal(q.argmax(-1), true[0])
    off_peak = q.masked_fill(torch.eye(tokens, dtype=torch.bool), -1).amax(-1)
    assert bool((q.diagonal() > off_peak).all())
    np.testing.assert_allclose(
        q.numpy(), reference_targets(rows, cols, sigma), rtol=1e-5, atol=1e-7
    )
    # 2-D neighbours: one row down is index + cols (a 16x16 grid for 14x14 patches breaks this).
    inner = (1 * cols + 1) if rows > 2 and cols > 2 else 0
    if inner:
        right, left, down, up = (q[inner, inner + d] for d in (1, -1, cols, -cols))
        torch.testing.assert_close(torch.stack([left, down, up]), right.expand(3))


def test_recipe_layout_is_the_patch_grid():
    """The recipe's smoothing layout comes from the ViT's image and patch size: 14x14 at 224/16."""
    with open(HPARAMS) as fin:
        hparams = load_hyperpyyaml(
            fin, {"data_folder": "unused", "d_model": 8, "nhead": 2, "d_ffn": 16, "num_layers": 1}
        )
    assert tuple(hparams["layout"].grid) == hparams["vit"].grid == (14, 14)
    assert hparams["position_head"].num_positions == 196
