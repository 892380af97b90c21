"""Per-patch views (the pretext's augmentation) and the joint BEST-RQ + position models (two passes, one pass)."""

import pytest
import torch

from speechpos.position import ContextSampler, PositionHead, PositionLoss
from speechpos.speech.bestrq import BestRQModel
from speechpos.speech.joint import DroppedJointModel, JointModel, chunk_features
from speechpos.speech.model import build_speech_encoder
from speechpos.speech.position_model import SpeechPositionModel
from speechpos.speech.views import PatchViews


def test_views_jitter_every_patch_on_its_own_and_normalise_it():
    g = torch.Generator().manual_seed(0)
    patches = torch.randn(2, 6, 4 * 80, generator=g)
    patches[:, 3] = patches[:, 2]                       # two identical neighbours
    out = PatchViews(80, 4, gain=1.0, tilt=1.0, noise=0.1, freq_mask=10, patch_norm=True)(patches, g)
    assert not torch.allclose(out[:, 2], out[:, 3])     # the same content gets different looks
    flat = out.reshape(2, 6, -1)
    torch.testing.assert_close(flat.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(-1, unbiased=False), torch.ones(2, 6), atol=1e-4, rtol=0)
    # Without normalisation a pure gain is an offset: the patch's shape survives.
    gain_only = PatchViews(80, 4, gain=1.0, tilt=0.0, noise=0.0, freq_mask=0, patch_norm=False)(patches, g)
    offsets = (gain_only - patches).reshape(2, 6, -1)
    assert bool((offsets.std(-1) < 1e-5).all()) and bool((offsets.abs().amax(-1) <= 1.0).all())


def test_views_refuse_bad_settings_and_shapes():
    with pytest.raises(ValueError, match="freq_mask \\(90\\) is wider than the 80 mel channels"):
        PatchViews(80, 4, freq_mask=90)
    with pytest.raises(ValueError, match="gain, tilt, noise and freq_mask must be >= 0"):
        PatchViews(80, 4, gain=-1.0)
    with pytest.raises(ValueError, match="patches of 100 values are not 4 frames x 80 channels"):
        PatchViews(80, 4)(torch.randn(1, 2, 100))


def test_chunks_stay_inside_their_utterance():
    feats = torch.arange(2 * 12).float().reshape(2, 12, 1)
    chunks, lens = chunk_features(feats, torch.tensor([1.0, 0.5]), 4)
    assert lens.tolist() == [1.0, 1.0, 1.0, 1.0]        # 3 whole chunks + 1 (6 valid frames)
    assert chunks[:, :, 0].tolist()[3] == [12, 13, 14, 15]
    short, short_lens = chunk_features(torch.randn(1, 3, 2), torch.tensor([1.0]), 4)
    assert short.shape == (1, 4, 2) and short_lens.tolist() == [0.75]


def tiny_joint():
    torch.manual_seed(0)
    enc = build_speech_encoder(num_layers=2, d_model=32, nhead=4, d_ffn=64, kind="conformer", conv_mode="on",
                               dropout=0.0, position_embedding=True)
    bestrq = BestRQModel(enc, n_mels=80, patch_frames=4, d_model=32, codebook_size=16)
    position = SpeechPositionModel(enc, PositionHead(32, 10), ContextSampler(0.25), anchor_ratio=1.0,
                                   skip_position_embedding=True)
    return JointModel(bestrq, position, chunk_frames=40), enc


def test_joint_position_pass_sees_no_position_embedding_and_no_convolution():
    joint, enc = tiny_joint()
    with torch.no_grad():
        enc.position_embedding.weight.normal_()
    feats = torch.randn(1, 40, 80)
    g = torch.Generator().manual_seed(0)
    joint.eval()
    out = joint.position(feats, torch.tensor([1.0]), torch.Generator().manual_seed(0))
    # The same pass on an encoder whose position embedding is zero: identical outputs.
    with torch.no_grad():
        enc.position_embedding.weight.zero_()
    with torch.no_grad():
        again = joint.position(feats, torch.tensor([1.0]), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.logits, again.logits)
    gates = [m.mode for m in enc.modules() if type(m).__name__ == "ConvolutionGate"]
    joint(torch.randn(2, 80, 80), torch.tensor([1.0, 1.0]), g)
    assert gates == ["on", "on"] and [m.mode for m in enc.modules() if type(m).__name__ == "ConvolutionGate"] == gates
    with pytest.raises(ValueError, match="needs an encoder without position embedding"):
        SpeechPositionModel(enc, PositionHead(32, 10), ContextSampler(0.25))


# ------------------------------------------------------------------ one pass: dropped BEST-RQ + position


def one_pass_joint(target_ratio=0.5, **position_kw):
    torch.manual_seed(0)
    enc = build_speech_encoder(num_layers=2, d_model=32, nhead=4, d_ffn=64, kind="conformer", conv_mode="off",
                               dropout=0.0)
    bestrq = BestRQModel(enc, n_mels=80, patch_frames=4, d_model=32, codebook_size=16, drop_masked=True,
                         decoder_dim=16, decoder_kind="conv", positioned=False)
    position = SpeechPositionModel(enc, PositionHead(32, 40), ContextSampler(0.25), loss_on="excluded",
                                   anchor_ratio=1.0, target_ratio=target_ratio, **position_kw)
    return DroppedJointModel(bestrq, position)


def fixed_mask(monkeypatch, patches):
    import speechpos.speech.bestrq as bestrq_module

    frames = [4 * p + i for p in patches for i in range(4)]
    monkeypatch.setattr(bestrq_module, "compute_mask", lambda *a, **k: torch.as_tensor(frames))


@pytest.mark.parametrize("target_ratio", [0.5, None])
def test_one_pass_masked_patches_reach_the_position_head_only(monkeypatch, target_ratio):
    model = one_pass_joint(target_ratio).eval()
    masked = [1, 2, 5, 9, 14]
    fixed_mask(monkeypatch, masked)
    feats, rel = torch.randn(2, 80, 80), torch.tensor([1.0, 0.8])  # 20 and 16 patches
    contexts = []
    for att in model.encoder.encoder.attentions:
        att.register_forward_pre_hook(lambda mod, args: contexts.append(mod.context))

    def run(x):
        return model(x, rel, torch.Generator().manual_seed(3))

    out = run(feats)
    # Every layer's keys/values: the kept patches of each utterance, none masked.
    for ctx in contexts:
        for b, patches in enumerate((20, 16)):
            keys = out.position.positions[b][ctx.index[b][~ctx.padding[b]]]
            assert sorted(keys.tolist()) == [p for p in range(patches) if p not in masked]
    scored = out.position.positions[out.position.mask]
    assert set(scored.tolist()) <= set(masked) and len(scored) > 0  # position loss on masked patches only
    other = feats.clone()
    for p in masked:
        other[:, 4 * p:4 * p + 4] = torch.randn(2, 4, 80)
    again = run(other)
    # The codes' logits read the context alone: what the masked patches hold changes nothing there ...
    torch.testing.assert_close(again.code_logits, out.code_logits)
    assert not torch.equal(again.code_targets, out.code_targets)  # ... though their codes changed
    # ... while the position head sees each masked query's own content.
    assert not torch.allclose(again.position.logits[again.position.mask], out.position.logits[out.position.mask])


def test_one_pass_kept_patches_carry_the_anchor_signal_and_queries_none(monkeypatch):
    model = one_pass_joint(0.5).eval()
    fixed_mask(monkeypatch, [0, 3, 4, 7])
    seen = []
    model.encoder.encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    feats = torch.randn(1, 40, 80)
    out = model(feats, torch.ones(1), torch.Generator().manual_seed(0))
    tokens, _ = model.encoder.embed(feats, torch.ones(1))
    slots = out.position.positions[0]
    signal = seen[0][0] - tokens[0, slots]  # what the pretext added to each slot
    kept = torch.tensor([p not in (0, 3, 4, 7) for p in slots.tolist()])
    assert kept.sum() == 6 and (signal[kept].abs().amax(1) > 1e-3).all()
    torch.testing.assert_close(signal[~kept], torch.zeros_like(signal[~kept]))


@pytest.mark.parametrize("one_pass", [False, True], ids=["two passes", "one pass"])
def test_joint_step_lowers_both_losses(one_pass):
    model = one_pass_joint(0.5) if one_pass else tiny_joint()[0]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    feats = torch.randn(4, 120, 80, generator=torch.Generator().manual_seed(1)).cumsum(1) * 0.1  # slowly changing "speech"
    lens = torch.ones(4)
    loss_fn = PositionLoss(loss_on="excluded" if one_pass else "all")

    def losses():
        torch.manual_seed(5)
        out = model(feats, lens, torch.Generator().manual_seed(2))
        return torch.nn.functional.cross_entropy(out.code_logits, out.code_targets), loss_fn.of_output(out.position)

    with torch.no_grad():
        code0, pos0 = losses()
    for _ in range(40):
        out = model(feats, lens)
        loss = torch.nn.functional.cross_entropy(out.code_logits, out.code_targets) + loss_fn.of_output(out.position)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        code1, pos1 = losses()
    assert code1 < 0.8 * code0 and pos1 < 0.9 * pos0


def test_one_pass_refuses_what_would_leak_or_score_the_context():
    model = one_pass_joint()
    with pytest.raises(ValueError, match="scores the masked patches: use loss_on: excluded"):
        DroppedJointModel(model.bestrq, SpeechPositionModel(model.encoder, PositionHead(32, 20), ContextSampler(0.25)))
    enc = build_speech_encoder(position_embedding=True, kind="conformer", conv_mode="off", num_layers=1, d_model=16,
                               nhead=2, d_ffn=32)
    bestrq = BestRQModel(enc, d_model=16, codebook_size=8, drop_masked=True)
    position = SpeechPositionModel(enc, PositionHead(16, 20), ContextSampler(0.25), loss_on="excluded",
                                   skip_position_embedding=True)
    with pytest.raises(ValueError, match="needs an encoder without position embedding"):
        DroppedJointModel(bestrq, position)
