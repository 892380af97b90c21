"""BEST-RQ model on the speech encoder, and the pretraining clock (budget, snapshots, resume)."""

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from speechpos.speech.bestrq import BestRQModel
from speechpos.speech.model import build_speech_encoder
from speechpos.speech.pretraining import TrainingClock

SMALL = dict(num_layers=1, d_model=16, nhead=2, d_ffn=32, dropout=0.0)


def bestrq(**kw):
    torch.manual_seed(0)
    enc = build_speech_encoder(position_embedding=True, **SMALL)
    return BestRQModel(enc, n_mels=80, patch_frames=4, d_model=16, codebook_size=64, **kw)


def test_targets_are_codes_of_the_clean_patches_and_masks_stay_in_the_shortest_utterance():
    model = bestrq(mask_prob=0.15)
    feats = torch.randn(3, 400, 80)  # 100 patches
    rel = torch.tensor([1.0, 0.5, 0.3])  # shortest: 120 frames = 30 patches
    seen = []
    # Spy on the encoder input: masked frames must be noise, and only inside 120 frames.
    orig = model.encoder.forward

    def spy(noisy, lengths, *a, **k):
        seen.append(noisy.detach().clone())
        return orig(noisy, lengths, *a, **k)

    model.encoder.forward = spy
    logits, targets = model(feats, rel)
    changed = (seen[0] != feats).any(-1)  # (B, F): frames replaced by noise
    assert changed.any()
    assert not changed[:, 120:].any()
    assert torch.equal(changed[0], changed[1]) and torch.equal(changed[0], changed[2])  # one mask per batch
    frames = changed[0].nonzero().flatten()
    assert torch.equal(frames % 4 == 0, torch.isin(frames, frames[::4]))  # whole patches
    patches = frames[::4] // 4
    clean = feats.reshape(3, 100, 320)[:, patches]
    assert torch.equal(targets, model.quantizer(clean).reshape(-1))
    assert logits.shape == (3 * len(patches), 64)


def test_bestrq_learns_the_codes_of_a_fixed_input_set():
    model = bestrq(mask_prob=0.3)
    feats = torch.randn(4, 160, 80)
    rel = torch.ones(4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        logits, targets = model(feats, rel)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    chance = torch.log(torch.tensor(64.0)).item()  # uniform guess over the codebook
    assert sum(losses[:10]) / 10 > 0.95 * chance
    assert sum(losses[-10:]) / 10 < 0.8 * chance


def test_bestrq_refuses_unpositioned_encoder_and_too_short_utterances():
    enc = build_speech_encoder(position_embedding=False, **SMALL)
    with pytest.raises(ValueError, match="BEST-RQ needs an encoder with a position embedding"):
        BestRQModel(enc, d_model=16, codebook_size=8)
    model = bestrq(mask_patches=5)  # spans of 20 frames
    with pytest.raises(ValueError, match="utterance of 16 frames is shorter than one masked span of 20 frames"):
        model(torch.randn(2, 80, 80), torch.tensor([1.0, 0.2]))


def test_clock_counts_only_running_time_and_stops_at_its_budget():
    clock = TrainingClock(budget_seconds=0.05)
    clock.start()
    assert not clock.exhausted()
    clock.pause()
    before = clock.train_seconds
    import time

    time.sleep(0.06)  # paused (validation): not counted
    clock.tick()
    assert clock.train_seconds == before
    clock.start()
    time.sleep(0.06)
    clock.tick()
    assert clock.exhausted() and clock.fraction() == 1.0


def test_clock_is_restored_by_the_checkpointer(tmp_path):
    clock = TrainingClock(budget_seconds=100, snapshot_seconds=[10, 50])
    clock.train_seconds, clock.audio_seconds, clock.steps = 20.0, 300.0, 7
    assert clock.due_snapshots() == [10.0]
    Checkpointer(tmp_path, {"clock": clock}).save_checkpoint()
    fresh = TrainingClock(budget_seconds=100, snapshot_seconds=[10, 50])
    Checkpointer(tmp_path, {"clock": fresh}).recover_if_possible()
    assert (fresh.train_seconds, fresh.audio_seconds, fresh.steps) == (20.0, 300.0, 7)
    assert fresh.due_snapshots() == []  # the 10 s snapshot was taken before the restart


def test_clock_refuses_a_non_positive_budget():
    with pytest.raises(ValueError, match="budget_seconds must be positive, got 0"):
        TrainingClock(budget_seconds=0)


# ------------------------------------------------------------------ BEST-RQ with dropped masked tokens


def dropped_bestrq(kind="conformer", decoder_kind="transformer", **kw):
    torch.manual_seed(0)
    enc = build_speech_encoder(position_embedding=True, kind=kind, conv_mode="off", **SMALL)
    return BestRQModel(enc, n_mels=80, patch_frames=4, d_model=16, codebook_size=64, drop_masked=True,
                       decoder_dim=8, decoder_heads=2, decoder_kind=decoder_kind, **kw)


def fixed_mask(monkeypatch, frames):
    """Every forward masks the same frames (SpeechBrain's compute_mask draws them at random)."""
    import speechpos.speech.bestrq as bestrq_module

    monkeypatch.setattr(bestrq_module, "compute_mask", lambda *a, **k: torch.as_tensor(frames))


def test_dropped_masked_tokens_never_reach_the_encoder_keys_and_values(monkeypatch):
    model = dropped_bestrq(decoder_kind="conv").eval()
    masked_patches = [1, 2, 5, 9]
    fixed_mask(monkeypatch, [4 * p + i for p in masked_patches for i in range(4)])
    feats, rel = torch.randn(2, 48, 80), torch.tensor([1.0, 0.75])  # 12 and 9 patches
    inputs, attended = [], []
    model.encoder.encoder.register_forward_hook(lambda mod, args, out: inputs.append(args))
    for att in model.encoder.encoder.attentions:
        att.register_forward_hook(lambda mod, args, out: attended.append(args[1].shape[1]))
    model(feats, rel)
    tokens, lengths = inputs[0]
    assert lengths.tolist() == [12 - 4, 9 - 3]  # the kept patches of each utterance
    assert set(attended) == {8}  # every layer's keys/values: the kept tokens only
    embedded, _ = model.encoder.embed(feats, rel)
    kept = [p for p in range(12) if p not in masked_patches]
    assert torch.allclose(tokens[0], embedded[0, kept])
    # What the masked patches hold changes nothing the encoder computes.
    encoded = []
    model.encoder.encoder.register_forward_hook(lambda mod, args, out: encoded.append(out))
    other = feats.clone()
    for p in masked_patches:
        other[:, 4 * p:4 * p + 4] = torch.randn(2, 4, 80)
    model(feats, rel), model(other, rel)
    assert torch.equal(encoded[0], encoded[1])


def test_dropped_decoder_sees_a_mask_token_at_every_masked_position(monkeypatch):
    model = dropped_bestrq().eval()
    masked_patches = [0, 3, 4, 7]
    fixed_mask(monkeypatch, [4 * p + i for p in masked_patches for i in range(4)])
    seen = []
    model.decoder.layers.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    feats = torch.randn(2, 40, 80)
    logits, targets = model(feats, torch.ones(2))
    position = model.decoder.position(torch.zeros(1, 10, 8))[0]
    for p in range(10):
        is_mask_token = torch.allclose(seen[0][:, p], model.decoder.mask_token + position[p])
        assert is_mask_token == (p in masked_patches)
    assert logits.shape == (2 * len(masked_patches), 64)
    clean = feats.reshape(2, 10, 320)[:, masked_patches]
    assert torch.equal(targets, model.quantizer(clean).reshape(-1))


@pytest.mark.parametrize("decoder_kind", ["conv", "transformer"])
def test_one_dropped_step_lowers_the_loss(monkeypatch, decoder_kind):
    model = dropped_bestrq(kind="transformer", decoder_kind=decoder_kind).train()
    fixed_mask(monkeypatch, [4 * p + i for p in (1, 2, 6, 8, 11) for i in range(4)])
    feats = torch.randn(4, 64, 80)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss():
        torch.manual_seed(1)  # the same dropout both times
        return torch.nn.functional.cross_entropy(*model(feats, torch.ones(4)))

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    assert loss().item() < before.item()


def test_dropped_bestrq_refuses_a_convolution_that_is_on():
    enc = build_speech_encoder(position_embedding=True, kind="conformer", conv_mode="on", **SMALL)
    with pytest.raises(ValueError, match="drop_masked needs the conformer's convolution off"):
        BestRQModel(enc, d_model=16, codebook_size=8, drop_masked=True)


def test_the_matmul_quantiser_gives_speechbrains_codes_at_the_recipe_size():
    from speechbrain.nnet.quantisers import RandomProjectionQuantizer

    from speechpos.speech.bestrq import RandomProjectionCodes

    torch.manual_seed(0)
    fast = RandomProjectionCodes(320, 16, 8192)
    patches = torch.randn(4, 50, 320)
    assert torch.equal(fast(patches), RandomProjectionQuantizer.forward(fast, patches))
    assert set(fast.state_dict()) == {"P", "CB"}  # checkpoints as SpeechBrain's
