"""The ViT: patch grid, permutation equivariance without position embedding, checkpoints."""

import pytest
import torch

from speechpos.position import sample_context_2d
from speechpos.vision.checkpoint import (
    CheckpointMismatchError,
    find_encoder_checkpoint,
    load_encoder_state,
)
from speechpos.vision.patches import PatchEmbedding, patchify, permute_patches, reassemble
from speechpos.vision.vit import VisionTransformer

SMALL = dict(image_size=32, patch_size=4, d_model=16, num_layers=2, nhead=2, d_ffn=32)


@pytest.fixture
def vit():
    torch.manual_seed(0)
    return VisionTransformer(**SMALL).eval()


def test_patch_embedding_rejects_other_image_sizes():
    with pytest.raises(ValueError, match="not a multiple"):
        PatchEmbedding(30, 4, 3, 8)
    with pytest.raises(ValueError, match="expected images of 32x32"):
        PatchEmbedding(32, 4, 3, 8)(torch.zeros(1, 3, 28, 28))


@pytest.mark.parametrize("context_ratio", [None, 0.25])
def test_vit_without_pe_is_permutation_equivariant_over_patches(vit, context_ratio):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 32, 32, generator=g)
    perm = torch.randperm(64, generator=g)
    context = None
    if context_ratio is not None:
        context = sample_context_2d(2, vit.grid, context_ratio, generator=g)
    with torch.no_grad():
        out = vit(images, context)
        shuffled = vit(
            permute_patches(images, perm, 4), None if context is None else context.permute(perm)
        )
    torch.testing.assert_close(shuffled, out[:, perm], atol=1e-5, rtol=1e-4)


def test_position_embedding_breaks_equivariance_and_starts_at_zero(vit):
    with_pe = VisionTransformer(**SMALL, position_embedding=True).eval()
    with_pe.load_state_dict(vit.state_dict(), strict=False)
    images = torch.randn(1, 3, 32, 32)
    perm = torch.randperm(64)
    with torch.no_grad():
        torch.testing.assert_close(with_pe(images), vit(images))  # zero-init: same function
        with_pe.position_embedding.weight.normal_()
        out = with_pe(images)
        shuffled = with_pe(permute_patches(images, perm, 4))
    assert not torch.allclose(shuffled, out[:, perm], atol=1e-3)


def test_reassemble_puts_patches_at_their_predicted_positions():
    images = torch.randn(2, 3, 16, 16)
    truth = torch.arange(16).expand(2, 16)
    torch.testing.assert_close(reassemble(images, truth, 4), images)
    perm = torch.randperm(16)
    # Patch n predicted at perm[n]: the reassembled image's patch perm[n] is original patch n.
    moved = patchify(reassemble(images, perm.expand(2, 16), 4), 4)
    torch.testing.assert_close(moved[:, perm], patchify(images, 4))


def test_encoder_checkpoint_round_trip_and_mismatches(tmp_path, vit):
    path = tmp_path / "vit.ckpt"
    torch.save(vit.state_dict(), path)
    finetune = VisionTransformer(**SMALL, position_embedding=True)
    assert load_encoder_state(finetune, tmp_path) == path
    for key, value in vit.state_dict().items():
        torch.testing.assert_close(finetune.state_dict()[key], value)
    assert not finetune.position_embedding.weight.any()

    deeper = VisionTransformer(**{**SMALL, "num_layers": 3})
    with pytest.raises(
        CheckpointMismatchError, match=r"keys missing \(e\.g\. encoder\.encoder\.layers\.2"
    ):
        load_encoder_state(deeper, path)
    wider = VisionTransformer(**{**SMALL, "d_ffn": 64})
    with pytest.raises(CheckpointMismatchError, match="of another shape"):
        load_encoder_state(wider, path)
    other_patch = VisionTransformer(**{**SMALL, "patch_size": 8})
    with pytest.raises(CheckpointMismatchError, match="patch_embedding.proj.weight"):
        load_encoder_state(other_patch, path)
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(CheckpointMismatchError, match="not a readable PyTorch checkpoint"):
        load_encoder_state(vit, tmp_path / "junk.ckpt")
    with pytest.raises(FileNotFoundError, match="vit.ckpt"):
        find_encoder_checkpoint(tmp_path / "nowhere")


def test_fine_tuned_position_embedding_is_skipped_by_a_model_without_one(tmp_path, vit):
    path = tmp_path / "vit.ckpt"
    torch.save(VisionTransformer(**SMALL, position_embedding=True).state_dict(), path)
    load_encoder_state(vit, path)
    bad = VisionTransformer(**{**SMALL, "image_size": 16}, position_embedding=True)
    with pytest.raises(CheckpointMismatchError, match="position_embedding.weight"):
        load_encoder_state(bad, path)
