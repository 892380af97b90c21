"""A tiny unpositioned model learns positions from content alone, through the core."""

import torch
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder

from speechpos.position import (
    ContextEncoder,
    PositionHead,
    PositionLoss,
    PositionStats,
    sample_context,
)


def sorted_sequences(batch, lengths, generator):
    """Each token holds one of the example's random values, the tokens in ascending order:
    a token's position is its rank among the example's tokens, which the encoder can only
    know by comparing it with the other tokens' content."""
    max_len = int(lengths.max())
    values = torch.rand(batch, max_len, generator=generator)
    values = values.masked_fill(torch.arange(max_len)[None] >= lengths[:, None], 2.0)
    values, _ = values.sort(dim=1)
    return values.masked_fill(values > 1.5, 0.0).unsqueeze(-1)


def test_tiny_model_learns_positions_well_above_chance():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    d = 32
    embed = torch.nn.Sequential(torch.nn.Linear(1, d), torch.nn.GELU(), torch.nn.Linear(d, d))
    encoder = ContextEncoder(TransformerEncoder(2, 4, 64, d_model=d, normalize_before=True))
    head = PositionHead(d, 16)
    params = [*embed.parameters(), *encoder.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    loss_fn = PositionLoss(loss_on="all")

    def evaluate():
        stats = PositionStats()
        with torch.no_grad():
            for _ in range(4):
                lengths = torch.randint(8, 17, (32,), generator=g)
                x = embed(sorted_sequences(32, lengths, g))
                ctx = sample_context(lengths, 0.5, generator=g)
                stats.append(head(encoder(x, lengths, ctx), lengths), lengths)
        return stats.summarize()

    before = evaluate()
    losses = []
    for _ in range(250):
        lengths = torch.randint(8, 17, (32,), generator=g)
        x = embed(sorted_sequences(32, lengths, g))
        ctx = sample_context(lengths, 0.5, generator=g)
        loss = loss_fn(head(encoder(x, lengths, ctx), lengths), lengths, ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    after = evaluate()

    assert sum(losses[-20:]) / 20 < 0.75 * sum(losses[:20]) / 20
    assert after["accuracy"] > 3 * after["chance_accuracy"]
    assert after["accuracy"] > before["accuracy"] + 0.15
    assert after["position_error"] < 0.35 * after["chance_position_error"]
