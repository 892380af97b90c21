"""The from-scratch CTC baseline (hparams/ctc.yaml's defaults) and its report tool, on the tiny
generated corpus: training lowers the loss, greedy and LM results, the curve and the PNG."""

import json
import os
import sys
from pathlib import Path

from speechpos.experiments.plots import read_train_log, repo_relative
from speechpos.experiments.runs import run_python

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "LibriSpeech"
SMALL = ["--num_layers=2", "--d_model=48", "--nhead=4", "--d_ffn=96", "--max_batch_length_train=12",
         "--lr=0.003", "--warmup_steps=10"]


def test_baseline_tool_trains_tests_and_writes_its_report(tiny_librispeech, tmp_path):
    docs = tmp_path / "docs"
    env = dict(os.environ)  # output is read once the run has ended: no PYTHONUNBUFFERED (it would cost a fresh interpreter)
    proc = run_python(
        [sys.executable, str(ROOT / "tools" / "studies" / "ctc_baseline.py"), "--corpus", str(tiny_librispeech),
         "--size", "tiny", "--out", str(tmp_path / "out"), "--docs", str(docs), "--steps", "100",
         "--threads", "2", "--examples", "2", "--model-args", *SMALL],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((docs / "ctc_baseline.json").read_text())
    test = report["results"]["test-clean"]
    assert test["steps_trained"] == 100 and test["train_seconds"] > 0
    assert test["train_audio_s_per_s"] > 0 and test["precision"] in ("fp32", "bf16")
    assert 0 <= test["WER_lm"] and test["lm_text_overlap"]["sentences"] == 0
    tuned = report["lm_tuned_on_dev"]
    assert len(tuned["grid"]) == 20 and tuned["dev_WER_lm"] == min(g["dev_WER"] for g in tuned["grid"])
    assert 0 <= tuned["test_WER_lm"] and "tuned on dev-clean" in (docs / "ctc_baseline.md").read_text()
    curve = report["curve"]
    assert len(curve) >= 5
    assert [c["train_seconds"] for c in curve] == sorted(c["train_seconds"] for c in curve)
    assert len(report["examples"]) == 2 and report["examples"][0]["ref"]
    text = (docs / "ctc_baseline.md").read_text()
    assert "| test-clean |" in text and "REF: " in text and "HYP: " in text
    # both test splits, with the LM of the corpus's LM text by default
    other = report["results"]["test-other"]
    assert 0 <= other["WER"] and 0 <= other["WER_lm"] and "| test-other |" in text
    assert set(tuned["tests"]) == {"test-clean", "test-other"}
    assert test["lm"]["text"] == repo_relative(f"lm_text {tiny_librispeech / 'librispeech-lm-norm.txt'}")
    assert str(tiny_librispeech) not in text and str(tmp_path) not in (docs / "ctc_baseline.json").read_text()
    assert f"{test['lm']['words']} words" in text and 0 <= test["lm_out_of_lexicon"]["percent"] < 100
    assert (docs / "ctc_wer_vs_time.png").stat().st_size > 10_000
    # the user's path: the exported folder with its LM through `speechpos transcribe --lm`
    exported = report["export_check"]
    assert exported["files"] == test["utterances"] and exported["rtf_one_thread"] > 0
    assert exported["lm"]["text"] == test["lm"]["text"] and exported["lm"]["lm_weight"] == test["lm"]["lm_weight"]
    assert abs(exported["WER_lm"] - test["WER_lm"]) <= 0.5, (exported, test)
    assert tuned["tests"]["test-clean"]["lm_search_rtf"] > 0
    assert f"`speechpos transcribe --lm` of the {exported['files']} test-clean files" in text

    epochs = [r for r in read_train_log(tmp_path / "out" / "run" / "train_log.txt") if "epoch" in r]
    assert epochs[-1]["train"]["loss"] < 0.8 * epochs[0]["train"]["loss"]
    assert epochs[-1]["valid"]["loss"] < epochs[0]["valid"]["loss"]
    assert epochs[-1]["valid"]["CER"] < epochs[0]["valid"]["CER"] - 10  # 92 -> 70 when measured
    assert "position_embedding: sinusoidal" in (tmp_path / "out" / "run" / "hyperparams.yaml").read_text()
    assert "precision " in (tmp_path / "out" / "run" / "log.txt").read_text()  # auto's choice logged

    assert "asr_ctc: finished" in proc.stdout

    # A finished run is reported again, not retrained; here beside a previous report, whose
    # curve and test results come along (the earlier report is read before it is overwritten).
    previous = tmp_path / "previous.json"
    previous.write_text((docs / "ctc_baseline.json").read_text())
    again = run_python(
        [sys.executable, str(ROOT / "tools" / "studies" / "ctc_baseline.py"), "--corpus", str(tiny_librispeech),
         "--size", "tiny", "--out", str(tmp_path / "out"), "--docs", str(docs), "--steps", "100",
         "--threads", "2", "--previous", str(previous), "--previous-label", "the same run, earlier",
         "--model-args", *SMALL],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "asr_ctc: done already, kept" in again.stdout and "asr_ctc: started" not in again.stdout
    both = json.loads((docs / "ctc_baseline.json").read_text())
    assert both["previous"]["curve"] == report["curve"] and both["previous"]["label"] == "the same run, earlier"
    assert "previous" not in both["previous"]
    text = (docs / "ctc_baseline.md").read_text()
    assert "## Against the previous run" in text and "| the same run, earlier |" in text


def run_ctc(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return run_python([sys.executable, str(RECIPES / "asr_ctc.py"), *args], cwd=RECIPES,
                          capture_output=True, text=True, env=env, timeout=300)


def test_asr_ctc_without_an_hparams_file_uses_ctc_yaml(tmp_path):
    missing = tmp_path / "no_such_corpus"
    proc = run_ctc(f"--output_folder={tmp_path / 'out'}", f"--data_folder={missing}")
    assert proc.returncode == 2
    assert f"data_folder {missing} does not exist" in proc.stderr
    assert "position_embedding: sinusoidal" in (tmp_path / "out" / "hyperparams.yaml").read_text()


def test_a_pretrained_encoder_is_refused_behind_the_conv_frontend(tiny_librispeech, tmp_path):
    proc = run_ctc(
        "hparams/ctc.yaml", f"--output_folder={tmp_path / 'out'}", f"--data_folder={tiny_librispeech}",
        f"--pretrained_encoder={tmp_path / 'encoder.ckpt'}", "--frontend=conv", *SMALL,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: pretrained encoders use the patch front-end: add --frontend=patch (got frontend: "
        f"'conv' with pretrained_encoder {tmp_path / 'encoder.ckpt'})"
    )


def test_ablation_tool_reports_each_variant_at_equal_steps(tiny_librispeech, tmp_path):
    docs = tmp_path / "docs"
    proc = run_python(
        [sys.executable, str(ROOT / "tools" / "studies" / "ctc_ablation.py"), "--corpus", str(tiny_librispeech),
         "--size", "tiny", "--out", str(tmp_path / "out"), "--docs", str(docs), "--steps", "6",
         "--variants", "baseline", "conv-frontend", "--model-args", *SMALL],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((docs / "ctc_ablation.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["baseline", "conv-frontend"]
    assert all(r["steps"] == 6 and r["train_minutes"] >= 0 and r["test_CER"] >= 0 for r in rows)
    assert rows[1]["overrides"] == ["--frontend=conv"]
    assert "frontend: conv" in (tmp_path / "out" / "conv-frontend" / "hyperparams.yaml").read_text()
    assert "| conv-frontend |" in (docs / "ctc_ablation.md").read_text()
