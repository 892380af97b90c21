"""tools/run_demo.py --quick: the README's main job end to end on a tiny corpus and model."""

import json
import os
import sys
from pathlib import Path

from speechpos.experiments.runs import run_python

ROOT = Path(__file__).resolve().parents[2]


def test_demo_quick_trains_both_rows_and_prints_examples(tmp_path):
    env = dict(os.environ)  # output is read once the run has ended: no PYTHONUNBUFFERED (it would cost a fresh interpreter)
    proc = run_python(
        [sys.executable, str(ROOT / "tools" / "run_demo.py"), "--quick", "--out", str(tmp_path / "demo"),
         "--corpus", str(tmp_path / "LibriSpeech"), "--examples", "2", "--docs", str(tmp_path / "docs")],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (tmp_path / "demo" / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| scratch") or line.startswith("| mp3")]
    assert len(rows) == 2 and all("| 12 |" in r for r in rows)  # both rows trained 12 steps
    header = next(line for line in text.splitlines() if line.startswith("| run |")).split(" | ")
    for split in ("test-clean", "test-other"):  # greedy and LM WER of both test splits, filled in
        for column in (f"{split} WER", f"{split} WER + LM"):
            k = header.index(column)
            assert all(float(r.split(" | ")[k]) >= 0 for r in rows), column
    assert text.count("REF: ") == 2 and text.count("HYP: ") == 2
    pretext = next(line for line in text.splitlines() if line.startswith("pretraining: "))
    assert "dev position accuracy" in pretext and "(chance " in pretext
    assert (tmp_path / "demo" / "pretrain" / "encoder.ckpt").is_file()
    assert (tmp_path / "LibriSpeech-tiny" / "corpus.json").is_file()
    assert "[3/3] results" in proc.stdout
    report = (tmp_path / "docs" / "demo.md").read_text()  # the time figure has a report behind it
    phases = json.loads((tmp_path / "docs" / "demo.json").read_text())["phases"]
    assert phases["corpus_made_here"] is True
    assert 0 < phases["corpus_seconds"] <= phases["total_seconds"]
    assert 0 < phases["training_and_evaluation_seconds"] <= phases["total_seconds"]
    assert f"| total | {phases['total_seconds']} |" in report and "| scratch |" in report
    assert str(tmp_path) not in report and "--quick" in report
