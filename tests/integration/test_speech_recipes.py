"""The LibriSpeech recipes run end to end on a tiny generated corpus.

One pretraining run and one CTC run (from its encoder) are shared by the tests of this file.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechpos.experiments.runs import run_python
from speechpos.recipes import PRETRAINED_ARCHITECTURE

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "LibriSpeech"

TINY_MODEL = [
    "--num_layers=2", "--d_model=64", "--nhead=4", "--d_ffn=128", "--dropout=0.0",
    "--patch_frames=4", "--batch_size=4", "--warmup_steps=10", "--lr=0.003",
]


def run_recipe(script, hparams, *args, check=True):
    env = dict(os.environ)  # output is read once the run has ended: no PYTHONUNBUFFERED (a fresh interpreter)
    env.setdefault("OMP_NUM_THREADS", "2")  # one under pytest-xdist (conftest)
    proc = run_python(
        [sys.executable, str(RECIPES / script), hparams, *args],
        cwd=RECIPES, capture_output=True, text=True, env=env, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def log_stats(train_log: Path) -> list[dict]:
    """Per-epoch numbers of a SpeechBrain train_log.txt (test lines left out)."""
    rows = []
    for line in train_log.read_text().splitlines():
        if not line.startswith("epoch: "):
            continue
        row = {}
        for section in line.split(" - ")[1:]:
            for item in section.split(", "):
                key, _, value = item.rpartition(": ")
                row[key.strip()] = float(value)
        row["epoch"] = int(re.match(r"epoch: (\d+)", line).group(1))
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def pretrain_run(tiny_librispeech, tmp_path_factory):
    out = tmp_path_factory.mktemp("pp") / "run"
    run_recipe(
        "pretrain.py", "hparams/pp.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=8", "--context_ratio=0.5", *TINY_MODEL,
    )
    return out


@pytest.fixture(scope="module")
def ctc_run(tiny_librispeech, pretrain_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ctc") / "run"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=6",
        f"--pretrained_encoder={pretrain_run / 'encoder.ckpt'}", "--speed_perturb=False", *TINY_MODEL,
        *PRETRAINED_ARCHITECTURE,
    )
    return out


def test_pretraining_loss_falls_and_position_accuracy_rises(pretrain_run):
    stats = log_stats(pretrain_run / "train_log.txt")
    assert [s["epoch"] for s in stats] == list(range(1, 9))
    first, last = stats[0], stats[-1]
    assert last["train loss"] < 0.9 * first["train loss"]
    assert last["train pos_acc"] > 3 * last["train chance_acc"]
    assert last["train pos_acc"] > first["train pos_acc"]
    assert last["train pos_err"] < last["train chance_err"]
    assert (pretrain_run / "encoder.ckpt").is_file()
    assert (pretrain_run / "valid_confusion.npy").is_file()


def test_pretraining_resumes_from_its_checkpoint(pretrain_run, tiny_librispeech, tmp_path):
    run = tmp_path / "resumed"
    common = [f"--data_folder={tiny_librispeech}", f"--output_folder={run}", *TINY_MODEL]
    run_recipe("pretrain.py", "hparams/pp.yaml", "--number_of_epochs=2", *common)
    saved = torch.load(run / "encoder.ckpt")
    proc = run_recipe("pretrain.py", "hparams/pp.yaml", "--number_of_epochs=3", *common)
    assert "Loading a checkpoint" in proc.stderr + proc.stdout
    assert [s["epoch"] for s in log_stats(run / "train_log.txt")] == [1, 2, 3]
    resumed = torch.load(run / "encoder.ckpt")
    assert any(not torch.equal(saved[k], resumed[k]) for k in saved), "epoch 3 must train on"


def test_wrong_hparams_key_is_refused(tmp_path):
    proc = run_recipe("pretrain.py", "hparams/pp.yaml", f"--output_folder={tmp_path}", "--lr_typo=1", check=False)
    assert proc.returncode == 2
    assert "Override 'lr_typo' not found" in proc.stderr
    assert "pp.yaml" in proc.stderr


def test_repeated_override_is_refused(tmp_path, recipe_refusal):
    err = recipe_refusal(RECIPES / "pretrain.py", "hparams/pp.yaml", f"--output_folder={tmp_path}",
                         "--lr=1", "--lr=2")
    assert "found duplicate key" in err and "Traceback" not in err


def test_missing_data_folder_is_refused(tmp_path, recipe_refusal):
    missing = tmp_path / "no_such_corpus"
    err = recipe_refusal(RECIPES / "pretrain.py", "hparams/pp.yaml", f"--output_folder={tmp_path / 'out'}",
                         f"--data_folder={missing}")
    assert f"data_folder {missing} does not exist" in err


def test_ctc_from_pretrained_lowers_loss_and_writes_wer(ctc_run):
    stats = log_stats(ctc_run / "train_log.txt")
    train = [s["train loss"] for s in stats if "train loss" in s]
    assert train[-1] < 0.8 * train[0]
    for split in ("dev-clean", "test-clean"):
        text = (ctc_run / f"wer_{split}.txt").read_text()
        assert "%WER" in text and "jiwer WER" in text
    import json

    results = json.loads((ctc_run / "results.json").read_text())
    for split in ("dev-clean", "test-clean"):
        assert results[split]["WER"] == pytest.approx(results[split]["jiwer_WER"], abs=0.01)
        assert results[split]["CER"] >= 0 and results[split]["utterances"] > 0


def test_ctc_refuses_patches_too_coarse_for_characters(tiny_librispeech, tmp_path):
    proc = run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={tmp_path}", "--number_of_epochs=1", "--patch_frames=24",
        "--frontend=patch", *[a for a in TINY_MODEL if not a.startswith("--patch_frames")],
        check=False,
    )
    assert proc.returncode != 0
    assert "have fewer encoder frames than CTC targets" in proc.stderr


def test_ctc_refuses_encoder_of_another_architecture(pretrain_run, tiny_librispeech, tmp_path):
    proc = run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={tmp_path}", "--number_of_epochs=1",
        f"--pretrained_encoder={pretrain_run / 'encoder.ckpt'}",
        *[a for a in TINY_MODEL if not a.startswith("--d_model")], "--d_model=32",
        *PRETRAINED_ARCHITECTURE, check=False,
    )
    assert proc.returncode != 0
    assert "was saved from a different architecture" in proc.stderr
    assert "keys of another shape" in proc.stderr


def test_cli_transcribes_and_extracts_features(ctc_run, tiny_librispeech, tmp_path):
    audio = sorted(Path(tiny_librispeech, "test-clean").rglob("*.flac"))[0]
    proc = run_python(
        [sys.executable, "-m", "speechpos.cli", "transcribe", str(ctc_run), str(audio)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{audio}\t")
    assert set(lines[0].split("\t", 1)[1]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
    out = tmp_path / "f.npy"
    proc = run_python(
        [sys.executable, "-m", "speechpos.cli", "features", str(ctc_run), str(audio), "--layer", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    import numpy as np

    feats = np.load(out)
    assert feats.shape[1] == 64 and feats.shape[0] > 0


# ------------------------------------------------------------------ inference on any audio file


def _utterance_and_copies(tiny_librispeech, folder: Path) -> dict[str, Path]:
    """A 16 kHz mono utterance of the tiny corpus and two copies of it made by resampling:
    44.1 kHz stereo (channels x + r and x - r, whose mean is x) and 8 kHz mono."""
    import shutil

    import soundfile as sf
    import torchaudio.functional as AF

    source = sorted(Path(tiny_librispeech, "test-clean").rglob("*.flac"))[0]
    wav, rate = sf.read(source, dtype="float32")
    assert rate == 16000 and wav.ndim == 1
    x = torch.from_numpy(wav)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"orig": folder / "a_orig16k.flac", "stereo44k": folder / "b_stereo44k.flac",
             "mono8k": folder / "c_mono8k.flac"}
    shutil.copy(source, files["orig"])
    up = AF.resample(x, 16000, 44100)
    other = 0.5 * up.flip(0)  # a different signal in each channel: only their mean is x
    assert float((up.abs() + other.abs()).max()) < 1.0  # no clipping in the 16-bit FLAC
    sf.write(files["stereo44k"], torch.stack([up + other, up - other], 1).numpy(), 44100)
    sf.write(files["mono8k"], AF.resample(x, 16000, 8000).numpy(), 8000)
    assert sf.info(files["stereo44k"]).channels == 2 and sf.info(files["mono8k"]).samplerate == 8000
    return files


def _converted(path, rate, channels):
    """The INFO message of a converted file."""
    return f"{path}: converted from {rate} Hz, {channels} channel(s) to 16000 Hz mono"


@pytest.fixture(scope="module")
def speech_model(ctc_run):
    from speechpos.inference import SpeechModel

    return SpeechModel.from_run(ctc_run)


def test_inference_converts_44k_stereo_and_8k_audio(
    speech_model, tiny_librispeech, tmp_path, caplog
):
    """Python API: a 44.1 kHz stereo copy of an utterance gives (nearly) the original's features
    and transcript; an 8 kHz copy keeps the original's length and its filterbank under 2 kHz."""
    import difflib
    import logging

    files = _utterance_and_copies(tiny_librispeech, tmp_path)
    model = speech_model
    orig_wav = model.load_audio(files["orig"])
    orig_fbank = model.compute_features(orig_wav[None])[0]
    orig_feats = model.extract_features(files["orig"])
    orig_text = model.transcribe_file(files["orig"])
    assert orig_text

    with caplog.at_level(logging.INFO, logger="speechpos"):
        wav44 = model.load_audio(files["stereo44k"])
        wav8 = model.load_audio(files["mono8k"])
    assert _converted(files["stereo44k"], 44100, 2) in caplog.text
    assert _converted(files["mono8k"], 8000, 1) in caplog.text
    assert str(files["orig"]) not in caplog.text  # a 16 kHz mono file is read as it is

    # 44.1 kHz stereo: the downmix is the channel mean and the round trip through 44.1 kHz only
    # loses the band edge (the top mel bins, above ~7.5 kHz).
    assert abs(len(wav44) - len(orig_wav)) <= 1
    n = min(len(wav44), len(orig_wav))
    assert torch.allclose(wav44[:n], orig_wav[:n], atol=0.1)
    fbank44 = model.compute_features(wav44[None])[0]
    assert fbank44.shape == orig_fbank.shape
    assert (fbank44 - orig_fbank)[:, :-8].abs().mean() < 0.05
    feats44 = model.extract_features(files["stereo44k"])
    assert feats44.shape == orig_feats.shape
    cos = torch.nn.functional.cosine_similarity(feats44, orig_feats, dim=-1)
    assert cos.mean() > 0.99 and cos.min() > 0.9
    layer1, orig_layer1 = (model.extract_features(files[k], layer=1) for k in ("stereo44k", "orig"))
    assert (layer1 - orig_layer1).norm() < 0.05 * orig_layer1.norm()
    text44 = model.transcribe_file(files["stereo44k"])
    assert difflib.SequenceMatcher(None, text44, orig_text).ratio() > 0.85, (text44, orig_text)

    # 8 kHz: nothing above 4 kHz is left, but the duration and the low band are the original's.
    assert abs(len(wav8) - len(orig_wav)) <= 1
    fbank8 = model.compute_features(wav8[None])[0]
    assert fbank8.shape == orig_fbank.shape
    low = fbank8.shape[1] // 2  # mel bins centred under ~2 kHz
    assert (fbank8 - orig_fbank)[:, :low].abs().mean() < 0.1
    assert (fbank8 - orig_fbank)[:, -8:].abs().mean() > 1.0  # (the lost top band)
    feats8 = model.extract_features(files["mono8k"])
    assert feats8.shape == orig_feats.shape
    assert torch.nn.functional.cosine_similarity(feats8, orig_feats, dim=-1).mean() > 0.5
    assert set(model.transcribe_file(files["mono8k"])) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")


def test_inference_keeps_the_errors_for_bad_files(speech_model, tmp_path):
    """Missing and corrupt files give read_audio_checked's exact errors; too short is measured
    after resampling (1000 samples at 44.1 kHz are 363 at 16 kHz, under one 640-sample patch)."""
    import numpy as np
    import soundfile as sf

    from speechpos.speech.data.audio import AudioError, read_audio_checked

    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + b"\x00" * 100)
    missing = tmp_path / "missing.wav"
    for bad in (corrupt, missing):
        with pytest.raises(AudioError) as strict:
            read_audio_checked(str(bad))
        for use in (speech_model.transcribe_file, speech_model.extract_features):
            with pytest.raises(AudioError) as err:
                use(bad)
            assert str(err.value) == str(strict.value)
    assert str(strict.value) == f"{missing}: audio file not found"
    short = tmp_path / "short44k.wav"
    sf.write(short, np.zeros((1000, 2), dtype="float32"), 44100)
    with pytest.raises(AudioError) as err:
        speech_model.transcribe_file(short)
    assert speech_model.min_samples == 640
    message = f"{short}: 363 samples (0.023 s) is shorter than one patch (640 samples)"
    assert str(err.value) == message


def test_cli_transcribes_a_folder_of_mixed_rates_and_skips_a_corrupt_file(
    ctc_run, speech_model, tiny_librispeech, tmp_path
):
    files = _utterance_and_copies(tiny_librispeech, tmp_path / "audio")
    cli = [sys.executable, "-m", "speechpos.cli"]
    proc = run_python(
        [*cli, "transcribe", str(ctc_run), str(tmp_path / "audio")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in files.values()]
    expected = [speech_model.transcribe_file(p) for p in files.values()]
    assert [line.split("\t", 1)[1] for line in lines] == expected
    assert f"INFO: {_converted(files['stereo44k'], 44100, 2)}" in proc.stderr
    assert f"INFO: {_converted(files['mono8k'], 8000, 1)}" in proc.stderr
    assert str(files["orig"]) not in proc.stderr

    out = tmp_path / "f.npy"
    proc = run_python(
        [*cli, "features", str(ctc_run), str(files["stereo44k"]), "--layer=1", f"--out={out}"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    import numpy as np

    np.testing.assert_allclose(
        np.load(out), speech_model.extract_features(files["stereo44k"], layer=1).numpy(), atol=1e-5
    )

    from speechpos.speech.data.audio import AudioError, read_audio_checked

    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + b"\x00" * 100)
    with pytest.raises(AudioError) as strict:
        read_audio_checked(str(corrupt))
    proc = run_python(
        [*cli, "transcribe", str(ctc_run), str(corrupt), str(files["orig"]), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1  # a file failed; the others are done
    assert proc.stdout == f"{files['orig']}\t{expected[0]}\n"
    err = proc.stderr.strip().splitlines()
    assert err[0] == f"speechpos: error: {strict.value}"
    assert err[-1].startswith("speechpos: 1 file(s) transcribed, 0 already done, 1 failed;")
    assert "Traceback" not in proc.stderr


def test_pretrained_encoder_loads_through_a_speechbrain_pretrainer(pretrain_run, tmp_path):
    """`speechpos export` of a pretraining run: the yaml it writes builds the fine-tuning encoder
    and its SpeechBrain Pretrainer loads every pretrained weight (the position embedding stays
    zero), as asr_ctc.py's strict loader does."""
    from hyperpyyaml import load_hyperpyyaml

    from speechpos.inference.export import finetune_encoder

    out = tmp_path / "encoder"
    proc = run_python([sys.executable, "-m", "speechpos.cli", "export", str(pretrain_run), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(out / "hyperparams.yaml") as f:
        hp = load_hyperpyyaml(f)
    hp["pretrainer"].set_collect_in(str(tmp_path / "collected"))
    hp["pretrainer"].collect_files()
    hp["pretrainer"].load_collected()
    loaded = hp["encoder"].state_dict()
    pretrained = torch.load(pretrain_run / "encoder.ckpt")
    assert set(loaded) - set(pretrained) == {"position_embedding.weight"}
    for key, value in pretrained.items():
        assert torch.equal(loaded[key], value), key
    assert float(loaded["position_embedding.weight"].abs().sum()) == 0.0
    with open(pretrain_run / "hyperparams.yaml") as f:
        run_hp = load_hyperpyyaml(f)
    reference, _ = finetune_encoder(run_hp, pretrain_run / "encoder.ckpt")
    feats, lengths = torch.randn(2, 40, 80), torch.tensor([1.0, 0.7])
    hp["encoder"].eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(hp["encoder"](feats, lengths)[0], reference(feats, lengths)[0])


def test_ddp_two_processes_on_cpu(tiny_librispeech, pretrain_run, tmp_path):
    """torchrun --nproc_per_node=2 with gloo: the conformer config (convolution off, so DDP
    must accept unused parameters) trains and both ranks log the same whole-epoch stats.
    ``--standalone``: a free port of its own (torchrun's default 29500 was once taken under load)."""
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "pretrain.py",
         "hparams/pp_conformer.yaml", "--distributed_backend=gloo", "--device=cpu",
         f"--data_folder={tiny_librispeech}", f"--output_folder={out}", "--number_of_epochs=2",
         *TINY_MODEL],
        cwd=RECIPES, capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = log_stats(out / "train_log.txt")
    assert [s["epoch"] for s in stats] == [1, 2]
    # Chance accuracy is (utterances / tokens) of what was scored: with the stats summed over
    # both ranks it is that of the whole training set, as in the single-process run.
    single = log_stats(pretrain_run / "train_log.txt")[0]
    assert stats[0]["train chance_acc"] == pytest.approx(single["train chance_acc"], rel=1e-3)
    assert (out / "encoder.ckpt").is_file()


# ------------------------------------------------------------------ BEST-RQ, budgets, fixed steps


@pytest.fixture(scope="module")
def bestrq_run(tiny_librispeech, tmp_path_factory):
    out = tmp_path_factory.mktemp("bestrq") / "run"
    run_recipe(
        "pretrain_bestrq.py", "hparams/bestrq.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=8", "--codebook_size=64", *TINY_MODEL,
    )
    return out


def test_bestrq_loss_falls_and_code_accuracy_rises(bestrq_run):
    stats = log_stats(bestrq_run / "train_log.txt")
    assert [s["epoch"] for s in stats] == list(range(1, 9))
    first, last = stats[0], stats[-1]
    assert last["train loss"] < 0.9 * first["train loss"]
    assert last["train code_acc"] > max(first["train code_acc"], 2 / 64)  # chance: 1 / codebook
    import json

    summary = json.loads((bestrq_run / "pretrain_summary.json").read_text())
    assert summary["audio_s_per_s"] > 0 and summary["flops_per_audio_second"] > 0
    assert summary["peak_memory_mib"] > 0 and summary["budget_seconds"] is None


def test_encoder_use_tool_scores_a_bestrq_run_with_and_without_its_encoder(bestrq_run, tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("tool_encoder_use", ROOT / "tools" / "studies" / "bestrq_encoder_use.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(bestrq_run), "--names", "tiny", "--batches", "2", "--docs", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bestrq_encoder_use.json").read_text())["runs"]["tiny"]
    assert result["targets"] > 0 and result["decoder"] == "none (linear head)" and not result["drop_masked"]
    assert all(0 <= result[mode] <= 100 for mode in tool.MODES)
    assert str(tmp_path) not in (tmp_path / "bestrq_encoder_use.md").read_text()
    with pytest.raises(SystemExit, match="no hyperparams.yaml here"):
        tool.main([str(tmp_path), "--docs", str(tmp_path)])


def test_ctc_runs_a_fixed_step_count_from_the_bestrq_encoder(bestrq_run, tiny_librispeech, tmp_path):
    """The BEST-RQ encoder loads with its position embedding; --optimizer_step_limit stops
    training after exactly that many steps however small an epoch is."""
    out = tmp_path / "ctc"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=1000", "--optimizer_step_limit=5",
        "--train_samples_per_epoch=8", "--select_on=CER", "--speed_perturb=False",
        f"--pretrained_encoder={bestrq_run / 'encoder.ckpt'}", *TINY_MODEL, *PRETRAINED_ARCHITECTURE,
    )
    assert [s["epoch"] for s in log_stats(out / "train_log.txt")] == [1, 2, 3]  # 2 steps per epoch
    assert "kept initial values of []" in (out / "log.txt").read_text()  # PE loaded too
    import json

    result = json.loads((out / "results.json").read_text())["test-clean"]
    assert result["steps_trained"] == 5 and result["selected_on"] == "CER"
    assert result["checkpoint_steps"] in (2, 4, 5)  # the end of an epoch, or the last step


def test_dropped_bestrq_learns_and_its_encoder_fine_tunes_as_bestrq_s(tiny_librispeech, tmp_path):
    """BEST-RQ with the masked patches dropped from a conformer (convolution off): the loss falls,
    and asr_ctc.py loads the encoder, position embedding included, switching the convolution on."""
    import json

    pre = tmp_path / "dropped"
    run_recipe(
        "pretrain_bestrq.py", "hparams/bestrq.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={pre}", "--number_of_epochs=8", "--codebook_size=64", "--drop_masked=True",
        "--encoder_kind=conformer", "--conv_mode=off", "--decoder_heads=2", *TINY_MODEL,
    )
    stats = log_stats(pre / "train_log.txt")
    assert stats[-1]["train loss"] < 0.9 * stats[0]["train loss"]
    assert stats[-1]["train code_acc"] > max(stats[0]["train code_acc"], 2 / 64)
    out = tmp_path / "ctc"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=1000", "--optimizer_step_limit=2",
        "--train_samples_per_epoch=8", "--speed_perturb=False", f"--pretrained_encoder={pre / 'encoder.ckpt'}",
        *TINY_MODEL, *[a.replace("transformer", "conformer") for a in PRETRAINED_ARCHITECTURE],
        "--pretrained_conv_mode=off",
    )
    assert "kept initial values of []" in (out / "log.txt").read_text()  # PE and all weights loaded
    assert json.loads((out / "results.json").read_text())["test-clean"]["steps_trained"] == 2


def test_pretraining_stops_at_its_time_budget_and_keeps_snapshots(tiny_librispeech, tmp_path):
    import json

    out = tmp_path / "budget"
    run_recipe(
        "pretrain.py", "hparams/pp.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=100000", "--max_train_seconds=2",
        "--snapshot_seconds=[1]", *TINY_MODEL,
    )
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert 2.0 <= summary["train_seconds"] < 4.0  # stops within a step or two of the budget
    assert summary["snapshots"] == ["encoder_at_1s.ckpt"]
    assert (out / "encoder_at_1s.ckpt").is_file() and (out / "encoder.ckpt").is_file()


@pytest.mark.parametrize(
    "override, message",
    [
        ("--optimizer_step_limit=abc", "--optimizer_step_limit must be an integer, got 'abc'"),
        ("--select_on=PER", "select_on must be 'WER' or 'CER', got 'PER'"),
    ],
)
def test_ctc_refuses_bad_step_limit_and_selection_key(override, message, tmp_path, recipe_refusal):
    err = recipe_refusal(RECIPES / "asr_ctc.py", "hparams/ctc.yaml", f"--output_folder={tmp_path}", override)
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "variant, overrides",
    [
        ("anchors-fast", ["--anchor_ratio=1.0", "--target_ratio=0.5"]),
        ("relative", ["--position_target=relative", "--max_offset=4"]),
    ],
)
def test_pretext_variants_run_on_crops(variant, overrides, tiny_librispeech, tmp_path):
    """The recipe's pretext switches, end to end on 1-s crops: metrics against the variant's own
    chance, the encoder exported, the run marked done. (That the variants *learn* is shown
    on a toy sequence in tests/unittests/position/test_pretext_variants.py and on speech by
    tools/studies/pretext_sweep.py: a tiny corpus gives too few steps.)"""
    import json

    out = tmp_path / variant
    run_recipe(
        "pretrain.py", "hparams/pp.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=3", "--crop_seconds=1.0", *TINY_MODEL,
        *overrides,
    )
    stats = log_stats(out / "train_log.txt")
    assert [s["epoch"] for s in stats] == [1, 2, 3]
    last = stats[-1]
    if variant == "relative":  # 9 offset classes, offset 0 never drawn: chance near 1/8
        assert 0.1 < last["valid chance_acc"] < 0.16
        assert last["valid chance_err"] < 4.0
    else:  # 25 patches of 40 ms per crop
        assert last["valid chance_acc"] == pytest.approx(0.04, abs=0.002)
        assert last["valid chance_err"] == pytest.approx(8.3, abs=0.3)
    done = json.loads((out / "pretrain_done.json").read_text())
    assert done["optimizer_steps"] > 0 and (out / "encoder.ckpt").is_file()


def test_ctc_linear_probe_trains_only_the_ctc_layer(pretrain_run, tiny_librispeech, tmp_path):
    out = tmp_path / "probe"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=2", "--speed_perturb=False",
        f"--pretrained_encoder={pretrain_run / 'encoder.ckpt'}", "--freeze_encoder=True",
        *TINY_MODEL, *PRETRAINED_ARCHITECTURE,
    )
    pretrained = torch.load(pretrain_run / "encoder.ckpt")
    ckpt = sorted((out / "save").glob("CKPT+*"))[-1]
    probed = torch.load(ckpt / "encoder.ckpt")
    assert all(torch.equal(pretrained[k], probed[k]) for k in pretrained)
    stats = log_stats(out / "train_log.txt")
    assert stats[-1]["train loss"] < stats[0]["train loss"]


# ------------------------------------------------------------------ shortcut-free variants, joint objective


@pytest.fixture(scope="module")
def joint_run(tiny_librispeech, tmp_path_factory):
    out = tmp_path_factory.mktemp("joint") / "run"
    run_recipe(
        "pretrain_joint.py", "hparams/joint.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=8", "--codebook_size=64", "--chunk_seconds=1.0",
        "--position_weight=1.0", *TINY_MODEL,
    )
    return out


def test_joint_objective_learns_both_pretexts(joint_run):
    stats = log_stats(joint_run / "train_log.txt")
    assert [s["epoch"] for s in stats] == list(range(1, 9))
    first, last = stats[0], stats[-1]
    assert last["train loss"] < 0.9 * first["train loss"]
    assert last["train code_loss"] < first["train code_loss"] and last["train pos_loss"] < first["train pos_loss"]
    assert last["train code_acc"] > max(first["train code_acc"], 2 / 64)
    assert last["train chance_acc"] == pytest.approx(0.04, abs=0.002)       # 25 patches per 1-s chunk
    assert last["train pos_acc"] > 1.5 * last["train chance_acc"]


def test_ctc_loads_the_joint_encoder_as_bestrq_s(joint_run, tiny_librispeech, tmp_path):
    out = tmp_path / "ctc"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}", f"--output_folder={out}",
        "--number_of_epochs=1000", "--optimizer_step_limit=2", "--train_samples_per_epoch=8",
        "--speed_perturb=False", "--freeze_encoder=True", "--pretrained_conv_mode=on", "--conv_mode=on",
        f"--pretrained_encoder={joint_run / 'encoder.ckpt'}", *TINY_MODEL, "--frontend=patch",
        "--encoder_kind=conformer", "--null_key=True", "--position_embedding=learned",
    )
    assert "kept initial values of []" in (out / "log.txt").read_text()  # PE and convolution loaded too
    ckpt = sorted((out / "save").glob("CKPT+*"))[-1]
    pretrained, probed = torch.load(joint_run / "encoder.ckpt"), torch.load(ckpt / "encoder.ckpt")
    assert all(torch.equal(pretrained[k], probed[k]) for k in pretrained)


def test_one_pass_joint_learns_both_pretexts_and_fine_tunes_as_a_position_encoder(tiny_librispeech, tmp_path):
    """Dropped BEST-RQ + position prediction in one pass (hparams/joint_dropped.yaml): both losses
    fall, both pretexts beat chance, and asr_ctc.py loads the encoder (no PE in it: the learned PE
    starts at zero; the convolution, off in pretraining, is switched on)."""
    pre = tmp_path / "one_pass"
    run_recipe(
        "pretrain_joint.py", "hparams/joint_dropped.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={pre}", "--number_of_epochs=8", "--codebook_size=64", "--position_weight=1.0",
        "--encoder_kind=conformer", *TINY_MODEL,
    )
    stats = log_stats(pre / "train_log.txt")
    first, last = stats[0], stats[-1]
    assert last["train code_loss"] < first["train code_loss"] and last["train pos_loss"] < first["train pos_loss"]
    assert last["train code_acc"] > max(first["train code_acc"], 2 / 64)
    assert last["train pos_acc"] > 1.5 * last["train chance_acc"]
    out = tmp_path / "ctc"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}", f"--output_folder={out}",
        "--number_of_epochs=1000", "--optimizer_step_limit=2", "--train_samples_per_epoch=8",
        "--speed_perturb=False", f"--pretrained_encoder={pre / 'encoder.ckpt'}", *TINY_MODEL,
        *[a.replace("transformer", "conformer") for a in PRETRAINED_ARCHITECTURE], "--pretrained_conv_mode=off",
    )
    log = (out / "log.txt").read_text()
    assert "kept initial values of ['position_embedding.weight']" in log, log[-2000:]
    assert json.loads((out / "results.json").read_text())["test-clean"]["steps_trained"] == 2


def test_joint_refuses_a_negative_weight(tmp_path, recipe_refusal):
    err = recipe_refusal(RECIPES / "pretrain_joint.py", "hparams/joint.yaml", f"--output_folder={tmp_path}",
                         "--position_weight=-1")
    assert "position_weight must be >= 0, got -1" in err


@pytest.fixture(scope="module")
def gapped_views_run(tiny_librispeech, tmp_path_factory):
    out = tmp_path_factory.mktemp("gapped") / "run"
    run_recipe(
        "pretrain.py", "hparams/pp_conformer.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=3", "--crop_seconds=1.0", "--anchor_ratio=1.0",
        "--min_gap=1", "--views=True", *TINY_MODEL,
    )
    return out


def test_gap_and_views_switches_run_end_to_end(gapped_views_run):
    """The recipe's keys reach the pretext (that no scored target has context within the gap is
    asserted in tests/unittests/position/test_pretext_variants.py)."""
    stats = log_stats(gapped_views_run / "train_log.txt")
    assert [s["epoch"] for s in stats] == [1, 2, 3]
    assert stats[-1]["valid chance_acc"] == pytest.approx(0.04, abs=0.002)
    assert (gapped_views_run / "encoder.ckpt").is_file()


def test_coarse_targets_have_span_classes(tiny_librispeech, tmp_path):
    out = tmp_path / "coarse"
    run_recipe(
        "pretrain.py", "hparams/pp_conformer.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=1", "--crop_seconds=1.0", "--coarse=5", *TINY_MODEL,
    )
    assert log_stats(out / "train_log.txt")[-1]["valid chance_acc"] == pytest.approx(0.2, abs=0.01)  # 5 spans


def test_shortcut_diagnosis_splits_targets_by_distance(gapped_views_run, tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("tool_shortcut", ROOT / "tools" / "studies" / "pretext_shortcut.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(gapped_views_run), "--names", "gapped", "--passes", "1", "--docs", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "pretext_shortcut.json").read_text())["runs"]["gapped"]
    shares = [v["share"] for v in result["by_distance"].values()]
    assert sum(shares) == pytest.approx(100, abs=0.5) and result["trained_min_gap"] == 1
    assert result["data"] == "dev-clean crops" and result["patch_ms"] == 40
    assert all(result["chance_accuracy"] <= v["chance_given_anchors"] <= 100
               for v in result["by_distance"].values() if v["targets"])
    edges = result["by_edge"]
    assert sum(v["targets"] for v in edges.values()) == sum(v["targets"] for v in result["by_distance"].values())
    assert all(v["targets_far_from_anchors"] <= v["targets"] for v in edges.values())
    assert edges["0"]["targets"] > 0 and "### Accuracy by distance to the crop edge" in (
        tmp_path / "pretext_shortcut.md").read_text()
    gaps = result["by_gap"]
    assert gaps["0"]["targets"] > gaps["1"]["targets"] > gaps["2"]["targets"] > 0
    assert gaps["2"]["chance_given_gap"] > gaps["0"]["chance_given_gap"] >= gaps["0"]["chance_uniform"]
    assert (tmp_path / "pretext_shortcut.png").is_file() and "### Scored with a gap" in (
        tmp_path / "pretext_shortcut.md").read_text()
    with pytest.raises(SystemExit, match="no hyperparams.yaml here"):
        tool.main([str(tmp_path), "--docs", str(tmp_path)])


def test_shortcut_tool_trains_then_resumes_the_study_pretext(tiny_librispeech, tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("tool_shortcut_train", ROOT / "tools" / "studies" / "pretext_shortcut.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    run = tmp_path / "runs" / "anchors"
    common = [str(run), "--passes", "1", "--docs", str(tmp_path / "docs"), "--corpus", str(tiny_librispeech),
              "--corpus-size", "tiny", "--model=--num_layers=2 --d_model=32 --nhead=4 --d_ffn=64"]
    assert tool.main([*common, "--train-epochs", "1"]) == 0
    assert [s["epoch"] for s in log_stats(run / "train_log.txt")] == [1]
    assert tool.main([*common, "--train-epochs", "2"]) == 0
    assert [s["epoch"] for s in log_stats(run / "train_log.txt")] == [1, 2]      # resumed, not restarted
    report = json.loads((tmp_path / "docs" / "pretext_shortcut.json").read_text())
    assert report["runs"]["anchors"]["anchor_ratio"] == 1.0
