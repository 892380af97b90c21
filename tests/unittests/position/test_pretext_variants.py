"""The pretext's variants on the shared core: query subsets, anchors, relative targets."""

import pytest
import torch
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder

from speechpos.position import (
    AnchorSignal,
    ContextEncoder,
    ContextSampler,
    PositionHead,
    PositionLoss,
    PositionPretext,
    PositionStats,
    RelativePositionHead,
    build_position_head,
    reference_pairs,
    sample_anchors,
    sample_context,
    select_queries,
)
from speechpos.position.encoder import gather_tokens
from speechpos.speech.encoder import build_encoder

D = 32


def encoders():
    torch.manual_seed(0)
    yield "transformer", ContextEncoder(TransformerEncoder(2, 4, 64, d_model=D), null_key=True).eval()
    torch.manual_seed(0)
    yield "conformer-conv-off", build_encoder("conformer", 2, D, 4, 64, 0.0, 7, "off", null_key=True).eval()


def test_select_queries_keeps_the_context_first_then_sampled_candidates():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([40, 17])
    ctx = sample_context(lengths, 0.25, generator=g)
    q = select_queries(lengths, ctx, 0.5, generator=g)
    excluded = lengths - ctx.counts
    assert q.lengths.tolist() == (ctx.counts + torch.round(excluded.double() * 0.5).long()).tolist()
    for b in range(2):
        c, n = int(ctx.counts[b]), int(q.lengths[b])
        assert q.index[b, :c].tolist() == ctx.index[b, :c].tolist()
        targets = q.index[b, c:n]
        assert not ctx.mask[b, targets].any() and bool((targets < lengths[b]).all())
        assert len(set(targets.tolist())) == n - c
        assert q.context.mask[b].tolist() == [i < c for i in range(q.index.shape[1])]


def test_select_queries_only_draws_from_the_candidates():
    lengths = torch.tensor([12])
    ctx = sample_context(lengths, 0.25, generator=torch.Generator().manual_seed(1))
    candidates = torch.zeros(1, 12, dtype=torch.bool)
    candidates[0, 10:] = True
    candidates &= ~ctx.mask
    q = select_queries(lengths, ctx, 1.0, candidates=candidates)
    assert set(q.index[0, int(ctx.counts[0]):].tolist()) == set(torch.nonzero(candidates[0]).flatten().tolist())


@pytest.mark.parametrize("name,encoder", list(encoders()))
def test_encoding_only_the_selected_tokens_gives_the_full_run_outputs(name, encoder):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 30, D, generator=g)
    lengths = torch.tensor([30, 21])
    ctx = sample_context(lengths, 0.3, generator=g)
    q = select_queries(lengths, ctx, 0.4, generator=g)
    with torch.no_grad():
        full = encoder(x, lengths, ctx)
        part = encoder(gather_tokens(x, q.index), q.lengths, q.context)
    for b in range(2):
        n = int(q.lengths[b])
        torch.testing.assert_close(part[b, :n], full[b, q.index[b, :n]], atol=1e-5, rtol=1e-4)


def test_select_queries_rejects_a_bad_ratio():
    ctx = sample_context(torch.tensor([8]), 0.5)
    with pytest.raises(ValueError, match=r"target_ratio must be in \(0, 1\], got 0"):
        select_queries(torch.tensor([8]), ctx, 0.0)


def test_anchors_are_a_fraction_of_the_context_and_only_they_get_the_signal():
    g = torch.Generator().manual_seed(3)
    ctx = sample_context(torch.tensor([100, 9]), 0.4, generator=g)
    anchors = sample_anchors(ctx, 0.25, generator=g)
    assert anchors.sum(1).tolist() == [10, 1]
    assert not (anchors & ~ctx.mask).any()
    assert not sample_anchors(ctx, 0.0).any()
    signal = AnchorSignal(D, 100)
    x = torch.zeros(2, 100, D)
    y = signal(x, anchors)
    assert torch.equal(y[~anchors], x[~anchors])
    torch.testing.assert_close(y[0, anchors[0]], signal.table[anchors[0]])
    with pytest.raises(ValueError, match=r"anchor_ratio must be in \[0, 1\], got 1.5"):
        sample_anchors(ctx, 1.5)


def test_anchors_carry_no_loss_and_query_subsets_keep_true_positions():
    torch.manual_seed(0)
    encoder = ContextEncoder(TransformerEncoder(1, 4, 64, d_model=D))
    pretext = PositionPretext(encoder, PositionHead(D, 64), ContextSampler(0.5), anchor_ratio=1.0,
                              target_ratio=0.5)
    out = pretext(torch.randn(2, 40, D), torch.tensor([40, 25]))
    # Every context token is an anchor, so only the sampled excluded tokens carry loss.
    scored = out.true[out.mask]
    assert not out.context.mask[torch.nonzero(out.mask)[:, 0], scored].any()
    assert out.mask.sum(1).tolist() == [10, 6]          # round(0.5 * 20), round(0.5 * 12)
    assert out.num_classes.tolist() == [40, 25] and out.logits.shape[-1] == 40


def test_reference_pairs_pick_a_context_token_within_reach():
    g = torch.Generator().manual_seed(4)
    lengths = torch.tensor([60])
    ctx = sample_context(lengths, 0.25, generator=g)
    positions = torch.arange(60)[None]
    ref, cls, ok = reference_pairs(positions, ctx.mask, ~ctx.mask, max_offset=5, generator=g)
    offset = cls - 5
    assert bool(ctx.mask[0, ref[0, ok[0]]].all())
    assert torch.equal(offset[ok], (positions - torch.gather(positions, 1, ref))[ok])
    assert bool((offset[ok].abs() <= 5).all()) and bool((offset[ok] != 0).all())
    far = ~ok[0] & ~ctx.mask[0]
    for i in torch.nonzero(far).flatten().tolist():    # no reference: no context within 5
        assert not ctx.mask[0, max(i - 5, 0): i + 6].any()


def test_prior_chance_is_that_of_a_guess_from_the_true_classes():
    stats = PositionStats(chance="prior")
    logits = torch.zeros(1, 4, 3)
    logits[0, :, 0] = 1.0                                # always predicts class 0
    true = torch.tensor([[0, 0, 0, 2]])
    stats.append(logits, torch.tensor([3]), torch.ones(1, 4, dtype=torch.bool), true)
    s = stats.summarize()
    assert s["accuracy"] == 0.75 and s["position_error"] == 0.5
    assert s["chance_accuracy"] == pytest.approx(0.75**2 + 0.25**2)
    assert s["chance_position_error"] == pytest.approx(2 * 0.75 * 0.25 * 2)


def test_build_position_head_and_the_relative_head():
    assert isinstance(build_position_head("absolute", D, 10), PositionHead)
    head = build_position_head("relative", D, 10, max_offset=3)
    assert isinstance(head, RelativePositionHead) and head.num_classes == 7
    with pytest.raises(ValueError, match="max_offset must be >= 1, got 0"):
        RelativePositionHead(D, 0)


def smooth_walks(batch, length, generator):
    """Tokens that change slowly along the sequence (a drifting random walk per channel from a
    random start), a 1-D stand-in for speech frames: a token's neighbours look like it, time
    has a direction, and no token's value alone tells its position."""
    start = torch.randn(batch, 1, 8, generator=generator) * 3.0
    steps = torch.randn(batch, length, 8, generator=generator) * 0.3 + 0.15
    return start + steps.cumsum(1)


@pytest.mark.parametrize("variant", ["anchors", "relative", "min_gap", "coarse"])
def test_variants_learn_well_above_their_chance(variant):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    length = 24
    embed = torch.nn.Linear(8, D)
    encoder = ContextEncoder(TransformerEncoder(2, 4, 64, d_model=D, normalize_before=True))
    head = build_position_head("relative" if variant == "relative" else "absolute", D, length, max_offset=3)
    coarse = 3 if variant == "coarse" else 1
    if coarse > 1:
        head = build_position_head("absolute", D, length, coarse=coarse)
    pretext = PositionPretext(encoder, head, ContextSampler(0.5), loss_on="excluded",
                              anchor_ratio=0.0 if variant == "relative" else 0.5, max_positions=length,
                              min_gap=1 if variant == "min_gap" else 0, coarse=coarse)
    params = [*embed.parameters(), *pretext.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    loss_fn = PositionLoss()
    lengths = torch.full((16,), length)
    chance = "prior" if variant == "relative" else "uniform"

    def evaluate():
        stats = PositionStats(chance=chance)
        with torch.no_grad():
            for _ in range(4):
                stats.append_output(pretext(embed(smooth_walks(16, length, g)), lengths, g))
        return stats.summarize()

    before = evaluate()
    for _ in range(250):
        loss = loss_fn.of_output(pretext(embed(smooth_walks(16, length, g)), lengths, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert before["accuracy"] < 2 * before["chance_accuracy"]
    # Relative targets have 6 classes (chance ~1/6, so 6x is perfect), coarse ones 8 spans;
    # anchors 24 positions.
    assert after["accuracy"] > (2 if variant in ("relative", "coarse") else 3) * after["chance_accuracy"]
    assert after["position_error"] < 0.6 * after["chance_position_error"]


def test_min_gap_scores_no_target_near_the_context_also_on_the_fast_step():
    torch.manual_seed(0)
    encoder = ContextEncoder(TransformerEncoder(1, 4, 64, d_model=D))
    for target_ratio in (None, 0.5):
        pretext = PositionPretext(encoder, PositionHead(D, 80), ContextSampler(0.25), anchor_ratio=1.0,
                                  target_ratio=target_ratio, min_gap=2)
        lengths = torch.tensor([80, 50])
        plan = pretext.plan(lengths, 80, torch.Generator().manual_seed(1))
        out = pretext(torch.randn(2, 80, D), lengths, plan=plan)
        for b in range(2):
            context = torch.nonzero(plan.context.mask[b]).flatten()
            scored = out.true[b][out.mask[b]]
            assert len(scored) > 0
            assert int((scored[:, None] - context[None, :]).abs().min()) >= 3
            assert bool((scored < lengths[b]).all())


def test_coarse_classes_are_spans_and_refuse_relative_targets():
    torch.manual_seed(0)
    encoder = ContextEncoder(TransformerEncoder(1, 4, 64, d_model=D))
    pretext = PositionPretext(encoder, build_position_head("absolute", D, 40, coarse=4), ContextSampler(0.5),
                              coarse=4)
    out = pretext(torch.randn(2, 40, D), torch.tensor([40, 18]))
    assert out.num_classes.tolist() == [10, 5]                  # ceil(18 / 4)
    assert torch.equal(out.true[0], torch.arange(40) // 4)
    assert out.logits.shape[-1] == 10
    with pytest.raises(ValueError, match="coarse targets are classes of absolute positions"):
        PositionPretext(encoder, RelativePositionHead(D, 4), ContextSampler(0.5), coarse=2)
    with pytest.raises(ValueError, match="min_gap must be >= 0, got -1"):
        PositionPretext(encoder, PositionHead(D, 8), ContextSampler(0.5), min_gap=-1)


def test_grid_sampler_gap_is_a_square_and_coarse_cells_are_squares():
    from speechpos.position import GridContextSampler

    sampler = GridContextSampler((6, 6), 0.25)
    mask = torch.zeros(1, 36, dtype=torch.bool)
    mask[0, 2 * 6 + 3] = True                                     # cell (2, 3)
    near = sampler.near(mask, 1).reshape(6, 6)
    assert near.sum() == 9 and bool(near[1:4, 2:5].all())
    classes, counts = sampler.coarse(torch.arange(36)[None], torch.tensor([36]), 4)
    assert counts.tolist() == [4]                                 # a 2 x 2 grid of 4 x 4 squares
    assert classes.reshape(6, 6)[0].tolist() == [0, 0, 0, 0, 1, 1]
    assert classes.reshape(6, 6)[5].tolist() == [2, 2, 2, 2, 3, 3]
