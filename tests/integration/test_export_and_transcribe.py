"""A trained run exported as a SpeechBrain model (EncoderASR loads it) and transcription of
many files (batches, word times, bad files skipped, resumable output)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_speech_recipes import TINY_MODEL, _utterance_and_copies, run_recipe

from speechpos.experiments.runs import run_python

CLI = [sys.executable, "-m", "speechpos.cli"]


@pytest.fixture(scope="module")
def scratch_ctc_run(tiny_librispeech, tmp_path_factory):
    """A tiny CTC run from scratch (conformer, sinusoidal positions, characters)."""
    out = tmp_path_factory.mktemp("ctc_scratch") / "run"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}",
        f"--output_folder={out}", "--number_of_steps=60", "--dynamic_batching=False",
        *TINY_MODEL,
    )
    return out


@pytest.fixture(scope="module")
def exported(scratch_ctc_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    proc = run_python([*CLI, "export", str(scratch_ctc_run), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def run_model(scratch_ctc_run):
    from speechpos.inference import SpeechModel

    return SpeechModel.from_run(scratch_ctc_run)


def _test_files(tiny_librispeech):
    return sorted(str(p) for split in ("test-clean", "dev-clean")
                  for p in Path(tiny_librispeech, split).rglob("*.flac"))


def test_encoder_asr_loads_every_weight_and_matches_the_run(exported, run_model, tiny_librispeech, tmp_path):
    from speechbrain.inference.ASR import EncoderASR

    asr = EncoderASR.from_hparams(source=str(exported), savedir=str(tmp_path / "sb"))
    # Every tensor of the run's modules, loaded (SpeechBrain's loader would only warn).
    ours = {"encoder": run_model.encoder, "ctc_lin": run_model.ctc_lin}
    for name, module in ours.items():
        theirs = asr.hparams.pretrainer.loadables[name].state_dict()
        assert theirs.keys() == module.state_dict().keys()
        for key, value in module.state_dict().items():
            assert torch.equal(theirs[key].cpu(), value.cpu()), (name, key)
    files = _test_files(tiny_librispeech)
    assert len(files) >= 6
    ours_text = [run_model.transcribe_file(f) for f in files]
    assert sum(map(len, ours_text)) > 0  # the model emits characters: the comparison means something
    theirs_text = [" ".join(asr.transcribe_file(f).split()) for f in files]
    assert theirs_text == ours_text
    # The same log-probabilities, batch included (EncoderASR.transcribe_batch and encode_batch).
    wavs = [run_model.load_audio(f) for f in files[:3]]
    batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    lengths = torch.tensor([len(w) for w in wavs], dtype=torch.float) / batch.shape[1]
    ref, ref_lens = run_model.ctc_log_probs(batch, lengths)
    theirs = asr.encode_batch(batch, lengths)
    valid = torch.arange(ref.shape[1])[None, :] < torch.round(ref_lens * ref.shape[1])[:, None]
    assert torch.allclose(theirs[valid], ref[valid], atol=1e-5)
    assert bool((theirs[~valid].argmax(-1) == 0).all())  # padding: a sure blank
    words, _ = asr.transcribe_batch(batch, lengths)
    assert [" ".join(w.split()) for w in words] == run_model.transcribe_batch(batch, lengths)


def test_a_files_transcript_and_log_probs_do_not_depend_on_its_batch(exported, tiny_librispeech, tmp_path):
    """Transcribed alone with EncoderASR and batched by `speechpos transcribe`, 3 of 60 files of
    the demo's model read differently: padding reached the outputs (the frame count, the
    convolution front-end's and the conformer convolution's edges). EncoderASR also returned double
    and leading spaces."""
    from speechbrain.inference.ASR import EncoderASR

    from speechpos.inference.export import load_export
    from speechpos.inference.transcribe import transcribe_files

    asr = EncoderASR.from_hparams(source=str(exported), savedir=str(tmp_path / "sb"))
    model = load_export(exported)
    files = sorted(_test_files(tiny_librispeech), key=lambda f: len(model.load_audio(f)))
    wavs = [model.load_audio(f) for f in files]
    one = torch.ones(1)
    for wav in wavs[:-2]:  # each file, alone and padded in a batch with the two longest
        batch = torch.nn.utils.rnn.pad_sequence([wav, *wavs[-2:]], batch_first=True)
        lengths = torch.tensor([len(w) for w in (wav, *wavs[-2:])], dtype=torch.float) / batch.shape[1]
        alone, alone_len = model.ctc_log_probs(wav[None], one)
        batched, batched_lens = model.ctc_log_probs(batch, lengths)
        n = alone.shape[1]
        assert round(float(batched_lens[0]) * batched.shape[1]) == n and float(alone_len) == 1.0
        assert torch.allclose(batched[0, :n], alone[0], atol=1e-4), (batched[0, :n] - alone[0]).abs().max()
        assert model.transcribe_batch(batch, lengths)[0] == model.transcribe_batch(wav[None], one)[0]
        theirs_alone, theirs = asr.encode_batch(wav[None], one), asr.encode_batch(batch, lengths)
        assert torch.allclose(theirs[0, :n], theirs_alone[0], atol=1e-4)
        text = asr.transcribe_batch(batch, lengths)[0][0]
        assert text == asr.transcribe_batch(wav[None], one)[0][0] == " ".join(text.split())
    # speechpos transcribe as the CLI runs it: every file in one batch, then one file a batch.
    for name, seconds in (("batched", 1000.0), ("alone", 1e-3)):
        transcribe_files(model, files, output=tmp_path / f"{name}.jsonl", fmt="jsonl", batch_seconds=seconds,
                         progress=False)
    batched, alone = ([json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
                      for name in ("batched", "alone"))
    assert [r["text"] for r in batched] == [r["text"] for r in alone]
    assert sum(len(r["text"]) for r in batched) > 0


def test_encoder_asr_reads_44k_stereo_through_its_audio_normalizer(exported, run_model, tiny_librispeech, tmp_path):
    import difflib

    from speechbrain.inference.ASR import EncoderASR

    files = _utterance_and_copies(tiny_librispeech, tmp_path / "audio")
    asr = EncoderASR.from_hparams(source=str(exported), savedir=str(tmp_path / "sb"))
    wav = asr.load_audio(str(files["stereo44k"]), savedir=str(tmp_path / "sb_audio"))
    assert wav.ndim == 1 and abs(len(wav) - len(run_model.load_audio(files["orig"]))) <= 1
    theirs = " ".join(asr.transcribe_file(str(files["stereo44k"]), savedir=str(tmp_path / "sb_audio")).split())
    ours = run_model.transcribe_file(files["stereo44k"])
    assert difflib.SequenceMatcher(None, theirs, ours).ratio() > 0.9, (theirs, ours)


def test_exported_folder_holds_a_model_card_and_loads_in_speechpos(exported, scratch_ctc_run, run_model,
                                                                  tiny_librispeech):
    from speechpos.inference import SpeechModel

    card = (exported / "README.md").read_text()
    results = json.loads((scratch_ctc_run / "results.json").read_text())
    assert f"| test-clean | {results['test-clean']['WER']} |" in card
    assert f"speechpos export {scratch_ctc_run}" in card
    model = SpeechModel.from_run(exported)
    files = _test_files(tiny_librispeech)[:4]
    assert [model.transcribe_file(f) for f in files] == [run_model.transcribe_file(f) for f in files]


def test_export_refuses_a_foreign_folder_and_a_tampered_checkpoint(exported, tmp_path):
    from speechpos.inference.export import ExportError, load_export

    bad = tmp_path / "bad"
    bad.mkdir()
    for f in exported.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    state = torch.load(bad / "ctc_lin.ckpt")
    state.pop(next(iter(state)))
    torch.save(state, bad / "ctc_lin.ckpt")
    with pytest.raises(ExportError, match=r"ctc_lin\.ckpt: does not fit ctc_lin: 1 keys missing \(e\.g\. w\.weight\)"):
        load_export(bad)
    other = tmp_path / "other"
    other.mkdir()
    (other / "hyperparams.yaml").write_text("x: 1\n")
    proc = run_python([*CLI, "export", str(other), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"speechpos: error: {other / 'hyperparams.yaml'}: no encoder, compute_features, "
                                   "normalize, sample_rate, patch_frames; not the hparams of a speechpos speech recipe")


def test_transcribe_skips_bad_files_writes_jsonl_and_resumes(exported, run_model, tiny_librispeech, tmp_path):
    files = _test_files(tiny_librispeech)
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + b"\x00" * 100)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype="float32"), 16000)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([files[0], str(corrupt), *files[1:3], str(empty)]) + "\n")
    out = tmp_path / "out.jsonl"
    cmd = [*CLI, "transcribe", str(exported), "--list", str(listing), "--output", str(out),
           "--format", "jsonl", "--times", "--batch-seconds", "1"]  # a batch per file: no padding
    proc = run_python(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("speechpos: error:")]
    from speechpos.speech.data.audio import AudioError, read_audio_checked

    with pytest.raises(AudioError) as strict:
        read_audio_checked(str(corrupt))
    assert errors == [f"speechpos: error: {strict.value}",
                      f"speechpos: error: {empty}: 0 samples (0.000 s) is shorter than one patch (640 samples)"]
    assert "3 file(s) transcribed, 0 already done, 2 failed" in proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in records] == files[:3]
    assert [r["text"] for r in records] == [run_model.transcribe_file(f) for f in files[:3]]
    for r in records:
        assert [w[0] for w in r["words"]] == r["text"].split()
        assert all(0 <= s < e <= r["seconds"] + 0.04 for _, s, e in r["words"])
        ends = [e for _, _, e in r["words"]]
        starts = [s for _, s, _ in r["words"]]
        assert all(e <= s for e, s in zip(ends[:-1], starts[1:], strict=True))  # in order, no overlap
    # A re-run skips what is done and adds the rest; the bad files are tried (and reported) again.
    listing.write_text("\n".join([*files[:4], str(corrupt)]) + "\n")
    proc = run_python(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "1 file(s) transcribed, 3 already done, 1 failed" in proc.stderr
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == files[:4]


def test_transcribe_writes_ctm(exported, tiny_librispeech, tmp_path):
    files = _test_files(tiny_librispeech)[:2]
    out = tmp_path / "out.ctm"
    proc = run_python([*CLI, "transcribe", str(exported), *files, "--output", str(out), "--format", "ctm",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    named = {line.split(" ")[0] if not line.startswith(";;") else line.split(" ")[1] for line in lines}
    assert named == set(files)
    for line in lines:
        if not line.startswith(";;"):
            name, channel, start, dur, word = line.split(" ")
            assert channel == "1" and float(start) >= 0 and float(dur) > 0 and word


def test_the_lm_goes_into_the_export_from_text_or_arpa(scratch_ctc_run, exported, tiny_librispeech, tmp_path):
    from speechpos.inference import SpeechModel

    sentences = []
    for trans in sorted(Path(tiny_librispeech, "train-clean-100").rglob("*.trans.txt")):
        sentences += [line.split(" ", 1)[1] for line in trans.read_text().splitlines()]
    text = tmp_path / "lm.txt"
    text.write_text("\n".join(sentences) + "\n")
    with_lm = tmp_path / "with_lm"
    proc = run_python([*CLI, "export", str(scratch_ctc_run), str(with_lm), "--lm-text", str(text)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((with_lm / "speechpos_export.json").read_text())
    assert meta["lm"]["source"] == f"3-gram of lm_text {text}"
    files = _test_files(tiny_librispeech)[:4]
    out = tmp_path / "lm.jsonl"
    proc = run_python([*CLI, "transcribe", str(with_lm), *files, "--lm", "--format", "jsonl",
                           "--output", str(out), "--batch-seconds", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    # The recipe's decoder (LMDecoder) on the run's own log-probabilities, with the same files.
    direct = SpeechModel.from_run(scratch_ctc_run)
    direct.use_lm(with_lm / "lm.arpa", with_lm / "lm_lexicon.txt", lm_weight=meta["lm"]["lm_weight"],
                  word_score=meta["lm"]["word_score"], beam_size=meta["lm"]["beam_size"])
    assert texts == [direct.transcribe_file(f) for f in files]
    vocabulary = {w for s in sentences for w in s.split()}
    assert any(texts) and all(set(t.split()) <= vocabulary for t in texts)
    # A ready ARPA file: its unigrams make the lexicon; the same LM gives the same transcripts.
    from_arpa = tmp_path / "from_arpa"
    proc = run_python([*CLI, "export", str(scratch_ctc_run), str(from_arpa), "--lm-arpa",
                           str(with_lm / "lm.arpa")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    model = SpeechModel.from_run(from_arpa)
    model.use_lm()
    assert [model.transcribe_file(f) for f in files] == texts


def test_the_corpus_lm_text_goes_into_the_export_by_default(exported, tiny_librispeech):
    """The run had no LM: the export builds one from the corpus's LM text and its model card says
    which text, how many words, and the out-of-lexicon rate of each test split."""
    from speechpos.corpora.librispeech import LM_TEXT

    lm = json.loads((exported / "speechpos_export.json").read_text())["lm"]
    text = tiny_librispeech / LM_TEXT
    assert lm["text"] == f"lm_text {text}" and lm["words"] == len(text.read_text().split())
    assert set(lm["out_of_lexicon"]) == {"dev-clean", "test-clean", "test-other"}
    lexicon = (exported / "lm_lexicon.txt").read_text().splitlines()
    assert lm["lexicon_words"] == len(lexicon) > 1000
    card = (exported / "README.md").read_text()
    assert "## Language model" in card and f"{lm['words']} words of text" in card and str(text) in card
    for split, oov in lm["out_of_lexicon"].items():
        assert f"| {split} | {oov['words']} | {oov['out_of_lexicon']} | {oov['percent']} |" in card


def test_lm_refusals_are_one_line_errors(scratch_ctc_run, tiny_librispeech, tmp_path):
    audio = _test_files(tiny_librispeech)[0]
    exported = tmp_path / "no_lm"
    proc = run_python([*CLI, "export", str(scratch_ctc_run), str(exported), "--no-lm"],
                      capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = run_python([*CLI, "transcribe", str(exported), audio, "--lm"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("speechpos: error: this model has no n-gram LM: export it with --lm-text "
                                   "or --lm-arpa, or train it with --lm_decoding=True")
    proc = run_python([*CLI, "transcribe", str(exported), audio, "--lm", "--format", "ctm"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("speechpos: error: word times come from the greedy CTC path: "
                                   "--lm goes with --format text or jsonl")


def test_a_sentencepiece_model_decodes_the_same_through_encoder_asr(tiny_librispeech, tmp_path):
    """SentencePiece units: the export moves the CTC rows to SpeechBrain's convention (blank and
    <unk> share index 0), so EncoderASR's greedy decoding gives the run's transcripts."""
    from speechbrain.inference.ASR import EncoderASR

    from speechpos.inference import SpeechModel

    run = tmp_path / "sp_run"
    run_recipe(
        "asr_ctc.py", "hparams/ctc.yaml", f"--data_folder={tiny_librispeech}", f"--output_folder={run}",
        "--number_of_steps=150", "--dynamic_batching=False", "--token_type=sentencepiece",
        "--sentencepiece_vocab=40", *TINY_MODEL,
    )
    out = tmp_path / "sp_model"
    proc = run_python([*CLI, "export", str(run), str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    asr = EncoderASR.from_hparams(source=str(out), savedir=str(tmp_path / "sb"))
    ours = SpeechModel.from_run(run)
    files = _test_files(tiny_librispeech)
    ours_text = [ours.transcribe_file(f) for f in files]
    assert sum(map(len, ours_text)) > 0
    assert [" ".join(asr.transcribe_file(f).split()) for f in files] == ours_text
