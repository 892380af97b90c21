"""Shared pytest fixtures of the speechpos test suite."""

import fcntl
import logging
import os
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs one worker per core) each worker, and every recipe
    it starts as a subprocess, keeps to one torch thread: two workers with two threads each on
    two cores would fight over them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def _loggers() -> list[logging.Logger]:
    return [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                   if isinstance(lg, logging.Logger))]


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """Put the process's logging back after each test. A recipe run in-process (``main()``,
    ``runpy``) sets up SpeechBrain's logging as a real run does: ``dictConfig`` binds console
    handlers to the test's captured stdout, which pytest closes afterwards, and disables the
    loggers it does not name. A later test's log records then went to a closed stream (a
    ``--- Logging error ---`` traceback on its stderr) or nowhere. Stream handlers of loggers
    that did not exist before the test are dropped."""
    saved = {lg: (list(lg.handlers), lg.level, lg.disabled, lg.propagate) for lg in _loggers()}
    yield
    for lg in _loggers():
        if lg in saved:
            lg.handlers[:], lg.level, lg.disabled, lg.propagate = saved[lg]
        else:
            lg.handlers[:] = [h for h in lg.handlers if not isinstance(h, logging.StreamHandler)]


def made_once(tmp_path_factory, name: str, make) -> Path:
    """A folder ``name`` filled by ``make(folder)`` once per test run. Under pytest-xdist the
    workers share it: the first one makes it while the others wait on a file lock (each making
    its own copy cost every worker the same seconds); alone, pytest makes it in its own temp."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent / f"shared-{run}"
    shared.mkdir(exist_ok=True)
    folder, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # left half-made by a worker that failed
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


# ---------------------------------------------------------------------------------------------
# Speech data (issue 3): a tiny offline corpus in LibriSpeech layout, made once per session.
# Needs the Debian packages of tools/setup/apt-packages.txt (bash tools/setup/setup.sh installs them).
# ---------------------------------------------------------------------------------------------

TINY_LIBRISPEECH_SEED = 1234


@pytest.fixture(scope="session")
def tiny_librispeech(tmp_path_factory):
    """Path of the root of a tiny LibriSpeech-layout corpus (made in a few seconds).

    Holds ``train-clean-100`` (4 speakers, ~10 utterances, ~40 s), ``dev-clean`` and
    ``test-clean`` (2 speakers, ~4 utterances, ~15 s each): 16 kHz mono FLAC and
    ``<spk>-<chapter>.trans.txt``, as made by ``tools/data/make_corpus.py --size tiny --seed 1234``.
    Treat it as read-only (copy what a test needs to change).
    """
    from speechpos.corpora.librispeech import make_corpus

    def make(folder):
        make_corpus(folder / "LibriSpeech", size="tiny", seed=TINY_LIBRISPEECH_SEED, jobs=2, progress=False)

    return made_once(tmp_path_factory, "tiny_librispeech", make) / "LibriSpeech"


# ---------------------------------------------------------------------------------------------
# (end of the speech data fixtures)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Keyword spotting (issue 14): a tiny corpus in Google Speech Commands layout, made once.
# ---------------------------------------------------------------------------------------------

TINY_KWS_SEED = 1234


@pytest.fixture(scope="session")
def tiny_speech_commands(tmp_path_factory):
    """Root of a tiny Speech Commands-layout corpus (16 TTS speakers x 30 words, ~8 s to make):
    ``tools/data/make_kws_corpus.py --size tiny --seed 1234``. Treat it as read-only."""
    from speechpos.corpora.speech_commands import make_kws_corpus

    def make(folder):
        make_kws_corpus(folder / "speech_commands", size="tiny", seed=TINY_KWS_SEED, jobs=2)

    return made_once(tmp_path_factory, "tiny_kws", make) / "speech_commands"


@pytest.fixture(scope="session")
def tiny_speech_commands_other(tmp_path_factory):
    """The tiny corpus with the flite engine held out: its speakers (2) only in
    ``testing_other_list.txt`` (``tools/data/make_kws_corpus.py --size tiny --held-out-engine flite``).
    Treat it as read-only."""
    from speechpos.corpora.speech_commands import make_kws_corpus

    def make(folder):
        make_kws_corpus(folder / "speech_commands", size="tiny", seed=TINY_KWS_SEED, jobs=2,
                        held_out_engine="flite")

    return made_once(tmp_path_factory, "tiny_kws_other", make) / "speech_commands"


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for the tests of a module that train in-process (steadier, and leaves
    the other core to the recipes run as subprocesses); the count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def recipe_refusal(monkeypatch, capsys):
    """Run a recipe script in this process as ``python SCRIPT ARGS...`` runs it (its
    ``__main__`` block and its cwd included), expect its one-line refusal with exit status 2,
    and return its stderr. It spares the 5-10 s a fresh interpreter spends importing torch and
    SpeechBrain; tests of the real process (exit status, nothing else printed) keep a subprocess.
    In a test: ``err = recipe_refusal(RECIPES / "pretrain.py", "hparams/pp.yaml", "--lr=1", "--lr=2")``.
    """

    def run(script: Path, *args: str) -> str:
        script = Path(script)
        monkeypatch.chdir(script.parent)
        monkeypatch.syspath_prepend(str(script.parent))
        monkeypatch.setattr(sys, "argv", [str(script), *map(str, args)])
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(script), run_name="__main__")
        err = capsys.readouterr().err
        assert exit_.value.code == 2, err[-3000:]
        return err

    return run
