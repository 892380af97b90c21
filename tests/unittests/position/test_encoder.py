import pytest
import torch
from speechbrain.lobes.models.transformer.Conformer import ConformerEncoder
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder

from speechpos.position.context import full_context, sample_context
from speechpos.position.encoder import ContextEncoder

D = 32


def transformer(normalize_before=True):
    torch.manual_seed(0)
    return TransformerEncoder(3, 4, 64, d_model=D, normalize_before=normalize_before).eval()



def conformer():
    torch.manual_seed(0)
    return ConformerEncoder(2, D, 64, 4, kernel_size=7, attention_type="regularMHA").eval()


BUILDERS = {
    "transformer-prenorm": lambda: transformer(True),
    "transformer-postnorm": lambda: transformer(False),
    "conformer": conformer,
}


@pytest.mark.parametrize("null_key", [False, True])
@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.6])
def test_gathered_equals_masked_reference(name, ratio, null_key):
    enc = ContextEncoder(BUILDERS[name](), null_key=null_key)
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([30, 22, 9, 30])
    x = torch.randn(4, 30, D, generator=g)
    ctx = sample_context(lengths, ratio, span=3, generator=g)
    enc.gather = True
    fast = enc(x, lengths, ctx)
    enc.gather = False
    ref = enc(x, lengths, ctx)
    valid = torch.arange(30)[None] < lengths[:, None]
    torch.testing.assert_close(fast[valid], ref[valid], atol=2e-5, rtol=1e-4)


def test_context_changes_the_output():
    enc = ContextEncoder(transformer())
    lengths = torch.tensor([20])
    x = torch.randn(1, 20, D)
    full = enc(x, lengths)
    part = enc(x, lengths, sample_context(lengths, 0.25))
    assert (full - part).abs().max() > 1e-3


@pytest.mark.parametrize("name", BUILDERS)
def test_full_context_equals_speechbrain_encoder(name):
    plain = BUILDERS[name]()
    wrapped = ContextEncoder(BUILDERS[name]())
    lengths = torch.tensor([16, 11])
    x = torch.randn(2, 16, D)
    padding = torch.arange(16)[None] >= lengths[:, None]
    expected, _ = plain(x, src_key_padding_mask=padding)
    for ctx in (None, full_context(lengths, 16)):
        got = wrapped(x, lengths, ctx)
        torch.testing.assert_close(got[~padding], expected[~padding], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("null_key", [False, True])
def test_unpositioned_transformer_is_permutation_equivariant(null_key):
    enc = ContextEncoder(transformer(), null_key=null_key)
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([24])
    x = torch.randn(1, 24, D, generator=g)
    ctx = sample_context(lengths, 0.25, generator=g)
    perm = torch.randperm(24, generator=g)
    out = enc(x, lengths, ctx)
    out_perm = enc(x[:, perm], lengths, ctx.permute(perm))
    torch.testing.assert_close(out_perm, out[:, perm], atol=2e-5, rtol=1e-4)


def test_conformer_convolution_breaks_equivariance():
    """The conformer's depthwise convolution sees token order: the position leak that the
    speech recipe has to remove."""
    enc = ContextEncoder(conformer())
    lengths = torch.tensor([24])
    x = torch.randn(1, 24, D)
    perm = torch.randperm(24)
    out = enc(x, lengths)
    out_perm = enc(x[:, perm], lengths)
    assert (out_perm - out[:, perm]).abs().max() > 1e-2


def test_padding_does_not_change_valid_outputs():
    enc = ContextEncoder(transformer())
    x = torch.randn(1, 10, D)
    ctx = sample_context(torch.tensor([10]), 0.5)
    alone = enc(x, torch.tensor([10]), ctx)
    padded_x = torch.cat([x, torch.randn(1, 6, D)], 1)
    padded_ctx = type(ctx)(ctx.index, ctx.padding, torch.cat([ctx.mask, torch.zeros(1, 6, dtype=torch.bool)], 1))
    padded = enc(padded_x, torch.tensor([10]), padded_ctx)
    torch.testing.assert_close(padded[:, :10], alone, atol=2e-5, rtol=1e-4)


def test_gradients_reach_all_tokens():
    enc = ContextEncoder(transformer()).train()
    x = torch.randn(2, 12, D, requires_grad=True)
    lengths = torch.tensor([12, 12])
    out = enc(x, lengths, sample_context(lengths, 0.25))
    (out * torch.randn_like(out)).sum().backward()
    assert (x.grad.abs().sum(-1) > 1e-4).all()


def test_hidden_states_are_returned():
    enc = ContextEncoder(transformer())
    out, hidden = enc(torch.randn(1, 5, D), return_hidden=True)
    assert len(hidden) == 4 and out.shape == hidden[-1].shape
    assert enc.encoder.output_hidden_states is False


@pytest.mark.parametrize("attention_type", ["RelPosMHAXL", "hypermixing"])
def test_positioned_attention_is_refused(attention_type):
    enc = TransformerEncoder(1, 4, 64, d_model=D, attention_type=attention_type)
    with pytest.raises(ValueError, match="layer 0 uses .* attention, which carries position"):
        ContextEncoder(enc)


def test_null_key_tells_the_length_which_plain_attention_cannot():
    """Identical tokens: plain attention gives the same output whatever the length; with the
    null key the output depends on how many tokens there are."""
    x = torch.ones(1, 1, D).expand(1, 12, D)
    for null_key, differs in ((False, False), (True, True)):
        enc = ContextEncoder(transformer(), null_key=null_key)
        short = enc(x[:, :3], torch.tensor([3]))[0, 0]
        long = enc(x, torch.tensor([12]))[0, 0]
        assert bool((short - long).abs().max() > 1e-4) is differs


@pytest.mark.parametrize("null_key", [False, True])
@pytest.mark.parametrize("with_context", [False, True])
@pytest.mark.parametrize("name", BUILDERS)
def test_fused_attention_equals_speechbrain_call(name, with_context, null_key):
    """Outputs and gradients of the batch-first SDPA path match SpeechBrain's own attention call."""
    enc = ContextEncoder(BUILDERS[name](), null_key=null_key)
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([24, 17, 24])
    x = torch.randn(3, 24, D, generator=g)
    ctx = sample_context(lengths, 0.3, generator=g) if with_context else None
    valid = torch.arange(24)[None] < lengths[:, None]
    results = []
    for fused in (False, True):
        for att in enc.attentions:
            att.fused = fused
        enc.zero_grad()
        out = enc(x, lengths, ctx)
        out[valid].pow(2).sum().backward()
        results.append((out[valid].detach(), [p.grad.clone() for p in enc.parameters() if p.grad is not None]))
    (ref, ref_grads), (got, got_grads) = results
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
    assert len(got_grads) == len(ref_grads) > 0
    for a, b in zip(got_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_fused_attention_refuses_what_it_does_not_implement():
    from speechpos.position.encoder import fused_attention

    mha = torch.nn.MultiheadAttention(8, 2, add_zero_attn=True)
    x = torch.randn(1, 3, 8)
    with pytest.raises(ValueError, match="bias_k/add_zero_attn/kdim"):
        fused_attention(mha, x, x, x)
