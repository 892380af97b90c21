"""The Speech Commands recipes on a tiny made corpus: training learns, MP3 pretraining beats
chance, the x-vector peer runs, the benchmark's quick preset runs end to end, and a trained run
classifies a 44.1 kHz stereo file through the API and the CLI."""

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechpos.cli import main as cli_main
from speechpos.experiments.runs import run_python, startup_env
from speechpos.inference.keyword import KeywordSpotter

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "SpeechCommands"
TINY = ["--d_model=32", "--nhead=4", "--d_ffn=64", "--num_layers=2", "--batch_size=16",
        "--warmup_epochs=0", "--noprogressbar", "--device=cpu", "--precision=fp32", "--lr=0.003"]

pytestmark = pytest.mark.slow


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(f"kws_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log_values(log: Path, key: str) -> list[float]:
    return [float(x) for x in re.findall(rf"{key}: ([0-9.e+-]+)", log.read_text())]


@pytest.fixture(scope="module")
def pretrained(tiny_speech_commands, tmp_path_factory, single_thread):
    out = tmp_path_factory.mktemp("kws_pretrain")
    load_recipe("pretrain").main([str(RECIPES / "hparams" / "pretrain.yaml"),
                                  f"--data_folder={tiny_speech_commands}", f"--output_folder={out}",
                                  "--number_of_epochs=8", "--context_ratio=0.5", *TINY])
    return out


@pytest.fixture(scope="module")
def finetuned(tiny_speech_commands, pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("kws_finetune")
    load_recipe("train").main([str(RECIPES / "hparams" / "kwt.yaml"),
                               f"--data_folder={tiny_speech_commands}", f"--output_folder={out}",
                               f"--pretrained_path={pretrained}", "--number_of_epochs=6", *TINY])
    return out


def test_shortcut_diagnosis_scores_a_keyword_pretraining(tiny_speech_commands, tmp_path, single_thread):
    """tools/studies/pretext_shortcut.py on the keyword recipe's anchored pretext: its validation clips,
    20-ms tokens, and beside each distance the chance of a guess that knows the anchors (never
    below a uniform guess's)."""
    run = tmp_path / "anchors"
    load_recipe("pretrain").main([str(RECIPES / "hparams" / "pretrain.yaml"), f"--data_folder={tiny_speech_commands}",
                                  f"--output_folder={run}", "--number_of_epochs=2", "--anchor_ratio=1.0", *TINY])
    spec = importlib.util.spec_from_file_location("tool_shortcut_kws", ROOT / "tools" / "studies" / "pretext_shortcut.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    docs = tmp_path / "docs"
    assert tool.main([str(run), "--names", "anchors", "--passes", "1", "--docs", str(docs),
                      "--report", "kws_shortcut"]) == 0
    result = json.loads((docs / "kws_shortcut.json").read_text())["runs"]["anchors"]
    assert result["data"] == "keyword validation clips" and result["patch_ms"] == 20
    bins = result["by_distance"].values()
    assert sum(b["share"] for b in bins) == pytest.approx(100, abs=0.5)
    assert all(result["chance_accuracy"] <= b["chance_given_anchors"] <= 100 for b in bins if b["targets"])
    text = (docs / "kws_shortcut.md").read_text()
    assert "scored on keyword validation clips" in text and "20-ms patches" in text
    assert (docs / "kws_shortcut.png").stat().st_size > 10_000 and not (docs / "pretext_shortcut.md").exists()


def test_pretraining_learns_positions(pretrained):
    log = pretrained / "train_log.txt"
    losses = log_values(log, "train loss")
    assert losses[-1] < losses[0]
    results = json.loads((pretrained / "results.json").read_text())
    assert results["position_accuracy"] > 1.3 * results["chance_accuracy"]


def test_pretraining_with_anchors_learns_positions(tiny_speech_commands, tmp_path, single_thread):
    """Every context token keeps a position signal; the loss is on the others (37 of 49)."""
    load_recipe("pretrain").main([str(RECIPES / "hparams" / "pretrain.yaml"),
                                  f"--data_folder={tiny_speech_commands}", f"--output_folder={tmp_path}",
                                  "--number_of_epochs=8", "--anchor_ratio=1.0", *TINY])
    losses = log_values(tmp_path / "train_log.txt", "train loss")
    assert losses[-1] < losses[0]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["position_accuracy"] > 2 * results["chance_accuracy"]
    assert results["position_error"] < results["chance_position_error"]


def test_pretraining_on_clips_and_unlabelled_speech_crops(tiny_speech_commands, tiny_librispeech, tmp_path,
                                                         single_thread):
    """Unlabelled speech joins the clips as 1-s crops: more batches an epoch, positions still learnt."""
    from speechpos.speech.data.librispeech import read_split, write_csv

    speech = tmp_path / "speech.csv"
    write_csv(read_split(tiny_librispeech / "train-clean-100", progress=False), speech)
    utterances = len(speech.read_text().splitlines()) - 1
    load_recipe("pretrain").main([
        str(RECIPES / "hparams" / "pretrain.yaml"), f"--data_folder={tiny_speech_commands}",
        f"--output_folder={tmp_path / 'out'}", "--number_of_epochs=6", "--anchor_ratio=1.0",
        f"--unlabelled_csv={speech}", *TINY])
    clips = len((tmp_path / "out" / "prep" / "train.csv").read_text().splitlines()) - 1
    losses = log_values(tmp_path / "out" / "train_log.txt", "train loss")
    assert losses[-1] < losses[0]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["position_accuracy"] > 1.5 * results["chance_accuracy"]
    assert results["train_items_per_epoch"] == {"clips": clips, "unlabelled_crops": utterances}


def test_pretraining_with_a_gap_and_views_runs_against_its_chance(tiny_speech_commands, tmp_path, single_thread):
    """The shortcut-free switches on keyword clips: every target at least 2 tokens from the
    context, every patch jittered on its own, 7 coarse classes of 7 tokens."""
    load_recipe("pretrain").main([str(RECIPES / "hparams" / "pretrain.yaml"),
                                  f"--data_folder={tiny_speech_commands}", f"--output_folder={tmp_path}",
                                  "--number_of_epochs=3", "--anchor_ratio=1.0", "--min_gap=1", "--views=True",
                                  "--coarse=7", *TINY])
    losses = log_values(tmp_path / "train_log.txt", "train loss")
    assert losses[-1] < losses[0]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["chance_accuracy"] == pytest.approx(1 / 7, abs=0.005)


def test_training_loss_falls_accuracy_rises(finetuned):
    log = finetuned / "train_log.txt"
    losses, accuracy = log_values(log, "train loss"), log_values(log, "valid accuracy")
    assert losses[-1] < losses[0] - 0.3
    assert max(accuracy[-3:]) > accuracy[0]
    results = json.loads((finetuned / "results.json").read_text())
    assert results["test_accuracy"] > 100 / 12
    assert np.array(results["confusion"]).shape == (12, 12)


def test_augmented_training_learns_and_scores_the_held_out_engine(tiny_speech_commands_other, tmp_path,
                                                                  single_thread):
    """Every augmentation on (background noise, speed, SpecAugment, mixup): it still learns,
    and the engine no training clip came from gets its own score."""
    load_recipe("train").main([str(RECIPES / "hparams" / "kwt.yaml"),
                               f"--data_folder={tiny_speech_commands_other}", f"--output_folder={tmp_path}",
                               "--number_of_epochs=12", "--noise_probability=0.8", "--speed_perturb=True",
                               "--spec_augment=True", "--mixup_alpha=0.4", *TINY])
    log = tmp_path / "train_log.txt"
    losses, accuracy = log_values(log, "train loss"), log_values(log, "valid accuracy")
    assert losses[-1] < losses[0] - 0.1 and max(accuracy[-3:]) > accuracy[0]
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0 <= results["test_other_accuracy"] <= 100
    assert np.array(results["test_other_confusion"]).sum() == len(
        (tmp_path / "prep" / "test_other.csv").read_text().splitlines()) - 1
    # keywords and non-keywords scored apart on both test lists
    other = results["test_other_keyword_scores"]
    assert other["keyword_clips"] + other["non_keyword_clips"] <= np.array(results["test_other_confusion"]).sum()
    assert other["non_keyword_clips"] > 0 and 0 <= other["non_keyword_rejection"] <= 100
    assert 0 <= results["test_keyword_scores"]["keyword_accuracy"] <= 100


def test_a_bare_augmentation_flag_is_refused_before_training(tiny_speech_commands, tmp_path):
    from speechpos.recipes import ConfigError

    with pytest.raises(ConfigError) as err:
        load_recipe("train").main([str(RECIPES / "hparams" / "kwt.yaml"), f"--data_folder={tiny_speech_commands}",
                                   f"--output_folder={tmp_path}", "--speed_perturb", *TINY])
    assert str(err.value) == "speed_perturb must be True or False, got None (write --speed_perturb=True)"
    assert not list(tmp_path.glob("save/CKPT*")) and not (tmp_path / "results.json").exists()


def test_xvector_peer_runs(tiny_speech_commands, tmp_path, single_thread):
    run = tmp_path / "run"
    load_recipe("train").main([str(RECIPES / "hparams" / "xvector.yaml"),
                               f"--data_folder={tiny_speech_commands}", f"--output_folder={run}",
                               "--number_of_epochs=2", "--tdnn_channels=16", "--emb_dim=16",
                               "--batch_size=16", "--noprogressbar", "--device=cpu"])
    results = json.loads((run / "results.json").read_text())
    assert 0 <= results["test_accuracy"] <= 100 and len(results["labels"]) == 12
    # SpeechBrain's own model exports as its own hub models are laid out.
    assert_encoder_classifier_matches_the_run(run, tiny_speech_commands, tmp_path)


def test_keyword_transformer_exports_for_encoder_classifier(finetuned, tiny_speech_commands, tmp_path):
    assert_encoder_classifier_matches_the_run(finetuned, tiny_speech_commands, tmp_path)
    clip, rate = sf.read(sorted((tiny_speech_commands / "yes").glob("*.wav"))[0], dtype="float32")
    import torchaudio.functional as AF
    from speechbrain.inference.classifiers import EncoderClassifier

    # 44.1 kHz stereo, 1.5 s: SpeechBrain's audio_normalizer converts it, the model takes its loudest second.
    wav44 = AF.resample(torch.from_numpy(np.concatenate([np.zeros(8000, "float32"), clip])), rate, 44100).numpy()
    path = tmp_path / "yes_44k_stereo.wav"
    sf.write(path, np.stack([wav44, 0.5 * wav44], 1), 44100)
    clf = EncoderClassifier.from_hparams(source=str(tmp_path / "model"), savedir=str(tmp_path / "sb_again"))
    assert clf.classify_file(str(path))[3][0] == KeywordSpotter.from_run(finetuned).classify_file(path, top=1)[0][0]
    assert cli_main(["export", str(finetuned), str(tmp_path / "lm"), "--lm-text", str(path)]) == 2


def assert_encoder_classifier_matches_the_run(run, corpus, tmp_path):
    """``speechpos export`` then EncoderClassifier: the run's labels and probabilities on the
    test clips (a weight left random would change them)."""
    from speechbrain.inference.classifiers import EncoderClassifier

    out = tmp_path / "model"
    assert cli_main(["export", str(run), str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"hyperparams.yaml", "embedding_model.ckpt", "classifier.ckpt",
                                              "mean_var_norm.ckpt", "label_encoder.ckpt", "README.md"}
    clf = EncoderClassifier.from_hparams(source=str(out), savedir=str(tmp_path / "sb"))
    spotter = KeywordSpotter.from_run(run)
    files = [corpus / p for p in (corpus / "testing_list.txt").read_text().split()[:24]]
    clips = torch.stack([spotter.load_clip(f) for f in files])
    log_probs, _, _, labels = clf.classify_batch(clips)
    assert torch.allclose(log_probs.exp(), spotter.probabilities(clips), atol=1e-5)
    assert labels == [spotter.labels[i] for i in spotter.probabilities(clips).argmax(-1).tolist()]
    assert [clf.classify_file(str(f))[3][0] for f in files[:4]] == [
        spotter.classify_file(f, top=1)[0][0] for f in files[:4]]


def test_api_and_cli_on_44k_stereo(finetuned, tiny_speech_commands, tmp_path, capsys):
    clip, rate = sf.read(sorted((tiny_speech_commands / "yes").glob("*.wav"))[0], dtype="float32")
    import torchaudio.functional as AF

    wav44 = AF.resample(torch.from_numpy(clip), rate, 44100).numpy()
    path = tmp_path / "yes_44k_stereo.wav"
    sf.write(path, np.stack([wav44, 0.5 * wav44], 1), 44100)
    spotter = KeywordSpotter.from_run(finetuned)
    best = spotter.classify_file(path, top=3)
    assert len(best) == 3 and best[0][0] in spotter.labels and 0 <= best[0][1] <= 1
    assert cli_main(["keyword", str(finetuned), str(path)]) == 0
    out = capsys.readouterr()
    fields = out.out.strip().split("\t")
    assert fields[0] == str(path) and fields[1] == best[0][0]
    assert "converted from 44100 Hz, 2 channel(s)" in out.err
    assert cli_main(["keyword", str(tmp_path), str(path)]) == 2


def test_benchmark_quick_preset(tiny_speech_commands_other, tmp_path):
    def bench(*extra):
        return run_python(
            [sys.executable, str(ROOT / "tools" / "studies" / "kws_benchmark.py"), "--preset", "quick", "--held-out-engine",
             "flite", "--data", str(tiny_speech_commands_other), "--out", str(tmp_path / "runs"), "--docs",
             str(docs), *extra],
            capture_output=True, text=True,
            # Python's start-up variables kept (PYTHONPATH: this tree's speechpos, as python would see it)
            env={**startup_env(os.environ), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        )

    docs = tmp_path / "docs"
    # The augmentation rows (the position rows' report logic: tests/unittests/test_tools.py): only
    # the three pretrainings they fine-tune from run, every row is scored on both test sets.
    proc = bench("--rows", "augmentation", "--report", "kws_augmentation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(": started") == 14, proc.stdout  # 3 pretrainings + 11 rows
    report = json.loads((docs / "kws_augmentation.json").read_text())
    assert [r["name"] for r in report["rows"]] == [
        "scratch, PE", "scratch, PE, + noise", "scratch, PE, + speed", "scratch, PE, + SpecAugment",
        "scratch, PE, + mixup", "scratch, PE, all augmentation", "MP3, no PE, all augmentation",
        "MP3 + anchors, zero-init PE, all augmentation", "MP3 + anchors, coarse 7, zero-init PE, all augmentation",
        "SpeechBrain x-vector",
        "SpeechBrain x-vector, all augmentation"]
    assert all(0 <= r["test_other_accuracy"] <= 100 for r in report["rows"])
    # Each row trained with its switches (a bare --flag once reached the yaml as null).
    runs = tmp_path / "runs"
    assert "speed_perturb: true" in (runs / "scratch__pe____speed" / "0" / "hyperparams.yaml").read_text()
    everything = (runs / "speechbrain_x_vector__all_augmentation" / "0" / "hyperparams.yaml").read_text()
    for line in ("noise_probability: 0.8", "speed_perturb: true", "spec_augment: true", "mixup_alpha: 0.4"):
        assert line in everything, line
    text = (docs / "kws_augmentation.md").read_text()
    assert "Checks on the means (± is the sample std over seeds):" in text and "- held-out engine: best transformer row" in text
    assert "fewer errors (target >= 25 %)" in text
    assert (docs / "kws_augmentation_confusion.png").stat().st_size > 1000
    assert (docs / "kws_augmentation_confusion_held_out.png").stat().st_size > 1000
    again = bench("--rows", "augmentation", "--report", "kws_augmentation")  # resumes: nothing reruns
    assert again.returncode == 0 and ": started" not in again.stdout, again.stdout
    # --report-only with a seed never run: seed 0's rows reported, seed 1's listed as not run.
    partial = bench("--rows", "augmentation", "--report", "kws_partial", "--seeds", "0", "1", "--report-only")
    assert partial.returncode == 0 and ": started" not in partial.stdout, partial.stdout
    report = json.loads((docs / "kws_partial.json").read_text())
    assert {r["seed"] for r in report["rows"]} == {0} and "Not run (no result): pretrain_mp3_1, " in report["setup"]
    # --rows longer reports the augmentation rows already run beside its own, not yet run.
    longer = bench("--rows", "longer", "--report", "kws_longer", "--report-only")
    assert longer.returncode == 0 and ": started" not in longer.stdout, longer.stdout + longer.stderr[-3000:]
    report = json.loads((docs / "kws_longer.json").read_text())
    assert len(report["rows"]) == 11
    not_run = report["setup"].split("Not run (no result): ")[1].removesuffix(".").split(", ")
    assert set(not_run) == {"scratch__pe__all_augmentation__3x_epochs_0", "speechbrain_x_vector__all_augmentation__3x_epochs_0",
                            "mp3___anchors__zero_init_pe__all_augmentation__3x_epochs_0"}


def test_kws_benchmark_refuses_an_unknown_limit_before_making_the_corpus(tmp_path):
    proc = run_python(
        [sys.executable, str(ROOT / "tools" / "studies" / "kws_benchmark.py"), "--preset", "quick",
         "--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "out"), "--limit", "MP4=0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert ("--limit wants NAME=SEEDS with NAME one of ['MP3', 'DropPos smoothing', 'MP3 + anchors', "
            "'MP3 + anchors, coarse 7', 'MP3 + anchors, clips + unlabelled speech'], got 'MP4=0'") in proc.stderr
    assert not (tmp_path / "corpus").exists()
