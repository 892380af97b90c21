"""asr_ctc.py with ``--lm_decoding=True`` on the tiny generated corpus: greedy and n-gram LM
results side by side, the LM text's overlap with the test splits, and the refusals."""

import json
import sys
from pathlib import Path

import pytest
from test_speech_recipes import RECIPES, ROOT, TINY_MODEL, run_recipe

from speechpos.experiments.runs import run_python

TWO_STEPS = ["--number_of_epochs=1", "--train_samples_per_epoch=8", "--speed_perturb=False", *TINY_MODEL]


def transcripts(corpus: Path, split: str) -> list[str]:
    return [
        line.split(" ", 1)[1]
        for trans in sorted(Path(corpus, split).rglob("*.trans.txt"))
        for line in trans.read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def lm_run(tiny_librispeech, tmp_path_factory):
    out = tmp_path_factory.mktemp("ctc_lm") / "run"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--lm_decoding=True", *TWO_STEPS,
    )
    return out


def test_lm_decoding_adds_wer_lm_beside_greedy(lm_run):
    out = lm_run
    results = json.loads((out / "results.json").read_text())
    for split in ("dev-clean", "test-clean"):
        r = results[split]
        assert r["decoding"] == "greedy" and 0 <= r["WER"] and 0 <= r["WER_lm"] and 0 <= r["CER_lm"]
        assert r["lm_text_overlap"]["of"] == r["utterances"] > 0
        assert r["lm"] == {
            "text": f"the transcripts of {out / 'prep' / 'train-clean-100.csv'}", "order": 3,
            "lm_weight": 1.0, "word_score": -1.0, "beam_size": 50,
        }
        assert "%WER" in (out / f"wer_lm_{split}.txt").read_text()
    arpa = (out / "save" / "lm_3gram.arpa").read_text()
    assert arpa.startswith("\\data\\\nngram 1=") and "\\3-grams:" in arpa
    lexicon = (out / "save" / "lm_lexicon.txt").read_text().splitlines()
    assert lexicon and all(line.endswith(" |") for line in lexicon)


def test_tune_lm_grid_searches_weights_on_dev(lm_run):
    proc = run_python(
        [sys.executable, str(ROOT / "tools" / "studies" / "tune_lm.py"), str(lm_run), "--lm_weights", "0", "2",
         "--word_scores", "-1", "0.5"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("greedy WER: ")
    assert lines[2:4] == ["| lm_weight \\ word_score | -1 | 0.5 |", "|---|---|---|"]
    assert lines[4].startswith("| 0 | ") and lines[5].startswith("| 2 | ")
    assert lines[6].startswith("best: --lm_weight=") and "(dev WER " in lines[6]


def test_lm_text_with_test_sentences_is_used_with_a_loud_warning(tiny_librispeech, tmp_path):
    lm_text = tmp_path / "lm.txt"
    lm_text.write_text("\n".join(transcripts(tiny_librispeech, "test-clean")) + "\n")
    out = tmp_path / "run"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--lm_decoding=True", f"--lm_text={lm_text}",
        *TWO_STEPS,
    )
    result = json.loads((out / "results.json").read_text())["test-clean"]
    assert result["lm_text_overlap"]["percent"] == 100.0
    assert result["lm"]["text"] == f"lm_text {lm_text}"
    assert "!!! test-clean: " in (out / "log.txt").read_text()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--lm_text=/no/such/lm.txt"], "error: lm_text /no/such/lm.txt does not exist"),
        (["--lm_order=0"], "error: lm_order must be a positive integer, got 0"),
        (["--token_type=sentencepiece"], "error: lm_decoding: True needs token_type: char (the "
         "lexicon spells words in characters ending with the space), got token_type: 'sentencepiece'"),
    ],
)
def test_lm_decoding_refuses_bad_settings(overrides, message, tiny_librispeech, tmp_path, recipe_refusal):
    err = recipe_refusal(
        RECIPES / "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={tmp_path}", "--lm_decoding=True", *overrides, *TWO_STEPS,
    )
    assert message in err and "Traceback" not in err
