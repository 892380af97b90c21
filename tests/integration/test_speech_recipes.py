"""The LibriSpeech recipes run end to end on a tiny generated corpus.

One pretraining run and one CTC run (from its encoder) are shared by the tests of this file.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "LibriSpeech"
TINY_MODEL = [
    "--num_layers=2", "--d_model=64", "--nhead=4", "--d_ffn=128", "--dropout=0.0",
    "--patch_frames=4", "--batch_size=4", "--warmup_steps=10", "--lr=0.003",
]


def run_recipe(script, hparams, *args, check=True):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    proc = subprocess.run(
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


def test_repeated_override_is_refused(tmp_path):
    proc = run_recipe(
        "pretrain.py", "hparams/pp.yaml", f"--output_folder={tmp_path}", "--lr=1", "--lr=2", check=False
    )
    assert proc.returncode == 2
    assert "found duplicate key" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_data_folder_is_refused(tmp_path):
    missing = tmp_path / "no_such_corpus"
    proc = run_recipe(
        "pretrain.py", "hparams/pp.yaml", f"--output_folder={tmp_path / 'out'}",
        f"--data_folder={missing}", check=False,
    )
    assert proc.returncode == 2
    assert f"data_folder {missing} does not exist" in proc.stderr


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
        *[a for a in TINY_MODEL if not a.startswith("--patch_frames")],
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
        check=False,
    )
    assert proc.returncode != 0
    assert "was saved from a different architecture" in proc.stderr
    assert "keys of another shape" in proc.stderr


def test_cli_transcribes_and_extracts_features(ctc_run, tiny_librispeech, tmp_path):
    audio = sorted(Path(tiny_librispeech, "test-clean").rglob("*.flac"))[0]
    proc = subprocess.run(
        [sys.executable, "-m", "speechpos.cli", "transcribe", str(ctc_run), str(audio)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{audio}\t")
    assert set(lines[0].split("\t", 1)[1]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
    out = tmp_path / "f.npy"
    proc = subprocess.run(
        [sys.executable, "-m", "speechpos.cli", "features", str(ctc_run), str(audio), "--layer", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    import numpy as np

    feats = np.load(out)
    assert feats.shape[1] == 64 and feats.shape[0] > 0


def test_ddp_two_processes_on_cpu(tiny_librispeech, pretrain_run, tmp_path):
    """torchrun --nproc_per_node=2 with gloo: the conformer config (convolution off, so DDP
    must accept unused parameters) trains and both ranks log the same whole-epoch stats."""
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "pretrain.py",
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


def test_ctc_runs_a_fixed_step_count_from_the_bestrq_encoder(bestrq_run, tiny_librispeech, tmp_path):
    """The BEST-RQ encoder loads with its position embedding; --optimizer_step_limit stops
    training after exactly that many steps however small an epoch is."""
    out = tmp_path / "ctc"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_epochs=1000", "--optimizer_step_limit=5",
        "--train_samples_per_epoch=8", "--select_on=CER", "--speed_perturb=False",
        f"--pretrained_encoder={bestrq_run / 'encoder.ckpt'}", *TINY_MODEL,
    )
    assert [s["epoch"] for s in log_stats(out / "train_log.txt")] == [1, 2, 3]  # 2 steps per epoch
    assert "kept initial values of []" in (out / "log.txt").read_text()  # PE loaded too
    import json

    result = json.loads((out / "results.json").read_text())["test-clean"]
    assert result["steps_trained"] == 5 and result["selected_on"] == "CER"
    assert result["checkpoint_steps"] in (2, 4, 5)  # the end of an epoch, or the last step


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
def test_ctc_refuses_bad_step_limit_and_selection_key(override, message, tmp_path):
    proc = run_recipe("asr_ctc.py", "hparams/ctc.yaml", f"--output_folder={tmp_path}", override, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
