import pytest
import torch

from speechpos.position.context import (
    context_counts,
    context_from_mask,
    full_context,
    sample_context,
    sample_context_2d,
)


def _runs(row: torch.Tensor) -> int:
    """Number of maximal runs of True in a 1-D bool tensor."""
    r = row.int()
    return int(((r[1:] - r[:-1]) == 1).sum() + r[0])


@pytest.mark.parametrize("span", [1, 4])
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 1.0])
def test_counts_padding_and_index_agree(span, ratio):
    lengths = torch.tensor([40, 17, 3, 1])
    ctx = sample_context(lengths, ratio, span=span, generator=torch.Generator().manual_seed(3))
    assert ctx.counts.tolist() == context_counts(lengths, ratio).tolist()
    assert ctx.mask.sum(1).tolist() == ctx.counts.tolist()
    for b, length in enumerate(lengths.tolist()):
        assert not ctx.mask[b, length:].any(), "padding must never be context"
        idx = ctx.index[b][~ctx.padding[b]]
        assert torch.equal(idx, torch.nonzero(ctx.mask[b]).squeeze(1))
        assert bool((idx[1:] > idx[:-1]).all()), "indices must be ascending"


def test_every_example_keeps_one_token():
    ctx = sample_context(torch.tensor([1, 2, 9]), 0.01)
    assert ctx.counts.tolist() == [1, 1, 1]


def test_span_sampling_makes_runs():
    g = torch.Generator().manual_seed(0)
    lengths = torch.full((64,), 96)
    uniform = sample_context(lengths, 0.5, generator=g)
    spans = sample_context(lengths, 0.5, span=8, generator=g)
    runs_u = sum(_runs(m) for m in uniform.mask)
    runs_s = sum(_runs(m) for m in spans.mask)
    # 48 of 96 tokens in runs of 8: at most 7 runs (+1 for the cut span) per example.
    assert runs_s <= 64 * 8
    assert runs_u > 3 * runs_s


def test_sampling_is_reproducible_and_random():
    lengths = torch.tensor([50, 30])
    a = sample_context(lengths, 0.3, generator=torch.Generator().manual_seed(7))
    b = sample_context(lengths, 0.3, generator=torch.Generator().manual_seed(7))
    c = sample_context(lengths, 0.3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, c.mask)


def test_uniform_sampling_covers_positions_evenly():
    lengths = torch.full((4000,), 10)
    ctx = sample_context(lengths, 0.3, generator=torch.Generator().manual_seed(0))
    freq = ctx.mask.float().mean(0)
    assert torch.allclose(freq, torch.full((10,), 0.3), atol=0.03)


def test_2d_block_sampling_keeps_blocks():
    g = torch.Generator().manual_seed(0)
    ctx = sample_context_2d(16, (8, 8), 0.5, block=(2, 2), generator=g)
    assert ctx.counts.tolist() == [32] * 16
    grid = ctx.mask.view(16, 8, 8)
    # Inside a 2x2 block (at the sampled phase) all cells agree, except the one block cut by
    # the count: so most 2x2 windows of a uniform sample disagree, and most of blocks' do not.
    same = lambda m: (m[:, :-1, :-1] == m[:, 1:, 1:]).float().mean()  # noqa: E731
    uniform = sample_context_2d(16, (8, 8), 0.5, generator=g).mask.view(16, 8, 8)
    assert same(grid) > same(uniform) + 0.1


def test_full_context_and_from_mask():
    ctx = full_context(torch.tensor([3, 1]), 4)
    assert ctx.mask.int().tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert ctx.index.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert ctx.padding.tolist() == [[False, False, False], [False, True, True]]
    with pytest.raises(ValueError, match="at least one context token"):
        context_from_mask(torch.tensor([[True], [False]]))


def test_permute_moves_the_context_with_the_tokens():
    ctx = context_from_mask(torch.tensor([[True, False, False, True]]))
    perm = torch.tensor([3, 2, 1, 0])
    assert ctx.permute(perm).mask.tolist() == [[True, False, False, True]]
    assert ctx.permute(torch.tensor([1, 0, 3, 2])).mask.tolist() == [[False, True, True, False]]


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5])
def test_bad_ratio(ratio):
    with pytest.raises(ValueError, match=r"context_ratio must be in \(0, 1\]"):
        sample_context(torch.tensor([4]), ratio)
