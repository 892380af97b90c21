"""The CTC baseline's parts: SpeechBrain's convolutional front-end, sinusoidal positions."""

import pytest
import torch

from speechpos.position.embedding import (
    PositionEmbedding,
    SinusoidalPositionEmbedding,
    build_position_embedding,
    position_signal_name,
)
from speechpos.speech.frontend import ConvFrontEnd
from speechpos.speech.model import build_speech_encoder, load_encoder_state

SMALL = dict(num_layers=1, d_model=16, nhead=2, d_ffn=32)


def test_conv_frontend_subsamples_four_times_and_counts_valid_tokens():
    front = ConvFrontEnd(n_mels=80, d_model=16)
    tokens, lengths = front(torch.randn(3, 101, 80), torch.tensor([1.0, 0.5, 4 / 101]))
    assert tokens.shape == (3, 26, 16)
    assert lengths.tolist() == [26, 13, 1]  # ceil(ceil(frames / 2) / 2) of 101, 50 (rounded), 4


def test_conv_frontend_refuses_bad_input_with_exact_messages():
    front = ConvFrontEnd(n_mels=80, d_model=16)
    with pytest.raises(ValueError, match="^expected 80 filterbank channels, got 40$"):
        front(torch.randn(1, 20, 40), torch.ones(1))
    with pytest.raises(ValueError, match=r"^input of 3 frames is shorter than one token \(4 frames\)$"):
        front(torch.randn(1, 3, 80), torch.ones(1))


def test_builder_makes_each_frontend_and_checks_the_patch_size():
    conv = build_speech_encoder(frontend="conv", kind="conformer", conv_mode="on", **SMALL)
    out, lengths = conv(torch.randn(2, 40, 80), torch.tensor([1.0, 0.5]))
    assert out.shape == (2, 10, 16) and lengths.tolist() == [10, 5]
    with pytest.raises(ValueError, match="frontend 'conv' subsamples 4x: set patch_frames: 4 .got 2."):
        build_speech_encoder(frontend="conv", patch_frames=2, **SMALL)


def test_sinusoidal_positions_are_speechbrains_and_distinguish_positions():
    from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding

    pe = SinusoidalPositionEmbedding(16)
    x = torch.randn(2, 7, 16)
    assert torch.allclose(pe(x) - x, PositionalEncoding(16)(x).expand(2, -1, -1), atol=1e-6)
    constant = pe(torch.zeros(1, 7, 16))[0]
    assert len({tuple(row.tolist()) for row in constant}) == 7
    with pytest.raises(ValueError, match="sequence of 3000 tokens is longer than the 2500 positions"):
        pe(torch.zeros(1, 3000, 16))


def test_position_signal_names_and_modules():
    assert position_signal_name(True) == "learned" and position_signal_name(False) == "none"
    assert isinstance(build_position_embedding("learned", 16, 100), PositionEmbedding)
    assert isinstance(build_position_embedding("sinusoidal", 16, 100), SinusoidalPositionEmbedding)
    assert build_position_embedding("none", 16, 100) is None
    with pytest.raises(ValueError, match="position_embedding must be one of .* got 'rope'"):
        position_signal_name("rope")


def test_a_pretrained_encoder_loads_behind_sinusoidal_positions(tmp_path):
    pretrained = build_speech_encoder(**SMALL)
    path = tmp_path / "encoder.ckpt"
    torch.save(pretrained.state_dict(), path)
    model = build_speech_encoder(position_embedding="sinusoidal", **SMALL)
    load_encoder_state(model, path)
    for name, value in pretrained.state_dict().items():
        assert torch.equal(model.state_dict()[name], value)


@pytest.mark.parametrize("frontend", ["conv", "patch"])
@pytest.mark.parametrize("conv_mode", ["on", "off"])
def test_a_files_encodings_are_the_same_alone_and_padded_in_a_batch(frontend, conv_mode):
    """Padding reached the last valid tokens through the frame count (one fewer in some batches),
    the convolution front-end's edge (SpeechBrain pads a file alone by reflection) and the
    conformer convolution (its pointwise layer's bias turned zeroed padding into values)."""
    from speechbrain.lobes.features import Fbank

    from speechpos.speech.patches import feature_lengths

    torch.manual_seed(0)
    fbank = Fbank(n_mels=80)
    encoder = build_speech_encoder(num_layers=2, d_model=32, nhead=4, d_ffn=64, kind="conformer",
                                   conv_mode=conv_mode, frontend=frontend, position_embedding="sinusoidal").eval()
    for samples in (16000, 16080, 12345, 20001):
        wav = torch.randn(samples) * 0.1
        batch = torch.zeros(2, 40000)
        batch[0, :samples], batch[1] = wav, torch.randn(40000) * 0.1
        with torch.no_grad():
            alone, alone_len = encoder(fbank(wav[None]), torch.ones(1))
            feats = fbank(batch)
            lens = feature_lengths(torch.tensor([samples / 40000, 1.0]), 40000, feats.shape[1], 160)
            batched, lengths = encoder(feats, lens)
        assert int(lengths[0]) == int(alone_len[0]) == alone.shape[1]
        assert torch.allclose(batched[0, : alone.shape[1]], alone[0], atol=1e-5), samples
