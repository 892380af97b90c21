"""``precision: auto`` for each kind of machine, and the lock that pins a fresh install."""

import re
from pathlib import Path

import pytest
from speechbrain.utils.run_opts import RunOptions

from speechpos.precision import choose_precision, read_cpu_flags, resolve_precision
from speechpos.recipes import ConfigError, load_recipe_hparams, start_experiment

ROOT = Path(__file__).resolve().parents[2]
AVX2_EPYC = "fpu vme sse sse2 avx avx2 fma f16c bmi2"  # no bf16 matrix units: emulated, 6.8x slower
SAPPHIRE_RAPIDS = AVX2_EPYC + " avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8"
ZEN4 = AVX2_EPYC + " avx512f avx512bw avx512_bf16"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(AVX2_EPYC, "fp32"), (SAPPHIRE_RAPIDS, "bf16"), (ZEN4, "bf16"), ("avx512f avx512bw", "fp32"), ("", "fp32")],
)
def test_auto_on_each_kind_of_cpu(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: X\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    precision, reason = choose_precision("auto", "cpu", cpu_flags=read_cpu_flags(cpuinfo))
    assert precision == expected
    assert ("native bf16" in reason) and (("without" in reason) == (expected == "fp32"))


def test_arm_features_line_and_missing_cpuinfo(tmp_path):
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 sve\n")
    assert read_cpu_flags(arm) == {"fp", "asimd", "bf16", "sve"}
    assert choose_precision("auto", "cpu", cpu_flags=read_cpu_flags(arm))[0] == "fp32"
    assert read_cpu_flags(tmp_path / "absent") == set()


def test_auto_on_cuda_and_explicit_choices_are_kept():
    assert choose_precision("auto", "cuda:0", cuda_bf16=True) == ("bf16", "CUDA device with bf16 support")
    assert choose_precision("auto", "cuda", cuda_bf16=False)[0] == "fp32"
    for p in ("fp32", "bf16", "fp16"):
        assert choose_precision(p, "cpu", cpu_flags={"avx2"}) == (p, "asked for explicitly")
    with pytest.raises(ValueError, match="precision must be one of .* got 'half'"):
        choose_precision("half", "cpu")


def test_command_line_precision_wins_over_hparams(monkeypatch):
    monkeypatch.setattr("speechpos.precision.read_cpu_flags", lambda: {"avx2"})
    hparams = {"precision": "auto"}
    assert resolve_precision(RunOptions(), hparams) == "fp32"
    assert hparams["precision"] == "fp32"
    cli = RunOptions.from_dictionary({"precision": "bf16"})
    hparams = {"precision": "auto"}
    assert resolve_precision(cli, hparams) == "bf16" and hparams["precision"] == "bf16"


@pytest.mark.parametrize(
    "yaml", sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("recipes/*/hparams/*.yaml"))
)
def test_every_hparams_file_defaults_to_auto(yaml):
    text = (ROOT / yaml).read_text()
    assert re.search(r"^precision: auto\b", text, flags=re.M), yaml


def test_recipe_refuses_an_unknown_precision(tmp_path):
    argv = [
        str(ROOT / "recipes/LibriSpeech/hparams/ctc.yaml"), f"--output_folder={tmp_path}",
        "--precision_is_not_a_key=1",
    ]
    with pytest.raises(ConfigError, match="precision_is_not_a_key"):
        load_recipe_hparams(argv, str(ROOT / "recipes/LibriSpeech/asr_ctc.py"))
    yaml = tmp_path / "x.yaml"
    yaml.write_text(f"output_folder: {tmp_path}/out\nprecision: fp64\n")
    with pytest.raises(ConfigError, match=r"x.yaml: precision must be one of .* got 'fp64'"):
        start_experiment([str(yaml)], str(yaml))


def load_check_lock():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "tools" / "setup" / "check_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lock_pins_the_torch_family_and_speechbrain_as_pyproject_does():
    check_lock = load_check_lock()
    locked = check_lock.read_lock((ROOT / "requirements.lock").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name in ("torch", "torchaudio", "torchvision", "speechbrain"):
        exact = re.search(rf'"{name}==([0-9][^"*]*)"', pyproject)
        assert exact, f"{name} is not pinned exactly in pyproject.toml"
        assert locked[name] == exact.group(1)
    assert locked["torch"] == "2.11.0" and locked["torchaudio"] == "2.11.0"


def test_this_environment_matches_the_lock_and_a_drift_is_reported(capsys, tmp_path):
    check_lock = load_check_lock()
    assert check_lock.main([]) == 0
    drifted = (ROOT / "requirements.lock").read_text().replace("torchaudio==2.11.0", "torchaudio==2.11.1")
    lock = tmp_path / "requirements.lock"
    lock.write_text(drifted)
    assert check_lock.main(["--lock", str(lock)]) == 1
    assert "torchaudio: locked 2.11.1, installed 2.11.0" in capsys.readouterr().err
    lock.write_text("torch>=2.11\n")
    with pytest.raises(ValueError, match="lock line 1 is not 'name==version'"):
        check_lock.main(["--lock", str(lock)])
