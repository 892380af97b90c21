"""Choosing which tokens are attention *context* (MP3's keys/values) for each example.

A :class:`Context` holds, per example, the sorted indices of its context tokens. The same
context is used in every layer of the encoder. Every valid token is a query and produces an
output; only context tokens supply keys and values. ``context_ratio`` is the fraction of an
example's valid tokens kept as context (MP3's masking ratio is ``eta = 1 - context_ratio``).
Padding tokens of a variable-length batch are never context.

Example
-------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> ctx = sample_context(torch.tensor([8, 5]), context_ratio=0.5, generator=g)
>>> ctx.counts.tolist()
[4, 2]
>>> ctx.mask.shape
torch.Size([2, 8])
>>> bool(ctx.mask[1, 5:].any())
False
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Context:
    """The context tokens of a batch.

    Attributes
    ----------
    index : torch.LongTensor
        (B, C) positions of the context tokens of each example, ascending; C is the largest
        context of the batch, and the slots past an example's own count hold 0.
    padding : torch.BoolTensor
        (B, C) True on the slots of ``index`` that are padding.
    mask : torch.BoolTensor
        (B, T) True where a token is context.
    """

    index: torch.Tensor
    padding: torch.Tensor
    mask: torch.Tensor

    @property
    def counts(self) -> torch.Tensor:
        """Number of context tokens of each example, shape (B,)."""
        return (~self.padding).sum(dim=1)

    def to(self, device) -> Context:
        """The same context on another device."""
        return Context(self.index.to(device), self.padding.to(device), self.mask.to(device))

    def permute(self, perm: torch.Tensor) -> Context:
        """The context after the tokens of each example are reordered: new token ``j`` is
        old token ``perm[b, j]`` (``perm`` is (B, T) or (T,))."""
        if perm.dim() == 1:
            perm = perm.expand(self.mask.shape[0], -1)
        return context_from_mask(torch.gather(self.mask, 1, perm))


def valid_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B, T) True on the valid (non-padding) tokens of examples of the given lengths.

    >>> valid_mask(torch.tensor([2, 3])).int().tolist()
    [[1, 1, 0], [1, 1, 1]]
    """
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max())
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def context_from_mask(mask: torch.Tensor) -> Context:
    """Build a :class:`Context` from a (B, T) boolean mask of context tokens.

    >>> ctx = context_from_mask(torch.tensor([[True, False, True], [False, True, False]]))
    >>> ctx.index.tolist(), ctx.padding.tolist()
    ([[0, 2], [1, 0]], [[False, False], [False, True]])
    """
    mask = mask.bool()
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("every example needs at least one context token")
    # A stable sort of ~mask puts the context positions first, in ascending order.
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
    width = int(counts.max())
    index = order[:, :width]
    padding = torch.arange(width, device=mask.device)[None, :] >= counts[:, None]
    return Context(index.masked_fill(padding, 0), padding, mask)


def full_context(lengths: torch.Tensor, max_len: int | None = None) -> Context:
    """Every valid token is context (plain self-attention over the unpadded tokens)."""
    return context_from_mask(valid_mask(lengths, max_len))


def context_counts(lengths: torch.Tensor, context_ratio: float) -> torch.Tensor:
    """round(context_ratio * length), at least one token and at most the length.

    >>> context_counts(torch.tensor([10, 3, 1]), 0.25).tolist()
    [2, 1, 1]
    """
    _check_ratio(context_ratio)
    lengths = torch.as_tensor(lengths)
    counts = torch.round(lengths.double() * context_ratio).long()
    return torch.minimum(counts.clamp(min=1), lengths)


def sample_context(
    lengths: torch.Tensor,
    context_ratio: float,
    max_len: int | None = None,
    span: int = 1,
    generator: torch.Generator | None = None,
) -> Context:
    """Sample context tokens in 1-D sequences of variable length.

    With ``span == 1`` the context is a uniform random subset of each example's valid tokens.
    With ``span > 1`` tokens are grouped into contiguous spans of ``span`` tokens (with a
    random phase per example) and whole spans are chosen, so that context and excluded tokens
    both come in runs: an excluded token's immediate neighbours are then usually excluded too,
    which removes the shortcut of matching a token to its adjacent context tokens.

    Arguments
    ---------
    lengths : torch.Tensor
        (B,) number of valid tokens of each example.
    context_ratio : float
        Fraction of each example's valid tokens kept as context, in (0, 1].
    max_len : int, optional
        Padded length T of the batch (default: the largest length).
    span : int
        Length of the runs in which tokens are chosen.
    generator : torch.Generator, optional
        Source of randomness, for reproducible sampling.

    Example
    -------
    >>> g = torch.Generator().manual_seed(1)
    >>> ctx = sample_context(torch.tensor([12]), 0.5, span=4, generator=g)
    >>> int(ctx.counts[0])
    6
    """
    lengths = torch.as_tensor(lengths)
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    if max_len is None:
        max_len = int(lengths.max())
    batch = lengths.shape[0]
    device = lengths.device
    token = torch.rand(batch, max_len, generator=generator).to(device)
    if span > 1:
        phase = torch.randint(0, span, (batch, 1), generator=generator).to(device)
        block = (torch.arange(max_len, device=device)[None, :] + phase) // span
        block_score = torch.rand(batch, max_len // span + 2, generator=generator).to(device)
        # Whole spans are ranked by their score; the token score only breaks ties inside
        # the one span that is cut by the count.
        score = torch.gather(block_score, 1, block) + 1e-4 * token
    else:
        score = token
    counts = context_counts(lengths, context_ratio).to(device)
    return _lowest_scores(score, valid_mask(lengths, max_len), counts)


def sample_context_2d(
    batch_size: int,
    grid: tuple[int, int],
    context_ratio: float,
    block: tuple[int, int] = (1, 1),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Context:
    """Sample context tokens on an (H, W) grid of patches, flattened row-major.

    With ``block == (1, 1)`` the context is a uniform subset; otherwise whole rectangles of
    ``block`` patches (at a random phase per example) are kept or excluded together.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> ctx = sample_context_2d(2, (4, 4), 0.25, block=(2, 2), generator=g)
    >>> ctx.counts.tolist(), tuple(ctx.mask.shape)
    ([4, 4], (2, 16))
    """
    height, width = grid
    bh, bw = block
    if bh < 1 or bw < 1:
        raise ValueError(f"block must be at least (1, 1), got {block}")
    n = height * width
    token = torch.rand(batch_size, n, generator=generator)
    if (bh, bw) != (1, 1):
        rows = torch.arange(n) // width
        cols = torch.arange(n) % width
        phase_r = torch.randint(0, bh, (batch_size, 1), generator=generator)
        phase_c = torch.randint(0, bw, (batch_size, 1), generator=generator)
        blocks_per_row = width // bw + 2
        block_id = ((rows[None] + phase_r) // bh) * blocks_per_row + (cols[None] + phase_c) // bw
        block_score = torch.rand(batch_size, (height // bh + 2) * blocks_per_row, generator=generator)
        score = torch.gather(block_score, 1, block_id) + 1e-4 * token
    else:
        score = token
    lengths = torch.full((batch_size,), n, dtype=torch.long)
    counts = context_counts(lengths, context_ratio)
    return _lowest_scores(score, valid_mask(lengths, n), counts).to(device)


def _lowest_scores(score: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor) -> Context:
    """Keep, per row, the ``counts`` valid tokens of lowest score."""
    score = score.masked_fill(~valid, float("inf"))
    rank = torch.argsort(torch.argsort(score, dim=1), dim=1)
    return context_from_mask((rank < counts[:, None]) & valid)


def _check_ratio(context_ratio: float) -> None:
    if not 0.0 < context_ratio <= 1.0:
        raise ValueError(f"context_ratio must be in (0, 1], got {context_ratio}")


class ContextSampler:
    """``sample_context`` with its settings bound, to be built from an hparams file.

    >>> sampler = ContextSampler(context_ratio=0.25, span=2)
    >>> sampler(torch.tensor([8, 4])).counts.tolist()
    [2, 1]
    """

    def __init__(self, context_ratio: float, span: int = 1):
        _check_ratio(context_ratio)
        self.context_ratio = context_ratio
        self.span = span

    def __call__(
        self,
        lengths: torch.Tensor,
        max_len: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Context | None:
        """A context for a batch; None (full attention, no sampling cost) at ratio 1."""
        if self.context_ratio == 1.0:
            return None
        return sample_context(lengths, self.context_ratio, max_len, self.span, generator)

    @staticmethod
    def near(mask: torch.Tensor, gap: int) -> torch.Tensor:
        """(B, T) True within ``gap`` positions of a True token of ``mask`` (itself included).

        >>> ContextSampler.near(torch.tensor([[0, 0, 0, 1, 0, 0, 0]]).bool(), 2).int().tolist()
        [[0, 1, 1, 1, 1, 1, 0]]
        """
        if gap <= 0:
            return mask.bool()
        dilated = torch.nn.functional.max_pool1d(mask.float()[:, None], 2 * gap + 1, stride=1, padding=gap)
        return dilated[:, 0] > 0

    @staticmethod
    def coarse(positions: torch.Tensor, lengths: torch.Tensor, size: int):
        """Classes of spans of ``size`` positions: (class of each position, classes per example).

        >>> ContextSampler.coarse(torch.tensor([[0, 3, 4, 9]]), torch.tensor([10]), 4)
        (tensor([[0, 0, 1, 2]]), tensor([3]))
        """
        return torch.div(positions, size, rounding_mode="floor"), -torch.div(-lengths, size, rounding_mode="floor")

    def __repr__(self) -> str:
        return f"ContextSampler(context_ratio={self.context_ratio}, span={self.span})"


class GridContextSampler:
    """``sample_context_2d`` with its settings bound: contexts of images whose tokens are an
    (H, W) patch grid flattened row-major, to be built from an hparams file.

    >>> sampler = GridContextSampler((4, 4), context_ratio=0.25, block=(2, 2))
    >>> sampler(torch.tensor([16, 16]), generator=torch.Generator().manual_seed(0)).counts.tolist()
    [4, 4]
    >>> sampler(torch.tensor([16, 12]))
    Traceback (most recent call last):
    ValueError: every example must have the 4 x 4 grid's 16 tokens, got lengths [16, 12]
    """

    def __init__(self, grid: tuple[int, int], context_ratio: float, block: tuple[int, int] = (1, 1)):
        _check_ratio(context_ratio)
        self.grid = tuple(int(g) for g in grid)
        self.context_ratio = context_ratio
        self.block = tuple(int(b) for b in block)

    def __call__(
        self,
        lengths: torch.Tensor,
        max_len: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Context | None:
        """A context per image; None (full attention) at ratio 1."""
        n = self.grid[0] * self.grid[1]
        if bool((lengths != n).any()) or max_len not in (None, n):
            raise ValueError(
                f"every example must have the {self.grid[0]} x {self.grid[1]} grid's {n} tokens, "
                f"got lengths {lengths.tolist()}"
            )
        if self.context_ratio == 1.0:
            return None
        return sample_context_2d(len(lengths), self.grid, self.context_ratio, self.block, generator, lengths.device)

    def near(self, mask: torch.Tensor, gap: int) -> torch.Tensor:
        """(B, H*W) True within ``gap`` cells (rows and columns: a square) of a True cell.

        >>> s = GridContextSampler((3, 3), 0.25)
        >>> s.near(torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0, 0]]).bool(), 1).int().tolist()
        [[1, 1, 0, 1, 1, 0, 0, 0, 0]]
        """
        if gap <= 0:
            return mask.bool()
        height, width = self.grid
        grid = mask.float().reshape(-1, 1, height, width)
        dilated = torch.nn.functional.max_pool2d(grid, 2 * gap + 1, stride=1, padding=gap)
        return dilated.reshape(mask.shape) > 0

    def coarse(self, positions: torch.Tensor, lengths: torch.Tensor, size: int):
        """Classes of ``size`` x ``size`` squares of cells (row-major over the coarse grid):
        (class of each position, classes per example).

        >>> GridContextSampler((4, 4), 0.25).coarse(torch.tensor([[0, 3, 5, 15]]), torch.tensor([16]), 2)
        (tensor([[0, 1, 0, 3]]), tensor([4]))
        """
        height, width = self.grid
        cols = -(-width // size)
        row = torch.div(positions, width, rounding_mode="floor") // size
        col = (positions % width) // size
        return row * cols + col, torch.full_like(lengths, -(-height // size) * cols)

    def __repr__(self) -> str:
        return f"GridContextSampler(grid={self.grid}, context_ratio={self.context_ratio}, block={self.block})"
