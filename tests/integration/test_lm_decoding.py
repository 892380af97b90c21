"""asr_ctc.py with ``--lm_decoding=True`` on the tiny generated corpus: greedy and n-gram LM
results side by side, the LM text's overlap with the test splits, and the refusals."""

import json
import sys
from pathlib import Path

import pytest
from test_speech_recipes import RECIPES, ROOT, TINY_MODEL, run_recipe

from speechpos.corpora.librispeech import LM_TEXT
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


def test_lm_decoding_adds_wer_lm_beside_greedy(lm_run, tiny_librispeech):
    """By default the LM is built from the corpus's LM text; every test split (test-other too)
    gets WER_lm, the overlap (none) and the out-of-lexicon rate."""
    out = lm_run
    results = json.loads((out / "results.json").read_text())
    lm_text = tiny_librispeech / LM_TEXT
    words = len(lm_text.read_text().split())
    assert sorted(results) == ["dev-clean", "test-clean", "test-other"]
    for split, r in results.items():
        assert r["decoding"] == "greedy" and 0 <= r["WER"] and 0 <= r["WER_lm"] and 0 <= r["CER_lm"]
        assert r["lm_text_overlap"]["of"] == r["utterances"] > 0
        assert r["lm_text_overlap"]["sentences"] == 0
        assert r["lm"] == {
            "text": f"lm_text {lm_text}", "words": words, "order": 3, "units": "word", "prune": 0,
            "lm_weight": 1.0, "word_score": -1.0, "beam_size": 50,
        }
        oov = r["lm_out_of_lexicon"]
        refs = transcripts(tiny_librispeech, split)
        assert oov["words"] == sum(len(t.split()) for t in refs) and 0 <= oov["out_of_lexicon"] < oov["words"]
        assert "%WER" in (out / f"wer_lm_{split}.txt").read_text()
    assert f"LM text: lm_text {lm_text} (" in (out / "log.txt").read_text()
    assert f", {words} words)" in (out / "log.txt").read_text()
    arpa = (out / "save" / "lm_3gram.arpa").read_text()
    assert arpa.startswith("\\data\\\nngram 1=") and "\\3-grams:" in arpa
    lexicon = (out / "save" / "lm_lexicon.txt").read_text().splitlines()
    assert lexicon and all(line.endswith(" |") for line in lexicon)


def test_tune_lm_grid_searches_weights_beams_orders_and_lexicon_free_on_dev(lm_run, tmp_path):
    proc = run_python(
        [sys.executable, str(ROOT / "tools" / "studies" / "tune_lm.py"), str(lm_run), "--lm_weights", "0", "2",
         "--word_scores", "-1", "0.5", "--beam_sizes", "20", "5", "--orders", "3", "4", "--prune", "0", "1",
         "--lexicon-free", "--char-orders", "5", "--test", "--docs", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "out-of-lexicon rate: dev " in out and "test-other " in out
    assert out.count("| lm_weight \\ word_score | -1 | 0.5 |") == 4  # 2 orders x 2 prunes of the word LM
    assert out.count("| lm_weight \\ word_score | 0 |") == 2  # char x 2 prunes: no lexicon, no word score
    assert "## word 4-gram, prune 1" in out and "## character 5-gram, prune 0" in out
    assert "| beam | dev WER | dev CER | real-time factor |" in out
    assert out.count("best: --lm_weight=") == 6 and "best on dev: " in out
    report = json.loads((tmp_path / "lm_tuning.json").read_text())
    lms = {(r["units"], r["order"], r["prune"]): r for r in report["lms"]}
    assert set(lms) == {("word", 3, 0), ("word", 3, 1), ("word", 4, 0), ("word", 4, 1), ("char", 5, 0), ("char", 5, 1)}
    for r in lms.values():
        assert [b["beam_size"] for b in r["beams"]] == [20, 5] and len(r["grid"]) == (4 if r["units"] == "word" else 2)
        assert all(c["rtf"] > 0 for c in r["grid"])
        assert set(r["test"]) == {"test-clean", "test-other"}
    # pruning singletons leaves fewer n-grams of order 2 and up, the unigrams all
    assert lms["word", 4, 1]["ngrams"]["1"] == lms["word", 4, 0]["ngrams"]["1"]
    assert sum(lms["word", 4, 1]["ngrams"].values()) < sum(lms["word", 4, 0]["ngrams"].values())
    text = (tmp_path / "lm_tuning.md").read_text()
    assert "| real-time factor |" in text
    # the report names no machine's folders: the run's path is cut to its last folder
    assert str(lm_run.parent) not in text and str(lm_run.parent) not in (tmp_path / "lm_tuning.json").read_text()


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
        (["--lm_order=0"], "error: lm_order must be an integer from 1 to 6 (the decoder's KenLM reads no "
         "longer n-grams), got 0"),
        # the character LM of lexicon-free decoding once defaulted to 8 and crashed the decoder's KenLM
        (["--lm_lexicon_free=True", "--lm_char_order=8"], "error: lm_char_order must be an integer from 1 to 6 "
         "(the decoder's KenLM reads no longer n-grams), got 8"),
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
