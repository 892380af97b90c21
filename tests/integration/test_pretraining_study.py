"""tools/studies/pretraining_study.py end to end on the tiny corpus (--preset quick): every pretrainer
and row, equal pretraining time, equal fine-tuning steps, the probe, the speed rows, the JSON
keys other versions compare against, and resuming without rerunning."""

import json
import os
import sys
from pathlib import Path

from speechpos.experiments.runs import run_python

ROOT = Path(__file__).resolve().parents[2]


def study(tiny_librispeech, out, docs, *extra):
    env = dict(os.environ)  # output is read once the run has ended: no PYTHONUNBUFFERED (it would cost a fresh interpreter)
    return run_python(
        [sys.executable, str(ROOT / "tools" / "studies" / "pretraining_study.py"), "--preset", "quick",
         "--out", str(out), "--docs", str(docs), "--corpus", str(tiny_librispeech),
         "--pretrainers", "MP3 (as built)", "MP3 + anchors", "BEST-RQ", *extra],
        capture_output=True, text=True, env=env, timeout=1200,
    )


def test_study_quick_preset_runs_every_row_and_writes_the_report(tiny_librispeech, tmp_path):
    out, docs = tmp_path / "study", tmp_path / "docs"
    proc = study(tiny_librispeech, out, docs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((docs / "pretraining_study.json").read_text())

    rows = report["rows"]
    names = {r["name"] for r in rows}
    assert names == {
        "scratch, sinusoidal PE", "MP3 (as built), zero-init PE", "MP3 + anchors, zero-init PE",
        "BEST-RQ, zero-init PE", "MP3 + anchors, no PE", "probe: frozen MP3 + anchors",
        "probe: frozen random encoder",
    }
    assert {r["labels"] for r in rows} == {"10s", "30s"}
    for row in rows:
        assert set(row) >= {"name", "labels", "seed", "test_clean_wer", "test_clean_cer",
                            "pretrain_minutes", "dev_position_accuracy", "chance_position_accuracy"}
        assert 0 <= row["test_clean_cer"] <= 200
        assert 0 <= row["test_other_cer"] <= 200  # the corpus's held-out-engine split too
    anchors = next(r for r in rows if r["name"] == "MP3 + anchors, zero-init PE")
    assert anchors["chance_position_accuracy"] > 0 and anchors["pretrain_minutes"] >= 0.05
    for name, pre in report["pretraining"].items():
        assert 0.05 <= pre["pretrain_minutes"] < 0.1, name  # the same 3-s training budget
    for run in (out).glob("ctc_*"):
        result = json.loads((run / "results.json").read_text())["test-clean"]
        assert result["steps_trained"] == 6, run.name  # the same fine-tuning budget
    assert report["step_speedup_fp32"] > 0 and report["step_speedup_bf16"] > 0
    assert (docs / "pretraining_study.png").stat().st_size > 10_000
    assert "### Pretraining (equal training wall time)" in (docs / "pretraining_study.md").read_text()

    # Seed 1 limited away on both budgets: nothing new runs, the report names the command.
    again = study(tiny_librispeech, out, docs, "--seeds", "0", "1", "--limit", "10s=0", "--limit", "30s=0")
    assert again.returncode == 0 and "started" not in again.stdout, again.stdout[-3000:]
    report = json.loads((docs / "pretraining_study.json").read_text())
    assert {r["seed"] for r in report["rows"]} == {0} and len(report["rows"]) == len(rows)
    assert "--limit 10s=0 --limit 30s=0" in report["command"]
    text = (docs / "pretraining_study.md").read_text()
    assert "### Against the study's goals" in text
    assert text.rstrip().endswith(f"```bash\n{report['command']}\n```")  # the command last, in a code block

    # --report-only runs nothing: seed 1's fine-tunings are listed as not run, seed 0's rows kept.
    partial = study(tiny_librispeech, out, docs, "--seeds", "0", "1", "--report-only", "--note", "A note.")
    assert partial.returncode == 0 and "started" not in partial.stdout, partial.stdout[-3000:]
    report = json.loads((docs / "pretraining_study.json").read_text())
    assert {r["seed"] for r in report["rows"]} == {0} and len(report["rows"]) == len(rows)
    assert "A note. Not run (no result): ctc_scratch_sinusoidal_pe_10s_1, " in report["setup"]

    # --report names the files: a separate invocation leaves the main report as it was.
    main_report = (docs / "pretraining_study.md").read_text()
    other = study(tiny_librispeech, out, docs, "--labels", "30s", "--report-only", "--report", "study_30s")
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    assert {r["labels"] for r in json.loads((docs / "study_30s.json").read_text())["rows"]} == {"30s"}
    assert (docs / "study_30s.png").is_file() and (docs / "pretraining_study.md").read_text() == main_report

    # --kept-rows takes rows from an earlier report instead of training them again: nothing starts,
    # the rows are the earlier report's, marked, and the setup says where they came from.
    earlier = tmp_path / "earlier.json"
    earlier.write_text((docs / "study_30s.json").read_text())
    kept = study(tiny_librispeech, out, docs, "--labels", "30s",
                 "--no-probe", "--kept-rows", str(earlier), "scratch, sinusoidal PE", "--report", "kept")
    assert kept.returncode == 0 and "started" not in kept.stdout, kept.stdout[-3000:] + kept.stderr[-3000:]
    report = json.loads((docs / "kept.json").read_text())
    before = {(r["name"], r["seed"]): r for r in json.loads(earlier.read_text())["rows"]}
    scratch_rows = [r for r in report["rows"] if r["name"] == "scratch, sinusoidal PE"]
    assert [r["kept_from"] for r in scratch_rows] == ["earlier.json"]
    assert scratch_rows[0]["test_clean_wer"] == before[("scratch, sinusoidal PE", 0)]["test_clean_wer"]
    assert "Taken from `earlier.json` (not trained again): scratch, sinusoidal PE (0)" in report["setup"]
    missing = study(tiny_librispeech, out, docs, "--labels", "30s", "--no-probe", "--seeds", "0", "1",
                    "--kept-rows", str(earlier), "scratch, sinusoidal PE", "--report", "kept")
    assert missing.returncode == 1
    assert "--kept-rows: earlier.json has no row 'scratch, sinusoidal PE' at 30s, seed 1" in missing.stderr

    # Scaling rows: the best position row and BEST-RQ also pretrained for 0.1 min (the 0.05-min
    # runs above are kept and join the curve), fine-tuned at 30 s, the gain tabled and plotted.
    scaled = study(tiny_librispeech, out, docs, "--labels", "30s", "--no-probe", "--scaling-minutes", "0.1",
                   "--scaling-labels", "30s")
    assert scaled.returncode == 0, scaled.stdout[-3000:] + scaled.stderr[-3000:]
    assert scaled.stdout.count("started") == 4, scaled.stdout[-3000:]  # 2 pretrainings + 2 fine-tunings
    report = json.loads((docs / "pretraining_study.json").read_text())
    assert [(r["pretrainer"], r["minutes"]) for r in report["scaling"]] == [
        ("MP3 + anchors", 0.05), ("MP3 + anchors", 0.1), ("BEST-RQ", 0.05), ("BEST-RQ", 0.1)]
    assert 0.1 <= report["pretraining"]["BEST-RQ @ 0.1 min"]["pretrain_minutes"] < 0.15
    for r in report["scaling"]:
        assert r["relative_gain_pct"] == round(100 * (r["scratch_wer"] - r["test_clean_wer"]) / r["scratch_wer"], 1)
    assert (docs / "pretraining_scaling.png").stat().st_size > 10_000
    assert "### Scaling: gain over scratch" in (docs / "pretraining_study.md").read_text()


def test_study_rejects_a_limit_on_a_budget_it_does_not_run(tmp_path):
    proc = run_python(
        [sys.executable, str(ROOT / "tools" / "studies" / "pretraining_study.py"), "--preset", "quick",
         "--out", str(tmp_path), "--limit", "10h=0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--limit wants NAME=SEEDS with NAME one of ['10s', '30s'], got '10h=0'" in proc.stderr

