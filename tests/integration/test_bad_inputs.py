"""The bad-input table of the recipes' data preparation, the CLI, the exported model, the
checkpoints and the benchmark tools, in one place: every entry fails with a clear error naming
the file and the problem, and leaves what was written before as it was. A dataset folder of the
user's given to a benchmark or the demo is used as it is, never written into.

Run in-process where the product's entry point is a function (the recipes and tools turn these
errors into a non-zero exit with the message as their last line); the CLI entries run its
``main`` and check its exit status.
"""

import errno
import hashlib
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import soundfile as sf
import torch
from test_export_and_transcribe import exported, scratch_ctc_run  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "LibriSpeech"
sys.path.insert(0, str(ROOT / "tools" / "data"))  # make_digits_imagefolder, a script


@dataclass
class Case:
    run: Callable  # raises, or returns (exit status, what it printed)
    error: str  # a regular expression: the file and the problem
    keep: tuple = ()  # folders whose every file must be left as it was


def snapshot(folders) -> dict:
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file()}


class Inputs:
    """Copies of the tiny corpora and the exported model, made when an entry asks for them."""

    def __init__(self, request, tmp_path):
        self.request, self.tmp = request, tmp_path

    @property
    def corpus(self) -> Path:
        """A copy of the tiny LibriSpeech's training split (the entries damage it)."""
        root = self.tmp / "LibriSpeech"
        if not root.is_dir():
            shutil.copytree(self.request.getfixturevalue("tiny_librispeech") / "train-clean-100",
                            root / "train-clean-100")
        return root

    def flac(self, index=0) -> Path:
        return sorted(self.corpus.rglob("*.flac"))[index]

    def prepare(self, **splits):
        from speechpos.speech.data.librispeech import prepare_librispeech

        splits = splits or {"tr_splits": ["train-clean-100"]}
        prepare_librispeech(self.corpus, self.tmp / "prep", progress=False, **splits)

    @property
    def exported(self) -> Path:
        return self.request.getfixturevalue("exported")

    @property
    def kws(self) -> Path:
        root = self.tmp / "speech_commands"
        if not root.is_dir():
            shutil.copytree(self.request.getfixturevalue("tiny_speech_commands"), root)
        return root


def cli(*argv):
    """``speechpos *argv`` in this process: (exit status, its standard error)."""
    from speechpos.cli import main

    with mock.patch("sys.stderr", new_callable=lambda: __import__("io").StringIO()) as err:
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def rewrite(path: Path, data: np.ndarray, rate: int) -> None:
    sf.write(path, data, rate, format="FLAC")


ENTRIES: dict[str, Callable[[Inputs], Case]] = {}


def entry(name):
    def register(make):
        ENTRIES[name] = make
        return make
    return register


@entry("corrupt audio")
def _(inp):
    flac = inp.flac()
    flac.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    return Case(inp.prepare, rf"{flac.name}: unreadable or corrupt audio file", (inp.corpus,))


@entry("empty audio file")
def _(inp):
    flac = inp.flac()
    flac.write_bytes(b"")
    return Case(inp.prepare, rf"{flac.name}: (unreadable or corrupt audio file|audio file holds no samples)",
                (inp.corpus,))


@entry("truncated audio")
def _(inp):
    flac = inp.flac()
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    return Case(inp.prepare, rf"{flac.name}: unreadable or corrupt audio file", (inp.corpus,))


@entry("8 kHz audio")
def _(inp):
    flac = inp.flac()
    data, _ = sf.read(flac)
    rewrite(flac, data[::2], 8000)
    return Case(inp.prepare, rf"{flac.name}: sample rate 8000 Hz, expected 16000 Hz", (inp.corpus,))


@entry("stereo audio")
def _(inp):
    flac = inp.flac()
    data, rate = sf.read(flac)
    rewrite(flac, np.stack([data, data], axis=1), rate)
    return Case(inp.prepare, rf"{flac.name}: 2 channels, expected mono", (inp.corpus,))


@entry("missing transcript line")
def _(inp):
    flac = inp.flac()
    trans = next(flac.parent.glob("*.trans.txt"))
    utt = flac.name[: -len(".flac")]
    trans.write_text("".join(line for line in trans.read_text().splitlines(True) if not line.startswith(utt)))
    return Case(inp.prepare, rf"{flac.name}: no transcript line for {utt}", (inp.corpus,))


@entry("empty transcript")
def _(inp):
    flac = inp.flac()
    trans = next(flac.parent.glob("*.trans.txt"))
    utt = flac.name[: -len(".flac")]
    trans.write_text("".join(f"{utt}\n" if line.startswith(utt) else line
                             for line in trans.read_text().splitlines(True)))
    return Case(inp.prepare, rf"{trans.name}: line \d+: empty transcript for {utt}", (inp.corpus,))


@entry("utterance shorter than one patch")
def _(inp):
    from speechpos.inference.export import load_export

    short = inp.tmp / "short.flac"
    rewrite(short, np.zeros(40, dtype=np.float32), 16000)
    model = load_export(inp.exported)
    return Case(lambda: model.load_audio(str(short)), r"short\.flac: .*shorter than one", (inp.tmp,))


@entry("missing split")
def _(inp):
    return Case(lambda: inp.prepare(tr_splits=["train-clean-100"], dev_splits=["dev-clean"]),
                r"dev-clean", (inp.corpus,))


@entry("unknown hparams key")
def _(inp):
    from speechpos.recipes import load_recipe_hparams

    return Case(lambda: load_recipe_hparams(["hparams/ctc.yaml", "--no_such_key=1"], str(RECIPES / "asr_ctc.py")),
                r"ctc\.yaml: .*no_such_key")


@entry("checkpoint of another model")
def _(inp):
    from speechpos.speech.model import build_speech_encoder, load_encoder_state

    path = inp.tmp / "other.ckpt"
    torch.save(build_speech_encoder(num_layers=1, d_model=16, nhead=2, d_ffn=32).state_dict(), path)
    model = build_speech_encoder(num_layers=1, d_model=32, nhead=2, d_ffn=64)
    return Case(lambda: load_encoder_state(model, path),
                r"other\.ckpt was saved from a different architecture: .* of another shape", (inp.tmp,))


@entry("garbage checkpoint")
def _(inp):
    from speechpos.speech.model import build_speech_encoder, load_encoder_state

    path = inp.tmp / "garbage.ckpt"
    path.write_bytes(bytes(range(256)) * 4)
    model = build_speech_encoder(num_layers=1, d_model=16, nhead=2, d_ffn=32)
    return Case(lambda: load_encoder_state(model, path), r"garbage\.ckpt: not a readable PyTorch checkpoint",
                (inp.tmp,))


@entry("exported model folder with a weight missing")
def _(inp):
    folder = inp.tmp / "model"
    shutil.copytree(inp.exported, folder)
    (folder / "ctc_lin.ckpt").unlink()
    return Case(lambda: cli("transcribe", folder, inp.flac()), r"ctc_lin\.ckpt: missing", (folder, inp.corpus))


@entry("transcript list naming missing files")
def _(inp):
    listing = inp.tmp / "files.txt"
    listing.write_text(f"{inp.flac()}\n{inp.tmp / 'gone.flac'}\n")
    out = inp.tmp / "out" / "transcripts.txt"
    out.parent.mkdir()
    return Case(lambda: cli("transcribe", inp.exported, "--list", listing, "--output", out, "--no-progress"),
                r"gone\.flac: .*not found", (inp.corpus,))


@entry("keyword folder with a wrong rate")
def _(inp):
    from speechpos.speech.data.speech_commands import prepare_speech_commands

    wav = sorted((inp.kws / "yes").glob("*.wav"))[0]
    data, _ = sf.read(wav)
    sf.write(wav, data[::2], 8000)
    return Case(lambda: prepare_speech_commands(inp.kws, inp.tmp / "kws_prep"),
                rf"{wav.name}: sample rate is 8000 Hz, expected 16000 Hz", (inp.kws,))


@entry("corpus folder that is not one")
def _(inp):
    from speechpos.experiments.runs import made_corpus

    folder = inp.tmp / "my_recordings"
    folder.mkdir()
    (folder / "talk.flac").write_bytes(b"")
    return Case(lambda: made_corpus(folder, None, 0, 1, inp.tmp / "prep"),
                r"my_recordings: no train-clean-100 folder, not a LibriSpeech-layout corpus", (folder,))


@entry("vision benchmark on a folder that is not an ImageFolder")
def _(inp):
    from make_digits_imagefolder import digits_or_existing

    folder = inp.tmp / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"png")
    return Case(lambda: digits_or_existing(folder), r"photos: not an ImageFolder", (folder,))


@entry("transcribe on good and bad files")
def _(inp):
    bad = inp.tmp / "bad.flac"
    bad.write_bytes(b"not audio")
    out = inp.tmp / "out" / "transcripts.txt"
    out.parent.mkdir()

    def run():
        code, err = cli("transcribe", inp.exported, inp.flac(0), bad, inp.flac(1), "--output", out, "--no-progress")
        done = [line.split("\t")[0] for line in out.read_text().splitlines()]
        assert done == [str(inp.flac(0)), str(inp.flac(1))]  # the good ones transcribed
        assert "2 file(s) transcribed, 0 already done, 1 failed" in err
        return code, err

    return Case(run, r"bad\.flac: cannot decode audio", (inp.corpus,))


@entry("disk full while writing a checkpoint")
def _(inp):
    from speechpos.checkpointing import Checkpointer

    folder, model = inp.tmp / "save", torch.nn.Linear(4, 4)
    Checkpointer(folder, recoverables={"model": model}).save_checkpoint()
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):  # half a file, then the disk is full
        real_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(Path(f).read_bytes()[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    def run():
        try:
            with mock.patch("torch.save", disk_full):
                Checkpointer(folder, recoverables={"model": model}).save_and_keep_only()
        finally:
            fresh = torch.nn.Linear(4, 4)
            Checkpointer(folder, recoverables={"model": fresh}).recover_if_possible()
            assert torch.equal(fresh.weight, saved)  # the previous checkpoint still loads

    return Case(run, r"save: writing a checkpoint failed \(No space left on device\)")


@pytest.mark.parametrize("name", list(ENTRIES))
def test_bad_input(name, request, tmp_path):
    inputs = Inputs(request, tmp_path)
    case = ENTRIES[name](inputs)
    before = snapshot(case.keep)
    try:
        code, message = case.run()
    except SystemExit as stop:
        code, message = (1, str(stop.code)) if isinstance(stop.code, str) else (stop.code, "")
    except Exception as err:  # the recipes and tools exit non-zero with it
        code, message = 1, f"{type(err).__name__}: {err}"
    else:
        assert code != 0, message
    assert re.search(case.error, message), message
    assert snapshot(case.keep) == before, "files already written were changed"


# ---------------------------------------------------------------- a user's dataset, used as it is


def test_a_users_imagefolder_is_used_as_it_is_by_the_vision_benchmark(tmp_path):
    """tools/studies/vision_benchmark.py --data FOLDER once wrote sklearn's ten digit classes beside the
    user's own ten (the fine-tuning then refused "20 classes")."""
    from make_digits_imagefolder import digits_or_existing
    from PIL import Image

    for split in ("train", "val"):
        for label in ("shirt", "shoe"):
            (tmp_path / split / label).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / label / "0.png")
    before = snapshot([tmp_path])
    assert digits_or_existing(tmp_path) is True
    assert snapshot([tmp_path]) == before


def test_a_users_librispeech_folder_is_used_as_it_is_by_the_speech_benchmarks_and_the_demo(
        tiny_librispeech, tmp_path, capsys):
    """made_corpus (ctc_baseline, ctc_ablation, gpu_check, pretext_probe, ...) and run_demo share
    make_or_use_corpus: a LibriSpeech-layout folder not made here is read, never written."""
    from speechpos.experiments.runs import made_corpus

    corpus = tmp_path / "LibriSpeech"
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        shutil.copytree(tiny_librispeech / split, corpus / split)
    before = snapshot([corpus])
    prep = made_corpus(corpus, "tiny", 0, 1, tmp_path / "prep")
    assert snapshot([corpus]) == before and (prep / "train-clean-100.csv").is_file()
    assert "a LibriSpeech-layout corpus not made here, used as it is" in capsys.readouterr().out
    demo = (ROOT / "tools" / "run_demo.py").read_text()
    assert "make_or_use_corpus(corpus" in demo and "make_corpus(corpus" not in demo


def test_a_users_speech_commands_folder_is_used_as_it_is_by_the_keyword_benchmark(tiny_speech_commands, tmp_path):
    from speechpos.corpora.speech_commands import MANIFEST, foreign_kws_corpus
    from speechpos.speech.data.speech_commands import prepare_speech_commands

    corpus = tmp_path / "speech_commands"
    shutil.copytree(tiny_speech_commands, corpus)
    (corpus / MANIFEST).unlink()  # Google's folder has no record of ours
    before = snapshot([corpus])
    assert foreign_kws_corpus(corpus) and not foreign_kws_corpus(tiny_speech_commands)
    prepare_speech_commands(corpus, tmp_path / "prep")
    assert snapshot([corpus]) == before
    assert "if foreign_kws_corpus(data):" in (ROOT / "tools" / "studies" / "kws_benchmark.py").read_text()
