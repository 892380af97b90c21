"""Keyword training augmentation: background noise from the training region of the noise files
only, SpeechBrain's AddNoise at the asked SNR with it, mixup's loss, and the errors."""

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.augment.time_domain import AddNoise

from speechpos.speech.data.audio import AudioError
from speechpos.speech.keyword_augment import BackgroundNoise, mixup


@pytest.fixture
def ramp_folder(tmp_path):
    """One noise file whose sample values say where in the file they are (0 .. 1)."""
    folder = tmp_path / "_background_noise_"
    folder.mkdir()
    sf.write(folder / "ramp.wav", np.linspace(0, 1, 10 * 16000, dtype="float32"), 16000, subtype="FLOAT")
    return folder


def test_training_noise_never_comes_from_the_validation_or_test_region(ramp_folder):
    torch.manual_seed(0)
    noise = BackgroundNoise(ramp_folder, region="train")(torch.zeros(64, 16000))
    assert noise.shape == (64, 16000)
    assert float(noise.max()) <= 0.8 and float(noise.min()) < 0.2  # spans the region, stays in it
    test = BackgroundNoise(ramp_folder, region="test")(torch.zeros(8, 8000))
    assert float(test.min()) >= 0.9 - 1e-6


def test_add_noise_mixes_it_at_the_asked_snr(ramp_folder, tmp_path):
    folder = tmp_path / "white"
    folder.mkdir()
    sf.write(folder / "white.wav", np.random.default_rng(0).standard_normal(5 * 16000).astype("float32") * 0.1, 16000)
    clean = torch.sin(torch.arange(16000) / 5.0).repeat(4, 1)
    noisy = AddNoise(snr_low=10, snr_high=10, noise_funct=BackgroundNoise(folder))(clean, torch.ones(4))
    # AddNoise scales the clean part by 1 - a and the noise to a * rms(clean), a = 1 / (10^(snr/20) + 1).
    a = 1 / (10 ** 0.5 + 1)
    residual = noisy - (1 - a) * clean
    ratio = residual.pow(2).mean(1).sqrt() / clean.pow(2).mean(1).sqrt()
    assert torch.allclose(ratio, torch.full((4,), a), rtol=1e-3)


def test_noise_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(AudioError) as err:
        BackgroundNoise(tmp_path / "none")(torch.zeros(1, 100))
    assert str(err.value) == (f"{tmp_path / 'none'}: no background-noise WAVs to mix into training clips "
                              "(set noise_probability: 0 to train without them)")
    sf.write(tmp_path / "n8k.wav", np.zeros(8000, dtype="float32"), 8000)
    with pytest.raises(AudioError) as err:
        BackgroundNoise(tmp_path)(torch.zeros(1, 100))
    assert str(err.value) == f"{tmp_path / 'n8k.wav'}: sample rate is 8000 Hz, expected 16000 Hz"
    with pytest.raises(ValueError, match="region must be one of"):
        BackgroundNoise(tmp_path, region="dev")


def test_mixup_mixes_inputs_and_returns_the_other_labels():
    torch.manual_seed(1)
    inputs, labels = torch.eye(6), torch.arange(6)
    mixed, other, lam = mixup(inputs, labels, alpha=0.4)
    assert 0.0 <= lam <= 1.0 and sorted(other.tolist()) == list(range(6))
    assert torch.allclose(mixed, lam * inputs + (1 - lam) * inputs[other])  # eye: row index = label
    with pytest.raises(ValueError, match="mixup needs alpha > 0, got 0"):
        mixup(inputs, labels, alpha=0)
