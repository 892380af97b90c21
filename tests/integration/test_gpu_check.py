"""tools/gpu/gpu_check.sh in its CPU quick mode, on a corpus carried as a GPU node gets it (packed
to Opus by tools/data/pack_corpus.py and unpacked, no speech engine used): both recipes run on the
device it picks, each stopped by its training-time budget, and the table names the device beside
throughput, warm-up, memory and WER."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_quick_runs_both_stages_on_time_budgets(tiny_librispeech, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    for verb, src, dst in (("pack", tiny_librispeech, "packed"), ("unpack", tmp_path / "packed", "carried")):
        subprocess.run([sys.executable, str(ROOT / "tools" / "data" / "pack_corpus.py"), verb, str(src),
                        str(tmp_path / dst)], check=True, capture_output=True, env=env)
    carried = tmp_path / "carried"
    assert not list(carried.rglob("*.ogg")) and len(list(carried.rglob("*.flac"))) == len(
        list(Path(tiny_librispeech).rglob("*.flac")))
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "gpu" / "gpu_check.sh"), "--quick", "--device", "cpu",
         "--corpus", str(carried), "--out", str(tmp_path / "check"),
         "--pretrain-seconds", "3", "--ctc-seconds", "3", "--ctc-steps", "100000"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    pre, ctc = report["rows"]
    assert pre["device"] == ctc["device"] == "cpu" and report["device_name"].startswith("CPU")
    for row in (pre, ctc):
        assert 3 <= row["train_s"] < 60 and row["audio_s_per_s"] > 0 and row["peak_memory_mib"] > 0
        # The first step (where compilation would land) is timed on its own; CPU: no compile.
        assert 0 < row["first_step_s"] <= row["train_s"] and row["compiled"] is False
    # The CTC run stopped on its 3-s budget, far short of its 100,000-step schedule.
    assert 0 < ctc["steps"] < 100000
    assert "WER dev" in ctc["result"]
    assert "dev position accuracy" in pre["result"]
    assert "| CTC fine-tuning (1 h of labels) | cpu |" in proc.stdout
