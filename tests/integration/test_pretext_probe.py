"""tools/studies/pretext_probe.py end to end on the tiny corpus (--preset quick): a position variant,
the joint objective and the random encoder, each probed frozen; the report's keys and the
verdict against the random encoder; resuming without rerunning."""

import json
import os
import sys
from pathlib import Path

from speechpos.experiments.runs import run_python

ROOT = Path(__file__).resolve().parents[2]


def probe(tiny_librispeech, out, docs, *rows):
    env = dict(os.environ)  # output is read once the run has ended: no PYTHONUNBUFFERED (it would cost a fresh interpreter)
    return run_python(
        [sys.executable, str(ROOT / "tools" / "studies" / "pretext_probe.py"), "--preset", "quick", "--jobs", "2",
         "--out", str(out), "--docs", str(docs), "--corpus", str(tiny_librispeech), "--rows", *rows],
        capture_output=True, text=True, env=env, timeout=1200,
    )


def test_probe_screen_runs_each_row_frozen_and_writes_the_report(tiny_librispeech, tmp_path):
    out, docs = tmp_path / "probe", tmp_path / "docs"
    rows = ["random", "min gap 2", "joint λ=0.3"]
    proc = probe(tiny_librispeech, out, docs, *rows)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((docs / "pretext_probe.json").read_text())
    assert [r["row"] for r in report["rows"]] == rows
    by_row = {r["row"]: r for r in report["rows"]}
    assert by_row["random"]["cer_over_random"] == 1.0 and "dev_position_accuracy" not in by_row["random"]
    assert by_row["min gap 2"]["chance_position_accuracy"] > 0
    assert "dev_code_accuracy" in by_row["joint λ=0.3"] and "dev_position_accuracy" in by_row["joint λ=0.3"]
    for name in rows:
        result = json.loads((out / f"probe_{name.replace(' ', '_').replace('λ=0.3', 'l0_3')}_0" / "results.json")
                            .read_text())["test-clean"]
        assert result["steps_trained"] == 6 and result["selected_on"] == "CER"
    verdict = report["verdict"]
    assert verdict["best_position_row"] == "min gap 2" and verdict["target_over_random"] == 0.85
    assert (docs / "pretext_probe.png").stat().st_size > 10_000

    again = probe(tiny_librispeech, out, docs, *rows)
    assert again.returncode == 0 and "started" not in again.stdout, again.stdout[-3000:]

    # The dropped-token rows, to a report of their own: dropped BEST-RQ probed with its learned PE and
    # the convolution off, the one-pass joint row with no position signal (each as pretrained); the
    # random encoder's probe is reused.
    # --out relative to the working folder (the recipes run from their own): resolved before use.
    dropped = probe(tiny_librispeech, os.path.relpath(out), docs, "random", "BEST-RQ, dropped", "dropped + position",
                    "--report", "probe_dropped")
    assert dropped.returncode == 0, dropped.stdout[-3000:] + dropped.stderr[-3000:]
    assert dropped.stdout.count("started") == 4, dropped.stdout[-3000:]  # 2 pretrainings + 2 probes
    report = json.loads((docs / "probe_dropped.json").read_text())
    assert set(report["verdict"]["cer_over_random"]) == {"BEST-RQ, dropped", "dropped + position"}
    assert "Probe CER against the frozen random encoder's (target <= 0.85x): BEST-RQ, dropped " in (
        docs / "probe_dropped.md").read_text()
    saved = {name: (out / f"probe_{name}_0" / "hyperparams.yaml").read_text()
             for name in ("best_rq_dropped", "dropped_position")}
    assert "position_embedding: learned" in saved["best_rq_dropped"]
    assert "position_embedding: none" in saved["dropped_position"]
    assert all("conv_mode: off" in text for text in saved.values())
    assert (docs / "pretext_probe.json").read_text() != (docs / "probe_dropped.json").read_text()
