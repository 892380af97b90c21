"""The recipe's robustness switches on the tiny generated corpus: speed perturbation, additive
noise (coloured noise and babble of training utterances) and simulated reverberation. Each
changes the training batch as it says, and a run with it switched on still learns."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml
from test_speech_recipes import RECIPES, TINY_MODEL, log_stats, run_recipe

from speechpos.speech.data.corruptions import make_corruptions
from speechpos.speech.data.librispeech import prepare_librispeech


@pytest.fixture(scope="module")
def prep(tiny_librispeech, tmp_path_factory):
    folder = tmp_path_factory.mktemp("robust_prep")
    prepare_librispeech(tiny_librispeech, folder, tr_splits=["train-clean-100"], dev_splits=["dev-clean"],
                        te_splits=["test-clean", "test-other"], progress=False)
    return folder


@pytest.fixture(scope="module")
def hparams(prep):
    with open(RECIPES / "hparams" / "ctc.yaml", encoding="utf-8") as f:
        return load_hyperpyyaml(f, {"prep_folder": str(prep), "output_folder": str(prep / "out")})


@pytest.fixture(scope="module")
def batch(prep):
    with open(prep / "train-clean-100.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:3]
    wavs = [torch.from_numpy(sf.read(r["wav"], dtype="float32")[0]) for r in rows]
    length = max(len(w) for w in wavs)
    padded = torch.stack([torch.nn.functional.pad(w, (0, length - len(w))) for w in wavs])
    return padded, torch.tensor([len(w) / length for w in wavs])


def test_corruption_files_babble_from_training_voices_only(prep, tiny_librispeech):
    csvs = make_corruptions(prep / "corr", prep / "train-clean-100.csv", n_coloured=4, n_babble=3, n_rirs=5)
    with open(csvs["noise"], newline="") as f:
        noise = list(csv.DictReader(f))
    with open(csvs["rirs"], newline="") as f:
        rirs = list(csv.DictReader(f))
    assert [r["ID"].split("_")[0] for r in noise] == ["white", "pink", "brown", "blue"] + ["babble"] * 3
    assert len(rirs) == 5 and all(sf.info(r["wav"]).samplerate == 16000 for r in noise + rirs)
    for r in rirs:  # direct path first and strongest, then a decaying tail
        rir = sf.read(r["wav"])[0]
        assert np.argmax(np.abs(rir)) == 0
        quarter = len(rir) // 4
        assert np.sum(rir[quarter: 2 * quarter] ** 2) > np.sum(rir[3 * quarter:] ** 2)
    mtime = (prep / "corr" / "noise.csv").stat().st_mtime_ns
    make_corruptions(prep / "corr", prep / "train-clean-100.csv", n_coloured=4, n_babble=3, n_rirs=5)
    assert (prep / "corr" / "noise.csv").stat().st_mtime_ns == mtime  # made once


@pytest.mark.parametrize("switch", ["speed_perturb", "add_noise", "add_reverb"])
def test_each_switch_changes_the_batch(switch, hparams, prep, batch):
    wavs, lens = batch
    make_corruptions(hparams["corruptions_folder"], prep / "train-clean-100.csv")
    torch.manual_seed(0)
    if switch == "speed_perturb":
        outs = [hparams["speed_perturber"](wavs) for _ in range(8)]
        assert {o.shape[1] for o in outs} > {wavs.shape[1]}  # 0.9 and 1.1 change the length
        return
    if switch == "add_noise":
        out = hparams["noise_adder"](wavs, lens)
        assert out.shape == wavs.shape
        n = int(lens[0] * wavs.shape[1])
        snr = 10 * torch.log10(wavs[0, :n].pow(2).mean() / (out[0, :n] - wavs[0, :n]).pow(2).mean())
        # SNR drawn in [0, 20] dB (the mix is rescaled; the error is measured against the clean scale)
        assert -3 < snr < 25
    else:
        out = hparams["reverb_adder"](wavs)
        assert out.shape == wavs.shape
        # the room rings on after the speech ends: energy in the (silent) padding of a short one
        i = int(torch.argmin(lens))
        n = int(lens[i] * wavs.shape[1])
        assert lens[i] < 1 and wavs[i, n:].abs().sum() == 0
        assert out[i, n: n + 1600].abs().sum() > 0
        # and it is no scaled copy of the input: the room's echoes change the waveform's shape
        cos = torch.nn.functional.cosine_similarity(out[i, :n], wavs[i, :n], dim=0)
        assert cos < 0.99
    assert not torch.allclose(out, wavs, atol=1e-3)


@pytest.mark.parametrize("switch", ["--speed_perturb=True", "--add_noise=True", "--add_reverb=True"])
def test_training_with_each_switch_lowers_the_loss(switch, tiny_librispeech, tmp_path):
    out = tmp_path / "run"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}", f"--output_folder={out}",
        "--number_of_epochs=6", "--dynamic_batching=False", "--wav_augment_prob=1.0", switch, *TINY_MODEL,
    )
    stats = log_stats(out / "train_log.txt")
    assert stats[-1]["train loss"] < 0.9 * stats[0]["train loss"]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"dev-clean", "test-clean", "test-other"}
    if switch != "--speed_perturb=True":
        assert (out / "prep" / "corruptions" / "noise.csv").is_file()
