import math

import pytest
import torch
import torch.nn.functional as F

from speechpos.position import (
    PositionEmbedding,
    PositionHead,
    PositionLayout,
    PositionLoss,
    PositionStats,
    SigmaSchedule,
    attentive_token_weights,
    context_from_mask,
    loss_token_mask,
    position_accuracy,
    position_error,
    position_loss,
    smoothed_targets,
)


def test_head_masks_impossible_positions_and_they_get_no_gradient():
    head = PositionHead(8, 20)
    x = torch.randn(2, 7, 8)
    lengths = torch.tensor([7, 3])
    logits = head(x, lengths)
    assert logits.shape == (2, 7, 7)
    probs = logits.softmax(-1)
    assert float(probs[1, :, 3:].sum().detach()) == 0.0
    assert torch.allclose(probs.sum(-1), torch.ones(2, 7))
    position_loss(logits, lengths, torch.ones(2, 7, dtype=torch.bool)).backward()
    assert head.proj.weight.grad[7:].abs().sum() == 0  # rows past the batch are never used


def test_head_refuses_too_long_input():
    with pytest.raises(ValueError, match="an example has 12 tokens but the position head knows only 10"):
        PositionHead(4, 10)(torch.randn(1, 12, 4))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_1d_smoothing_sums_to_one_and_peaks_at_truth(sigma):
    lengths = torch.tensor([9, 4])
    true = torch.tensor([[0, 4, 8], [0, 2, 3]])
    q = smoothed_targets(true, lengths, 9, sigma)
    assert torch.allclose(q.sum(-1), torch.ones(2, 3))
    assert torch.equal(q.argmax(-1), true)
    assert float(q[1, :, 4:].sum()) == 0.0, "no mass past an example's length"
    # exp(-d^2/sigma^2): neighbour ratio at distance 1 from an interior position
    ratio = q[0, 1, 5] / q[0, 1, 4]
    assert math.isclose(float(ratio), math.exp(-1 / sigma**2), rel_tol=1e-5)


def test_2d_smoothing_uses_grid_distance():
    layout = PositionLayout(grid=(3, 4))
    centre = torch.tensor([[5]])  # row 1, col 1
    q = smoothed_targets(centre, torch.tensor([12]), 12, 1.0, layout)[0, 0].view(3, 4)
    assert math.isclose(float(q.sum()), 1.0, rel_tol=1e-6)
    assert int(q.argmax()) == 5
    # 4-neighbours equal, diagonals equal and smaller, (0,3) at distance sqrt(5)
    assert torch.allclose(q[0, 1], q[1, 0]) and torch.allclose(q[1, 2], q[2, 1])
    assert math.isclose(float(q[0, 0] / q[1, 1]), math.exp(-2), rel_tol=1e-5)
    assert math.isclose(float(q[0, 3] / q[1, 1]), math.exp(-5), rel_tol=1e-5)


def test_zero_sigma_is_one_hot_and_loss_is_cross_entropy():
    logits = torch.randn(2, 5, 5)
    lengths = torch.tensor([5, 5])
    q = smoothed_targets(torch.arange(5).expand(2, 5), lengths, 5, 0.0)
    assert torch.equal(q, torch.eye(5).expand(2, 5, 5))
    mask = torch.ones(2, 5, dtype=torch.bool)
    expected = F.cross_entropy(logits.reshape(-1, 5), torch.arange(5).repeat(2))
    torch.testing.assert_close(position_loss(logits, lengths, mask), expected)


def test_smoothed_loss_is_soft_cross_entropy():
    logits = torch.randn(1, 6, 6)
    lengths = torch.tensor([6])
    q = smoothed_targets(torch.arange(6)[None], lengths, 6, 1.5)
    expected = -(q * logits.log_softmax(-1)).sum(-1).mean()
    got = position_loss(logits, lengths, torch.ones(1, 6, dtype=torch.bool), sigma=1.5)
    torch.testing.assert_close(got, expected)


def test_loss_is_finite_with_masked_logits_and_smoothing():
    head = PositionHead(4, 10)
    lengths = torch.tensor([10, 2])
    logits = head(torch.randn(2, 10, 4), lengths)
    loss = PositionLoss(sigma=2.0)(logits, lengths)
    assert torch.isfinite(loss)


def test_loss_token_selection():
    ctx = context_from_mask(torch.tensor([[True, False, True, False], [False, True, False, False]]))
    lengths = torch.tensor([4, 3])
    assert loss_token_mask("all", lengths, 4, ctx).int().tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert loss_token_mask("excluded", lengths, 4, ctx).int().tolist() == [[0, 1, 0, 1], [1, 0, 1, 0]]
    assert loss_token_mask("context", lengths, 4, ctx).int().tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]
    with pytest.raises(ValueError, match="loss_on must be one of"):
        loss_token_mask("some", lengths, 4, ctx)


def test_loss_only_counts_selected_tokens():
    logits = torch.zeros(1, 4, 4)
    logits[0, 1, 1] = 50.0  # token 1 right and confident; the others uniform
    ctx = context_from_mask(torch.tensor([[True, False, True, True]]))
    lengths = torch.tensor([4])
    assert float(PositionLoss("excluded")(logits, lengths, ctx)) < 1e-6
    assert math.isclose(float(PositionLoss("context")(logits, lengths, ctx)), math.log(4), rel_tol=1e-5)


def test_sigma_schedule():
    s = SigmaSchedule(2.0, 0.0)
    assert [s(p) for p in (0.0, 0.25, 1.0, 2.0)] == [2.0, 1.5, 0.0, 0.0]
    with pytest.raises(ValueError):
        SigmaSchedule(-1.0)


def test_attentive_weights_favour_tokens_like_the_summary():
    summary = torch.tensor([[1.0, 0.0]])
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    w = attentive_token_weights(summary, tokens, torch.ones(1, 3, dtype=torch.bool))
    assert w[0, 0] > w[0, 1] > w[0, 2]
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-6)


def test_metrics_on_known_predictions():
    # predictions: token0->0 (right), token1->3 (off by 2), token2->2 (right), token3 padding
    logits = torch.full((1, 4, 4), -1.0)
    for t, p in [(0, 0), (1, 3), (2, 2), (3, 1)]:
        logits[0, t, p] = 1.0
    mask = torch.tensor([[True, True, True, False]])
    assert math.isclose(float(position_accuracy(logits, mask)), 2 / 3, rel_tol=1e-6)
    assert math.isclose(float(position_error(logits, mask)), 2 / 3, rel_tol=1e-6)
    stats = PositionStats()
    stats.append(logits, torch.tensor([3]))
    s = stats.summarize()
    assert math.isclose(s["accuracy"], 2 / 3, rel_tol=1e-6)
    assert math.isclose(s["chance_accuracy"], 1 / 3, rel_tol=1e-6)
    # uniform guess over 3 positions: mean |p - t| over t = 0,1,2 is (1 + 2/3 + 1) / 3
    assert math.isclose(s["chance_position_error"], 8 / 9, rel_tol=1e-6)
    conf = stats.confusion(4)
    assert conf[1, 3] == 1 and conf[0, 0] == 1 and conf.sum() == 3


def test_2d_metric_is_euclidean():
    layout = PositionLayout(grid=(2, 2))
    logits = torch.zeros(1, 4, 4)
    logits[0, 0, 3] = 1.0  # (0,0) predicted at (1,1)
    mask = torch.tensor([[True, False, False, False]])
    assert math.isclose(float(position_error(logits, mask, layout)), math.sqrt(2), rel_tol=1e-6)


def test_position_embedding_starts_at_zero_and_learns():
    pe = PositionEmbedding(10, 4)
    x = torch.randn(2, 6, 4)
    assert torch.equal(pe(x), x)
    pe(x).pow(2).sum().backward()
    assert pe.weight.grad[:6].abs().sum() > 0 and pe.weight.grad[6:].abs().sum() == 0
    with pytest.raises(ValueError, match="sequence of 11 tokens is longer than the 10 positions"):
        pe(torch.randn(1, 11, 4))
