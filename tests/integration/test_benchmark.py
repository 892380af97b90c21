"""tools/benchmark.py end to end on the tiny corpus (--preset quick): every run, the table,
the JSON and the plot, with equal pretraining time and equal fine-tuning steps."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_quick_preset_compares_at_equal_time_and_steps(tiny_librispeech, tmp_path):
    out = tmp_path / "bench"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--preset", "quick",
         "--out", str(out), "--corpus", str(tiny_librispeech)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())

    pre = results["pretraining"]
    assert set(pre) == {"mp3", "bestrq", "mp3_c0.5"}
    for summary in pre.values():
        assert summary["budget_seconds"] == 3.0
        assert 3.0 <= summary["train_seconds"] < 6.0
        assert 0 < summary["ceiling_fraction"] < 1
    assert pre["mp3"]["pretext_chance"] > 0 and pre["bestrq"]["pretext_chance"] is None

    runs = {r["run"]: r for r in results["runs"]}
    assert set(runs) == {
        "ctc_scratch_10s", "ctc_mp3_10s", "ctc_bestrq_10s", "ctc_scratch_30s", "ctc_mp3_30s",
        "ctc_bestrq_30s", "ctc_mp3_c0.5_30s", "ctc_mp3_half_30s", "ctc_bestrq_half_30s",
        "ctc_scratch_noPE_30s", "ctc_mp3_noPE_30s",
    }
    for name, run in runs.items():
        for split in ("dev-clean", "test-clean"):
            assert run["results"][split]["steps_trained"] == 6, name  # equal fine-tuning steps
            assert 0 <= run["results"][split]["CER"] <= 200
    assert runs["ctc_mp3_half_30s"]["pretrain_s"] == 1.5
    assert "encoder_at_1.5s.ckpt" in (out / "ctc_mp3_half_30s" / "log.txt").read_text()
    assert runs["ctc_scratch_noPE_30s"]["pe"] == "none"

    table = (out / "results.md").read_text()
    assert table.count("\n| ctc_") == 11 and "% matmul ceiling" in table
    assert (out / "wer_vs_pretraining_time.png").stat().st_size > 10_000
