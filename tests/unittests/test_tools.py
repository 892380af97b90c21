"""The measurement tools: train-log parsing and plots, the position-leak probe, the step bench."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechpos.experiments.bench import bench_pretrain_step, blind_position_error, measure_leak
from speechpos.experiments.plots import normalize_rows, parse_log_line, read_train_log, series

TOOLS = Path(__file__).resolve().parents[2] / "tools"

LOG = """\
epoch: 1, lr: 3.40e-04 - train loss: 5.48, train pos_acc: 7.70e-03, train pos_err: 82.52, train chance_acc: 4.60e-03, train chance_err: 77.69, train audio_s_per_s: 2.58e+02 - valid loss: 5.43, valid pos_acc: 7.80e-03, valid pos_err: 93.16, valid chance_acc: 4.70e-03, valid chance_err: 78.41
epoch: 2, lr: 6.80e-04 - train loss: 5.39, train pos_acc: 8.00e-03, train pos_err: 84.64, train chance_acc: 4.60e-03, train chance_err: 77.69, train audio_s_per_s: 16.90 - valid loss: 5.39, valid pos_acc: 8.70e-03, valid pos_err: 87.13, valid chance_acc: 4.70e-03, valid chance_err: 78.41
epoch: 3, lr: 1.02e-03 - train loss: 5.36, train pos_acc: 8.40e-03, train pos_err: 81.51, train chance_acc: 4.60e-03, train chance_err: 77.68, train audio_s_per_s: 2.49e+02 - valid loss: 5.39, valid pos_acc: 1.04e-02, valid pos_err: 80.55, valid chance_acc: 4.70e-03, valid chance_err: 78.41
"""


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", next(TOOLS.rglob(f"{name}.py")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(folder: Path, n: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_log.txt").write_text(LOG)
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 5, size=(n, n)) + 20 * np.eye(n, dtype=np.int64)
    confusion[-1] = 0  # a position never seen: drawn blank, not a division by zero
    np.save(folder / "valid_confusion.npy", confusion)
    return folder


def test_train_log_parser_reads_every_field(tmp_path):
    path = tmp_path / "train_log.txt"
    # A resumed run appends: the repeated epoch's last line wins.
    path.write_text(LOG + LOG.splitlines()[1].replace("loss: 5.39", "loss: 5.30", 1) + "\n\n")
    records = read_train_log(path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    first = records[0]
    assert first["lr"] == pytest.approx(3.4e-4)
    assert first["train"] == {
        "loss": 5.48, "pos_acc": 7.7e-3, "pos_err": 82.52, "chance_acc": 4.6e-3,
        "chance_err": 77.69, "audio_s_per_s": 258.0,
    }
    assert first["valid"]["pos_err"] == pytest.approx(93.16)
    assert records[1]["train"]["loss"] == pytest.approx(5.30)
    assert records[1]["train"]["audio_s_per_s"] == pytest.approx(16.9)
    assert series(records, "valid", "pos_acc") == ([1, 2, 3], [7.8e-3, 8.7e-3, 1.04e-2])
    assert parse_log_line("   ") is None


def test_normalize_rows_sums_to_one_and_blanks_empty_rows():
    probs = normalize_rows(np.array([[2, 2, 0], [0, 0, 0], [1, 0, 3]]))
    assert np.allclose(probs[[0, 2]].sum(1), 1.0)
    assert np.isnan(probs[1]).all()


def test_plot_script_writes_both_pngs(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    out = tmp_path / "plots"
    assert load_tool("plot_pretraining").main(["--run", str(run), "--out", str(out), "--first", "8"]) == 0
    for name in ("training_curves.png", "valid_confusion.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    table = capsys.readouterr().out
    assert "| epoch |" in table and "| 3 |" in table


def test_blind_error_is_below_uniform_chance():
    # Uniform guess over 0..9 from position t: mean |t - u| = 3.3; median guess: 2.5.
    assert blind_position_error([10]) == pytest.approx(2.5)


TINY_LEAK = dict(steps=80, d_model=32, nhead=4, num_layers=2, kernel_size=7, min_len=8,
                 max_len=16, batch=16, eval_batches=4, lr=3e-2, seed=0)


def test_leak_probe_restores_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    measure_leak("transformer", steps=1, d_model=16, nhead=2, num_layers=1, batch=2,
                 eval_batches=1, min_len=2, max_len=4)
    assert torch.equal(torch.rand(3), expected)


def test_leak_probe_finds_the_conformer_convolution_leak():
    leak = measure_leak("conformer", "on", inputs="constant", **TINY_LEAK)
    assert leak["accuracy"] > 3 * leak["chance_accuracy"]
    assert leak["position_error"] < 0.6 * leak["blind_position_error"]


@pytest.mark.parametrize(
    "kind, conv_mode, inputs",
    [("transformer", "off", "gaussian"), ("transformer", "off", "constant"),
     ("conformer", "shuffled", "constant")],
)
def test_leak_probe_unpositioned_encoders_sit_at_chance(kind, conv_mode, inputs):
    r = measure_leak(kind, conv_mode, inputs=inputs, **TINY_LEAK)
    assert abs(r["accuracy"] - r["chance_accuracy"]) < 0.03
    assert r["position_error"] > 0.9 * r["blind_position_error"]


def test_bench_quick_rows_have_positive_throughput():
    rows = bench_pretrain_step(
        kinds=("transformer", "conformer"), ratios=(1.0, 0.25), gathers=(True, False),
        dtypes=("fp32",), num_layers=1, d_model=16, nhead=2, d_ffn=32, seconds=0.8, batch=2,
        repeats=1, warmup=1,
    )
    assert len(rows) == 2 * 2 * 2
    assert all(r["audio_s_per_s"] > 0 and r["step_ms"] > 0 for r in rows)
    base = [r for r in rows if r["ratio"] == 1.0]
    assert all(r["speedup"] == 1.0 for r in base)
    gathered = {r["ratio"]: r["saved_mb"] for r in rows if r["kind"] == "transformer" and r["attention"] == "gathered"}
    masked = {r["ratio"]: r["saved_mb"] for r in rows if r["kind"] == "transformer" and r["attention"] == "masked"}
    # Gathering shrinks what attention keeps for backward; masking keeps all of it.
    assert gathered[0.25] < gathered[1.0] and masked[0.25] == masked[1.0]


@pytest.fixture
def keep_threads():
    """The tools set torch's thread count (a process-wide setting): restore it afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_script_quick_writes_markdown(tmp_path, capsys, keep_threads):
    out = tmp_path / "bench.md"
    tool = load_tool("bench_pretrain_step")
    assert tool.main(["--quick", "--kinds", "transformer", "--dtypes", "fp32", "bf16", "--calls",
                      "speechbrain", "fused", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| transformer | gathered | fused | bf16 | 0.1 |" in text
    assert "| transformer | masked | speechbrain | fp32 | 0.25 |" in text
    assert text.count("\n| transformer |") == 32  # 2 attentions x 2 calls x 2 dtypes x 4 ratios
    assert "speed-up" in capsys.readouterr().out


def test_objectives_bench_quick_times_every_study_pretrainer_in_bf16_too(tmp_path, keep_threads):
    tool = load_tool("bench_objectives")
    out = tmp_path / "objectives"
    assert tool.main(["--quick", "--threads", "1", "--dtype", "bf16", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    share = {r["pretrainer"]: r["encoder_tokens"] for r in report["rows"]}
    assert set(share) == {"BEST-RQ", "BEST-RQ, dropped", "BEST-RQ, dropped + position", "MP3 + anchors, coarse 4"}
    assert all(r["audio_s_per_s"] > 0 and r["dtype"] == "bf16" for r in report["rows"])
    # BEST-RQ runs every patch; dropped BEST-RQ the kept ones; the one-pass joint those and some masked.
    assert share["BEST-RQ"] == 1.0 and share["BEST-RQ, dropped"] < share["BEST-RQ, dropped + position"] < 1.0
    text = out.with_suffix(".md").read_text()
    assert "bf16." in text and "Dropped BEST-RQ + position prediction (one pass) against BEST-RQ" in text


def test_leak_probe_front_ends_add_no_position_to_a_transformer():
    for frontend in ("patch", "conv"):
        r = measure_leak("transformer", inputs="constant", frontend=frontend, **TINY_LEAK)
        assert abs(r["accuracy"] - r["chance_accuracy"]) < 0.03, frontend
        assert r["position_error"] > 0.9 * r["blind_position_error"], frontend


def test_ctc_step_bench_quick_writes_its_table(tmp_path):
    bench = load_tool("bench_ctc_step")
    out = tmp_path / "ctc.md"
    assert bench.main(["--quick", "--threads", "1", "--precisions", "fp32",
                       "--variants", "baseline (ctc.yaml)", "conv front-end", "--profile",
                       "--out", str(out)]) == 0
    report = __import__("json").loads(out.with_suffix(".json").read_text())
    rows = report["rows"]
    assert [(r["variant"], r["step"]) for r in rows] == [
        ("baseline (ctc.yaml)", "SpeechBrain attention"), ("baseline (ctc.yaml)", "fused attention"),
        ("conv front-end", "SpeechBrain attention"), ("conv front-end", "fused attention")]
    assert all(r["audio_s_per_s"] > 0 and r["threads"] == 1 for r in rows)
    assert all(r["speedup"] == 1.0 for r in rows if r["step"] == "SpeechBrain attention")
    # FLOPs counted and read against a measured matmul ceiling.
    assert report["ceilings_gflop_per_s"]["1xfp32"] > 0
    assert all(0 < r["ceiling_pct"] for r in rows)
    assert "| baseline (ctc.yaml) |" in out.read_text()
    shares = [r["self_cpu_pct"] for r in report["profile"]]
    assert len(shares) == 10 and shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.1
    assert "% of self CPU time" in out.read_text()


def test_study_targets_pick_the_best_row_on_dev_and_report_its_test_wer():
    study = load_tool("pretraining_study")

    def row(name, dev, test, seed=0):
        return {"name": name, "labels": "1h", "seed": seed, "dev_clean_wer": dev, "test_clean_wer": test,
                "test_clean_cer": test / 2}

    rows = [row("scratch, sinusoidal PE", 90.0, 86.0), row("scratch, sinusoidal PE", 90.0, 86.0, 1),
            # lowest test WER, but worse on dev: must not be the one reported
            row("MP3 + anchors, coarse 4, zero-init PE", 89.5, 70.0),
            row("joint λ=0.3, zero-init PE", 88.0, 80.0), row("BEST-RQ, zero-init PE", 88.5, 81.0)]
    text = study.target_lines(rows, ["1h"])
    assert "best position-prediction row on dev WER, `joint λ=0.3, zero-init PE`: test WER 80.0" in text
    assert "**7.0 % relative** (target 15 %: **not met**)" in text
    assert "`joint λ=0.3, zero-init PE` 80.0 (1 seed) against BEST-RQ 81.0 (1 seed): **beats BEST-RQ**" in text
    assert "BEST-RQ with no PE" not in text
    # BEST-RQ fine-tuned with no PE as well: the best position row meets masked prediction's
    # better fine-tuning, chosen on dev (here the no-PE one), and a BEST-RQ row is no position row.
    text = study.target_lines(rows + [row("BEST-RQ, no PE", 87.0, 79.0)], ["1h"])
    assert "best position-prediction row on dev WER, `joint λ=0.3, zero-init PE`" in text
    assert "- 1h: BEST-RQ with no PE 79.0 (1 seed), 8.1 % relative over scratch." in text
    assert ("- 1h: best position row `joint λ=0.3, zero-init PE` 80.0 (1 seed) against masked prediction's "
            "better row on dev, `BEST-RQ, no PE` 79.0 (1 seed): **does not beat BEST-RQ** on the mean.") in text
    # dropped BEST-RQ and the no-PE control, alone beside scratch: their gains, WER and CER
    extra = [row("BEST-RQ, dropped, zero-init PE", 88.0, 84.0), row("BEST-RQ, dropped, zero-init PE", 88.0, 82.0, 1),
             row("scratch, no PE", 89.0, 85.0)]
    text = study.target_lines([*rows[:2], *extra], ["1h"])
    assert ("- 1h: `BEST-RQ, dropped, zero-init PE` test WER 83.0 ± 1.4 (2 seeds) against scratch with sinusoidal PE "
            "86.0 ± 0.0 (2 seeds): 3.5 % relative WER, 3.5 % CER (41.5 against 43.0).") in text
    assert "- 1h: `scratch, no PE` test WER 85.0 (1 seed) against scratch" in text
    assert "best position-prediction row" not in text


def test_study_scaling_verdict_compares_the_shortest_and_longest_pretraining():
    study = load_tool("pretraining_study")

    def point(name, minutes, wer_gain, cer_gain):
        return {"pretrainer": name, "minutes": minutes, "relative_gain_pct": wer_gain,
                "relative_cer_gain_pct": cer_gain}

    text = study.scaling_verdicts([
        point("coarse", 10, 1.0, 3.0), point("coarse", 20, 5.0, 4.0), point("coarse", 90, 0.5, 6.0),
        point("BEST-RQ", 90, 2.0, 2.5), point("BEST-RQ", 10, 0.2, 1.0), point("alone", 20, 9.0, 9.0)])
    assert text.splitlines() == [
        # the target is 10 -> 90 min; a larger gain in between is named
        "- coarse: WER gain over scratch 1.0 % at 10 min, 0.5 % at 90 min: **does not grow** "
        "(CER gain 3.0 % -> 6.0 %); the largest WER gain is in between: 5.0 % at 20 min.",
        "- BEST-RQ: WER gain over scratch 0.2 % at 10 min, 2.0 % at 90 min: **grows** (CER gain 1.0 % -> 2.5 %).",
    ]


def test_study_scaling_cell_gives_each_seeds_gain_beside_the_mean():
    study = load_tool("pretraining_study")
    assert study.per_seed(0.9, {0: 0.1, 1: 1.8}) == "0.9 (0.1 / 1.8)"
    assert study.per_seed(-3.8, {0: -3.8}) == "-3.8"  # one seed: the mean is that seed


def test_kws_targets_compare_both_test_sets_and_flag_augmentation_that_costs_accuracy():
    bench = load_tool("kws_benchmark")

    def rows(name, test, other, seeds=(0, 1)):
        return [{"name": name, "seed": s, "test_accuracy": test + s, "test_other_accuracy": other} for s in seeds]

    table = [*rows("scratch, PE", 97.0, 70.0), *rows("scratch, PE, + noise", 94.0, 80.0),
             *rows("scratch, PE, all augmentation", 97.5, 82.0),
             *rows("MP3 + anchors, zero-init PE, all augmentation", 98.5, 91.0),
             *rows("SpeechBrain x-vector", 99.5, 90.0), *rows("SpeechBrain x-vector, all augmentation", 99.4, 92.0)]
    text = "\n".join(bench.augmentation_targets(table))
    assert ("best transformer row (MP3 + anchors, zero-init PE, all augmentation) 91.00 ± 0.00 (2 seeds) >= the "
            "better x-vector (SpeechBrain x-vector, all augmentation) 92.00 ± 0.00 (2 seeds): NOT met") in text
    # 9 % of errors against 18 %: half of them gone
    assert "91.00 against scratch with the same augmentation 82.00: 50 % fewer errors (target >= 25 %): met" in text
    assert "best transformer row (MP3 + anchors, zero-init PE, all augmentation) 99.00 (target >= 99 %): met" in text
    # + noise: 94.5 ± 0.5 against 97.5: loses more than its std; the x-vector's 0.1 is within its std 0.5
    assert "scratch, PE, + noise loses 3.00 points to scratch, PE (94.50 against 97.50)" in text
    assert "SpeechBrain x-vector, all augmentation loses" not in text

    # Rows trained longer are set against scratch trained as long: 92 % against 91 %, not 82 %.
    table += [*rows("scratch, PE, all augmentation, 3x epochs", 98.0, 91.0),
              *rows("MP3 + anchors, zero-init PE, all augmentation, 3x epochs", 98.0, 92.0)]
    text = "\n".join(bench.augmentation_targets(table))
    assert ("best position-prediction row (MP3 + anchors, zero-init PE, all augmentation, 3x epochs) 92.00 "
            "against scratch with the same augmentation 91.00: 11 % fewer errors (target >= 25 %): NOT met") in text
    # the position row that is not the best is still set against its own scratch peer (91 % against 82 %)
    assert ("the other position-prediction rows against scratch trained alike: MP3 + anchors, zero-init PE, "
            "all augmentation 91.00 against 82.00: 50 % fewer errors") in text


def test_kws_longer_rows_train_the_all_augmentation_rows_longer(tmp_path):
    bench = load_tool("kws_benchmark")
    first, second = bench.plan_runs(bench.PRESETS["full"], [0], tmp_path / "data", tmp_path / "out",
                                    rows=bench.LONGER_ROWS)
    epochs = {r.info["row"]: int(next(a for a in r.args if a.startswith("--number_of_epochs=")).split("=")[1])
              for r in first + second if "row" in r.info}
    longer = {name: n for name, n in epochs.items() if name.endswith("3x epochs")}
    assert longer == {"scratch, PE, all augmentation, 3x epochs": 60,
                      "MP3 + anchors, zero-init PE, all augmentation, 3x epochs": 60,
                      "SpeechBrain x-vector, all augmentation, 3x epochs": 60}
    assert epochs["scratch, PE, all augmentation"] == 20 and epochs["SpeechBrain x-vector"] == 20
    # the longer fine-tuning starts from the augmentation rows' own pretraining, not a new one
    pretrain_runs = [r for r in first if r.script.endswith("pretrain.py")]
    assert {r.out.parent.name for r in pretrain_runs} == {"mp3", "mp3___anchors", "mp3___anchors__coarse_7"}


def test_kws_stronger_rows_give_one_row_the_kwt1_shape_over_the_preset(tmp_path):
    bench = load_tool("kws_benchmark")
    first, second = bench.plan_runs(bench.PRESETS["full"], [0], tmp_path / "data", tmp_path / "out",
                                    rows=bench.STRONGER_ROWS)

    def flags(run):
        return dict(a.removeprefix("--").split("=", 1) for a in run.args if "=" in a)

    runs = {r.info["row"]: flags(r) for r in first + second if "row" in r.info}
    kwt1 = runs["scratch, PE, KWT-1 shape (12 layers, 1 head), all augmentation"]
    assert (kwt1["num_layers"], kwt1["nhead"], kwt1["d_ffn"], kwt1["d_model"]) == ("12", "1", "256", "64")
    assert kwt1["number_of_epochs"] == "20" and kwt1["mixup_alpha"] == "0.4" and "model" not in kwt1
    scratch = runs["scratch, PE, all augmentation"]
    assert (scratch["num_layers"], scratch["nhead"], scratch["d_ffn"]) == ("4", "4", "192")
    assert set(runs) == {name for name, *_ in bench.LONGER_ROWS} | {
        "scratch, PE, KWT-1 shape (12 layers, 1 head), all augmentation"}


def test_kws_position_targets_report_the_best_pretrained_row():
    bench = load_tool("kws_benchmark")
    table = [{"name": name, "seed": 0, "test_accuracy": acc, "dev_position_accuracy": 8.0,
              "chance_position_accuracy": 2.0} for name, acc in
             [("scratch, PE", 94.0), ("scratch, no PE", 93.0), ("MP3, zero-init PE", 95.0), ("MP3, no PE", 95.5),
              ("DropPos smoothing, zero-init PE", 95.0), ("MP3 + anchors, zero-init PE", 96.4),
              ("SpeechBrain x-vector", 99.6)]]
    text = "\n".join(bench.targets(table))
    assert "best position-prediction row (MP3 + anchors, zero-init PE, 1 seed(s)) has 40 % fewer test errors" in text
    assert "MP3, no PE 95.50 vs scratch, PE 94.00: met" in text
    assert "96.40 >= x-vector peer 99.60: NOT met" in text


def test_shortcut_distance_bins_give_the_chance_of_a_guess_that_knows_the_anchors():
    """One anchor at 2 of 5 tokens: the positions 1 and 3 are 1 away, 0 and 4 are 2 away, none
    further; a guess that knows the anchor places a target 1 or 2 away with probability 1/2.
    Padding (beyond the length) is never a candidate."""
    tool = load_tool("pretext_shortcut")
    anchors = torch.tensor([[False, False, True, False, False, False],
                            [True, False, False, False, False, False]])
    positions = torch.tensor([[0, 3, 4], [5, 4, 1]])
    scored = torch.tensor([[True, True, False], [True, True, True]])
    hit = torch.tensor([[True, False, True], [True, True, False]])
    bins = tool.distance_bins(positions, scored, hit, anchors, torch.tensor([5, 6]))
    # Row 2 (length 6, anchor at 0): positions 1..5 are 1..5 away; targets 5 and 4 are both in
    # ">= 4" (two candidates there: 4 and 5), target 1 in "1" (one candidate). The unscored
    # target of row 1 counts nowhere, though it was placed.
    assert bins["1"] == [0, 2, pytest.approx(0.5 + 1.0)]
    assert bins["2"] == [1, 1, pytest.approx(0.5)]
    assert bins["3"] == [0, 0, 0.0]
    assert bins[">=4"] == [2, 2, pytest.approx(1.0)]


def test_suite_bench_reads_pytest_summary_and_slowest_phases():
    bench = load_tool("bench_suite")
    out = ("..F.\n============ slowest 10 durations ============\n"
           "236.75s call     tests/integration/test_pretraining_study.py::test_study_quick\n"
           "25.89s setup    tests/integration/test_export.py::test_loads\n"
           "1.50s call     tests/integration/test_lm.py::test_refuses[overrides0-error: x]\n"
           "FAILED tests/integration/test_lm.py::test_refuses[overrides0-error: x] - AssertionError\n"
           "ERROR tests/integration/test_kws.py::test_bench - RuntimeError\n"
           "=== 1 failed, 509 passed, 1 warning, 1 error in 690.62s (0:11:30) ===\n")
    parsed = bench.parse_pytest(out)
    assert (parsed["passed"], parsed["failed"], parsed["pytest_seconds"]) == (509, 2, 690.62)
    assert parsed["failed_tests"] == ["tests/integration/test_lm.py::test_refuses[overrides0-error: x]",
                                      "tests/integration/test_kws.py::test_bench"]
    assert [(s["seconds"], s["phase"]) for s in parsed["slowest"]] == [(236.75, "call"), (25.89, "setup"), (1.5, "call")]
    assert parsed["slowest"][1]["test"] == "tests/integration/test_export.py::test_loads"
    assert parsed["files"] == {"tests/integration/test_pretraining_study.py": 236.75,
                               "tests/integration/test_export.py": 25.89, "tests/integration/test_lm.py": 1.5}
    assert parsed["slowest"][2]["test"] == "tests/integration/test_lm.py::test_refuses[overrides0-error: x]"
    with pytest.raises(ValueError, match="no pytest summary line"):
        bench.parse_pytest("ImportError while loading conftest\n")
    with pytest.raises(SystemExit):
        bench.main(["--checkout", "nowhere"])


def test_gpu_report_takes_the_compiled_ctc_row_wherever_gpu_check_puts_it():
    # gpu_check.py writes the eager CTC row second and the compiled one after it
    # (--compare-compile); the old rows[1] published the eager run as "compiled".
    report = load_tool("gpu_report")
    pretrain = {"stage": "pretraining (MP3 + anchors)", "compiled": False}
    eager = {"stage": "CTC fine-tuning (1 h of labels)", "compiled": False, "steady_audio_s_per_s": 500.0,
             "first_step_s": 1.0, "steps": 900, "result": "WER dev 90 / test 89, CER test 45"}
    compiled = {**eager, "stage": "CTC fine-tuning (1 h of labels), --compile", "compiled": True,
                "steady_audio_s_per_s": 600.0, "first_step_s": 50.0, "steps": 100,
                "result": "WER dev 99 / test 98, CER test 60"}
    eager_run = {"test-clean": {"steady_audio_s_per_s": 500.0, "first_step_s": 1.0, "steps_trained": 900,
                                "WER": 89.0, "CER": 45.0}}
    rows = report.compile_rows({"rows": [pretrain, eager, compiled]}, eager_run, [(150.0, 99.0, 60.0)],
                               [(60.0, 90.0, 45.0)])
    assert rows[0]["first step s"] == 50.0 and rows[0]["steps trained"] == 100
    assert rows[0]["steady speed-up"] == "1.20x"
    with pytest.raises(ValueError, match="no compiled CTC row"):
        report.compiled_ctc_row([pretrain, eager])


def test_kws_unlabelled_rows_pretrain_on_the_speech_manifest_and_leave_the_held_out_engine_out(
        tiny_librispeech, tmp_path):
    bench = load_tool("kws_benchmark")
    manifest, hours = bench.unlabelled_manifest(tiny_librispeech, "train-clean-100", tmp_path / "speech.csv", "flite")
    speakers = {line.split(",")[3] for line in manifest.read_text().splitlines()[1:]}
    assert speakers == {"100", "102", "103"} and 0 < hours < 0.1  # 101 is the flite voice of the four
    first, second = bench.plan_runs(bench.PRESETS["full"], [0], tmp_path / "data", tmp_path / "out",
                                    rows=bench.UNLABELLED_ROWS, unlabelled_csv=manifest)
    pretrain = {r.out.parent.name: r.args for r in first if r.script.endswith("pretrain.py")}
    assert set(pretrain) == {"mp3___anchors", "mp3___anchors__clips___unlabelled_speech"}
    assert f"--unlabelled_csv={manifest}" in pretrain["mp3___anchors__clips___unlabelled_speech"]
    assert not any(a.startswith("--unlabelled_csv") for a in pretrain["mp3___anchors"])
    rows = {r.info["row"]: r for r in first + second if "row" in r.info}
    assert "--mixup_alpha=0.4" not in rows["scratch, PE, all augmentation but mixup"].args
    assert "--speed_perturb=True" in rows["scratch, PE, all augmentation but mixup"].args
    with pytest.raises(ValueError, match="needs a speech manifest"):
        bench.plan_runs(bench.PRESETS["full"], [0], tmp_path / "data", tmp_path / "out", rows=bench.UNLABELLED_ROWS)


def test_kws_targets_report_false_alarms_and_the_unlabelled_pretraining_against_scratch():
    bench = load_tool("kws_benchmark")
    name = f"{bench.UNLABELLED}, zero-init PE, all augmentation"

    def rows(row, other, rejected, seeds=(0, 1)):
        return [{"name": row, "seed": s, "test_accuracy": 97.0, "test_other_accuracy": other + s,
                 "test_other_non_keyword_rejection": rejected} for s in seeds]

    table = [*rows("scratch, PE", 60.0, 85.0), *rows("scratch, PE, + mixup", 62.0, 40.0),
             *rows("scratch, PE, + noise", 61.0, 82.0), *rows("scratch, PE, all augmentation", 70.0, 45.0),
             *rows("scratch, PE, all augmentation, 3x epochs", 74.0, 50.0),
             *rows(name, 72.0, 60.0), *rows(f"{name}, 3x epochs", 80.0, 81.0)]
    text = "\n".join(bench.augmentation_targets(table))
    assert ("non-keywords rejected (held-out engine), scratch: no augmentation 85.0 %; + mixup 40.0 %; + noise 82.0 %; "
            "all augmentation 45.0 %; fewest rejected: scratch, PE, + mixup") in text
    assert (f"held-out engine: {name} 72.50 ± 0.71 (2 seeds) against scratch, PE, all augmentation 70.50 ± 0.71 "
            "(2 seeds): +2.00 points (target >= +5 at 3x the epochs), non-keywords rejected 60.0 % "
            "(target >= 80 %): NOT met") in text
    assert "+6.00 points (target >= +5 at 3x the epochs), non-keywords rejected 81.0 % (target >= 80 %): met" in text


def test_kws_false_alarm_rows_train_scratch_only_and_report_without_a_pretrained_row(tmp_path):
    bench = load_tool("kws_benchmark")
    first, second = bench.plan_runs(bench.PRESETS["full"], [0], tmp_path / "data", tmp_path / "out",
                                    rows=bench.FALSE_ALARM_ROWS)
    assert second == [] and all(r.script.endswith("train.py") and "--epochs_factor" not in " ".join(r.args)
                                for r in first)
    assert [r.info["row"] for r in first] == [
        "scratch, PE", "scratch, PE, + noise", "scratch, PE, + speed", "scratch, PE, + SpecAugment",
        "scratch, PE, + mixup", "scratch, PE, all augmentation", "scratch, PE, all augmentation but mixup"]
    # the same folders as the unlabelled set's: a later full run keeps these
    unlabelled, _ = bench.plan_runs(bench.PRESETS["full"], [0], tmp_path / "data", tmp_path / "out",
                                    rows=bench.UNLABELLED_ROWS, unlabelled_csv=tmp_path / "s.csv")
    assert {r.out for r in first} <= {r.out for r in unlabelled}
    labels = ["_silence_", "_unknown_", "yes", "no"]
    rows = []
    for name, fired in (("scratch, PE", 1), ("scratch, PE, + mixup", 7)):
        other = [[5, 0, 0, 0], [0, 10 - fired, fired, 0], [0, 1, 8, 1], [0, 0, 0, 10]]
        scores = bench.keyword_scores(other, labels)
        rows.append({"name": name, "seed": 0, "test_accuracy": 95.0, "valid_accuracy": 94.0, "wall_s": 60.0,
                     "test_other_accuracy": 80.0, "parameters": 1000,
                     "test_other_keyword_accuracy": scores["keyword_accuracy"],
                     "test_other_non_keyword_rejection": scores["non_keyword_rejection"],
                     "_confusion": other, "_confusion_other": other, "_labels": labels})
    bench.write_report(rows, tmp_path / "docs", "setup", "full", bench.FALSE_ALARM_ROWS, "kws_false_alarms")
    text = (tmp_path / "docs" / "kws_false_alarms.md").read_text()
    assert "| scratch, PE, + mixup | 95.00 | 80.00 | 90.00 | 30.00 |" in text
    assert "no augmentation 90.0 %; + mixup 30.0 %; fewest rejected: scratch, PE, + mixup" in text
    assert "Confusion matrix of the best row: `kws_false_alarms_confusion.png` (scratch, PE)" in text
    assert (tmp_path / "docs" / "kws_false_alarms_confusion_held_out.png").is_file()
    assert "`kws_false_alarms_hits_and_rejection.png`" in text
    assert (tmp_path / "docs" / "kws_false_alarms_hits_and_rejection.png").stat().st_size > 0


def test_speech_crops_draw_a_new_second_of_each_utterance_and_refuse_another_rate(tmp_path):
    import soundfile as sf

    from speechpos.speech.data.audio import AudioError
    from speechpos.speech.data.keyword_data import speech_crops

    long, other = tmp_path / "long.flac", tmp_path / "8k.flac"
    sf.write(long, np.arange(16000 * 5, dtype=np.float32) / 16000 / 5, 16000)
    sf.write(other, np.zeros(8000 * 3, dtype=np.float32), 8000)
    (tmp_path / "speech.csv").write_text(f"ID,duration,wav\na,5.0,{long}\nb,3.0,{other}\n")
    crops = speech_crops(tmp_path / "speech.csv")
    torch.manual_seed(0)
    first, second = crops[0]["sig"], crops[0]["sig"]
    assert first.shape == (16000,) and not torch.equal(first, second)
    # one contiguous second of the ramp (16-bit FLAC: steps of 1/32768)
    assert (first[1:] >= first[:-1]).all() and abs(float(first[-1] - first[0]) - 15999 / 80000) < 1e-3
    with pytest.raises(AudioError, match=f"{other}: sample rate 8000 Hz, expected 16000 Hz"):
        crops[1]
