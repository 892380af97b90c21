"""Images as grids of patches: the ViT patch embedding, and moving patches around.

Patches are numbered row-major over the (H/p, W/p) grid, the order in which
:class:`PatchEmbedding` emits tokens and in which the position head numbers positions.

Example
-------
>>> import torch
>>> embed = PatchEmbedding(image_size=32, patch_size=4, in_channels=3, d_model=16)
>>> embed.grid, embed(torch.randn(2, 3, 32, 32)).shape
((8, 8), torch.Size([2, 64, 16]))
>>> x = torch.randn(1, 3, 8, 12)
>>> torch.equal(unpatchify(patchify(x, 4), 4, (2, 3)), x)
True
"""

from __future__ import annotations

import torch
from torch import nn


def patch_grid(image_size: int | tuple[int, int], patch_size: int) -> tuple[int, int]:
    """(rows, columns) of patches; the image sides must be multiples of the patch size.

    >>> patch_grid(224, 16), patch_grid((32, 24), 4)
    ((14, 14), (8, 6))
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not a multiple of the patch size {patch_size}"
        )
    return height // patch_size, width // patch_size


class PatchEmbedding(nn.Module):
    """Non-overlapping p x p patches, each linearly projected to ``d_model`` (a strided conv).

    No position information is added here: the recipes add it (or not) afterwards.

    Arguments
    ---------
    image_size : int or (int, int)
        Input side (square) or (height, width).
    patch_size : int
        Side of a patch in pixels.
    in_channels : int
        Image channels.
    d_model : int
        Token size.
    """

    def __init__(
        self, image_size: int | tuple[int, int], patch_size: int, in_channels: int, d_model: int
    ):
        super().__init__()
        self.grid = patch_grid(image_size, patch_size)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)

    @property
    def num_patches(self) -> int:
        """Tokens per image."""
        return self.grid[0] * self.grid[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N, D) tokens, row-major over the patch grid."""
        if tuple(images.shape[-2:]) != (
            self.grid[0] * self.patch_size,
            self.grid[1] * self.patch_size,
        ):
            raise ValueError(
                f"expected images of {self.grid[0] * self.patch_size}x{self.grid[1] * self.patch_size} "
                f"pixels, got {images.shape[-2]}x{images.shape[-1]}"
            )
        return self.proj(images).flatten(2).transpose(1, 2)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C, p, p), patches in row-major order."""
    batch, channels, height, width = images.shape
    rows, cols = patch_grid((height, width), patch_size)
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(batch, rows * cols, channels, patch_size, patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C, p, p) patches in row-major order -> (B, C, H, W), the inverse of :func:`patchify`."""
    batch, _, channels = patches.shape[:3]
    rows, cols = grid
    x = patches.reshape(batch, rows, cols, channels, patch_size, patch_size)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(
        batch, channels, rows * patch_size, cols * patch_size
    )


def permute_patches(images: torch.Tensor, perm: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The images with their patches rearranged: new patch ``j`` is old patch ``perm[j]``.

    >>> x = torch.arange(4.).view(1, 1, 2, 2)
    >>> permute_patches(x, torch.tensor([3, 2, 1, 0]), 1).flatten().tolist()
    [3.0, 2.0, 1.0, 0.0]
    """
    grid = patch_grid(tuple(images.shape[-2:]), patch_size)
    return unpatchify(patchify(images, patch_size)[:, perm], patch_size, grid)


def reassemble(
    images: torch.Tensor,
    positions: torch.Tensor,
    patch_size: int,
    fill: float | tuple[float, ...] = 0.5,
) -> torch.Tensor:
    """Move every patch to a predicted position, as MP3/DropPos figures show.

    Patches predicted at the same position are averaged; positions no patch was predicted at
    are filled with ``fill``.

    Arguments
    ---------
    images : torch.Tensor
        (B, C, H, W) original images.
    positions : torch.Tensor
        (B, N) predicted position (row-major index) of each patch.
    patch_size : int
        Side of a patch.
    fill : float or tuple of float
        Value of the empty cells (one per channel, or one for all).

    Example
    -------
    >>> x = torch.arange(4.).view(1, 1, 2, 2)
    >>> reassemble(x, torch.tensor([[1, 0, 2, 2]]), 1).flatten().tolist()
    [1.0, 0.0, 2.5, 0.5]
    """
    grid = patch_grid(tuple(images.shape[-2:]), patch_size)
    patches = patchify(images, patch_size)
    batch, num = patches.shape[:2]
    flat = patches.reshape(batch, num, -1)
    index = positions.long().unsqueeze(-1).expand_as(flat)
    total = torch.zeros_like(flat).scatter_add_(1, index, flat)
    count = torch.zeros(batch, num, 1, dtype=flat.dtype, device=flat.device)
    count.scatter_add_(1, positions.long().unsqueeze(-1), torch.ones_like(count))
    empty = torch.as_tensor(fill, dtype=flat.dtype, device=flat.device).reshape(-1, 1, 1)
    empty = empty.expand(patches.shape[2], patch_size, patch_size).reshape(-1)
    out = torch.where(count > 0, total / count.clamp(min=1), empty)
    return unpatchify(out.reshape(patches.shape), patch_size, grid)
