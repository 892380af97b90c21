"""Running recipes as subprocesses, a few at a time: what the demo and the benchmarks share.

A :class:`Run` is one recipe invocation with its output folder and the file that marks it done;
:func:`run_all` starts them in list order, ``jobs`` at a time with ``threads`` torch threads
each, skips finished ones (so a rerun resumes) and stops everything when one fails. A run
that needs another's output names it in ``needs``: it starts only once that one is done,
and runs listed after it may start first.

Each recipe runs in a child forked from a server that has already imported torch, torchaudio,
SpeechBrain and speechpos (:func:`start_python`, Python's ``forkserver``): a fresh interpreter
spends seconds importing them, more than a short run trains. The child is a new process all the
same (its own ``sys.argv``, working folder, environment, torch threads and exit status), so a
recipe behaves as under ``python recipe.py``. As with any ``multiprocessing`` start method but
``fork``, the calling script is imported by the server: its top level must be guarded by
``if __name__ == "__main__":`` (every tool's is).

Where CUDA is present, each recipe starts as a fresh interpreter instead (``spawn``): on an
H200 the server's preloading touched CUDA, which makes CUDA unusable in every process forked
after it ("Cannot re-initialize CUDA in forked subprocess"), so a preloaded server cannot serve
GPU runs. The seconds of imports are nothing beside a GPU run.

Example
-------
>>> r = Run("ctc", "asr_ctc.py", "hparams/ctc.yaml", ["--seed=1"], Path("/nonexistent"), "results.json")
>>> r.done
False
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "LibriSpeech"
# The CTC baseline's conformer body as the pretraining study and the demo pretrain and fine-tune
# it (``--frontend`` is a fine-tuning key only).
CONFORMER_BODY = ["--encoder_kind=conformer", "--null_key=True", "--patch_frames=4", "--frontend=patch"]
# The speech pretext that learns (tools/studies/pretext_sweep.py): 2-s crops, every context token an anchor.
ANCHORS_PRETEXT = {"crop_seconds": 2.0, "batch_size": 32, "anchor_ratio": 1.0}
# Pretrainers of the study and the probe screen: name -> (script, hparams, overrides), all on
# the conformer body, plus the settings every pretraining shares.
PRETRAINERS = {
    "MP3 (as built)": ("pretrain.py", "hparams/pp_conformer.yaml",
                       {"crop_seconds": None, "batch_size": 8}),
    "MP3 + anchors": ("pretrain.py", "hparams/pp_conformer.yaml", ANCHORS_PRETEXT),
    "MP3 + anchors, fast step": ("pretrain.py", "hparams/pp_conformer.yaml",
                                 {**ANCHORS_PRETEXT, "target_ratio": 0.33}),
    "MP3 relative": ("pretrain.py", "hparams/pp_conformer.yaml",
                     {"crop_seconds": 2.0, "batch_size": 32, "position_target": "relative",
                      "max_offset": 8}),
    "MP3 + anchors, min gap 2": ("pretrain.py", "hparams/pp_conformer.yaml", {**ANCHORS_PRETEXT, "min_gap": 2}),
    "MP3 + anchors, views": ("pretrain.py", "hparams/pp_conformer.yaml", {**ANCHORS_PRETEXT, "views": True}),
    "MP3 + anchors, coarse 4": ("pretrain.py", "hparams/pp_conformer.yaml", {**ANCHORS_PRETEXT, "coarse": 4}),
    "MP3 + anchors, views, min gap 2": ("pretrain.py", "hparams/pp_conformer.yaml",
                                        {**ANCHORS_PRETEXT, "views": True, "min_gap": 2}),
    "BEST-RQ": ("pretrain_bestrq.py", "hparams/bestrq.yaml", {"conv_mode": "on"}),
    "joint λ=0.05": ("pretrain_joint.py", "hparams/joint.yaml", {"position_weight": 0.05}),
    "joint λ=0.3": ("pretrain_joint.py", "hparams/joint.yaml", {"position_weight": 0.3}),
    "joint λ=1": ("pretrain_joint.py", "hparams/joint.yaml", {"position_weight": 1.0}),
}
# Pretrained with their position embedding and the convolution on: fine-tuned (or probed) as such.
MASKED = ("BEST-RQ", "joint λ=0.05", "joint λ=0.3", "joint λ=1")
PRETRAIN_COMMON = {"dropout": 0.0, "lr": 0.001, "warmup_steps": 300, "number_of_epochs": 100000,
                   "ckpt_interval_minutes": 0, "seed": 0}


@dataclass
class Run:
    """One recipe invocation (``recipes/LibriSpeech/<script> <hparams> <args>``)."""

    name: str
    script: str
    hparams: str
    args: list[str]
    out: Path
    done_file: str
    info: dict = field(default_factory=dict)
    needs: list = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """Every run this one needs is done."""
        return all(other.done for other in self.needs)

    @property
    def done(self) -> bool:
        return (self.out / self.done_file).is_file()


# Imported once by the fork server: what every recipe imports (torchvision comes with
# SpeechBrain's train_logger) and the modules the hparams files name.
RECIPE_PRELOAD = [
    "torch", "torchaudio", "speechbrain", "speechbrain.core", "speechbrain.utils.train_logger",
    "speechbrain.dataio.dataset", "speechbrain.dataio.sampler", "speechbrain.nnet.schedulers",
    "speechbrain.lobes.models.transformer.Conformer", "hyperpyyaml", "jiwer",
    "speechpos.recipes", "speechpos.speech.ctc", "speechpos.speech.pretraining",
    "speechpos.speech.encoder", "speechpos.speech.data.dataio",
]
_FORKSERVER = None


def _forkserver():
    global _FORKSERVER
    if _FORKSERVER is None:
        _FORKSERVER = multiprocessing.get_context("forkserver")
        # "__main__": the calling tool is imported once there, not by every child.
        _FORKSERVER.set_forkserver_preload(["__main__", *RECIPE_PRELOAD])
    return _FORKSERVER


def _start_context():
    """The forkserver, or ``spawn`` where CUDA is present (see the module's docstring)."""
    import torch

    return multiprocessing.get_context("spawn") if torch.cuda.is_available() else _forkserver()


def _exec_python(argv: list[str], cwd: str, env: dict, out_path: str | None, err_path: str | None) -> None:
    """Body of a child: ``python *argv`` (a script and its arguments, or ``-m module ...``)
    run in this forked process, which then exits with the status ``python`` would give."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.stdout.flush(), sys.stderr.flush()
    for path, target in ((out_path, 1), (err_path, 2)):
        if path is not None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, target)
            os.close(fd)
    threads = env.get("OMP_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    # The platform's start method again, as under `python`: a child started by spawn or the
    # forkserver inherits that method, and DataLoader workers would then need picklable
    # pipelines (SpeechBrain's dynamic items are local functions).
    multiprocessing.set_start_method(None, force=True)
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = str(Path(argv[0]).resolve().parent)
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if stop.code is not None and not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed by the program, as python's exit allows
                pass
    # multiprocessing's exit from here, as python's: waits for the program's threads and runs
    # its finalizers (tqdm's lock semaphores would otherwise be left to the resource tracker).
    sys.exit(code)


class RecipeProcess:
    """A running child of :func:`start_python`, with ``subprocess.Popen``'s ``poll``, ``wait``,
    ``terminate`` and ``returncode``."""

    def __init__(self, process):
        self._process = process

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        return self._process.exitcode

    def terminate(self) -> None:
        self._process.terminate()


def start_python(argv: list[str], cwd: Path | str | None = None, env: dict | None = None,
                 log: Path | None = None, err_log: Path | None = None) -> RecipeProcess:
    """Start ``python *argv`` (``[script, *args]`` or ``["-m", module, *args]``) in ``cwd``
    with environment ``env`` (default: this one's; ``OMP_NUM_THREADS`` sets its torch
    threads), forked from the preloaded server. Its output is appended to ``log`` (inherited
    when None), its standard error to ``err_log`` (default: ``log``). A killed child's
    ``returncode`` is minus the signal, as ``Popen``'s.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     script = Path(tmp, "hello.py")
    ...     _ = script.write_text("import os, sys; print(sys.argv[1:], os.environ['WHO']); sys.exit(3)")
    ...     proc = start_python([str(script), "--x=1"], tmp, {"WHO": "me"}, Path(tmp, "log"))
    ...     proc.wait(), Path(tmp, "log").read_text()
    (3, "['--x=1'] me\\n")
    """
    process = _start_context().Process(
        target=_exec_python, daemon=False,
        args=(list(argv), str(cwd or os.getcwd()), dict(os.environ if env is None else env),
              None if log is None else str(log), None if (err_log or log) is None else str(err_log or log)),
    )
    process.start()
    return RecipeProcess(process)


def run_python(cmd: list[str], cwd: Path | str | None = None, env: dict | None = None,
               timeout: float | None = None, check: bool = False, capture_output: bool = True,
               text: bool = True):
    """``subprocess.run(cmd, capture_output=True, text=True, ...)`` for a Python command line
    (``cmd[0]`` is ``sys.executable``), run by :func:`start_python`: the result's
    ``returncode``, ``stdout`` and ``stderr``; ``subprocess.TimeoutExpired`` after ``timeout``
    seconds, the child killed; ``subprocess.CalledProcessError`` on a failure with ``check``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     script = Path(tmp, "fail.py")
    ...     _ = script.write_text("import sys; print('out'); sys.exit('bad input: x.flac')")
    ...     done = run_python([sys.executable, str(script)], cwd=tmp)
    >>> done.returncode, done.stdout, done.stderr
    (1, 'out\\n', 'bad input: x.flac\\n')
    >>> run_python([sys.executable, "-m", "json.tool", "--no-such-flag"]).returncode
    2
    """
    import subprocess
    import tempfile

    if cmd[0] != sys.executable:
        raise ValueError(f"run_python runs {sys.executable} command lines, got {cmd[0]!r}")
    if not (capture_output and text):
        raise ValueError("run_python captures the output as text (capture_output=True, text=True)")
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        proc = start_python(cmd[1:], cwd, env, out, err)
        code = proc.wait(timeout)
        if code is None:
            proc.terminate()
            proc.wait()
            raise subprocess.TimeoutExpired(cmd, timeout, out.read_text(), err.read_text())
        done = subprocess.CompletedProcess(cmd, code, out.read_text(), err.read_text())
    if check:
        done.check_returncode()
    return done


def _stop(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


def run_all(runs: list[Run], jobs: int, threads: int, logs: Path) -> None:
    """Run the recipes ``jobs`` at a time (in list order, a run once its ``needs`` are done);
    exit if one fails. Stopping the caller (Ctrl-C, ``kill``) stops the runs it started: their
    checkpoints are kept, and the same command resumes them. A run that another invocation is
    training (two tools whose plans overlap, on the same folders) is waited for, not trained a
    second time in the same folder: kept if it finishes there, taken over if it stops."""
    import signal
    import threading

    active: list[tuple[Run, RecipeProcess, float]] = []
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main else None
    try:
        _run_all(runs, jobs, threads, logs, active)
    except BaseException:
        for _, proc, _ in active:
            proc.terminate()
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def claim_run(run: Run):
    """An exclusive lock on ``<run.out>/.run.lock`` (an open file: the lock lasts until it is
    closed, or this process ends), or None while another process holds it.

    >>> import tempfile
    >>> run = Run("r", "r.py", "r.yaml", [], Path(tempfile.mkdtemp()) / "r", "done")
    >>> mine = claim_run(run)
    >>> claim_run(run) is None  # a second claim, as another tool's, waits
    True
    >>> mine.close()
    >>> claim_run(run) is not None
    True
    """
    import fcntl

    run.out.mkdir(parents=True, exist_ok=True)
    lock = open(run.out / ".run.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _run_all(runs: list[Run], jobs: int, threads: int, logs: Path, active: list) -> None:
    pending = [r for r in runs if not r.done]
    for r in runs:
        if r.done:
            print(f"  {r.name}: done already, kept", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    locks, elsewhere = {}, set()
    while pending or active:
        while pending and len(active) < jobs:
            r, lock = _next_run(pending, elsewhere)
            if r is None:
                if pending and not active and not elsewhere:
                    sys.exit(f"{pending[0].name} needs a run that is neither done nor listed")
                break
            locks[r.name] = lock
            log = logs / f"{r.name}.log"
            log.write_text("")
            proc = start_python([str(RECIPES / r.script), r.hparams, *r.args, f"--output_folder={r.out}"],
                                RECIPES, env, log)
            active.append((r, proc, time.time()))
            print(f"  {r.name}: started", flush=True)
        time.sleep(0.2 if active or not elsewhere else 1.0)
        for item in list(active):
            r, proc, start = item
            if proc.poll() is None:
                continue
            active.remove(item)
            locks.pop(r.name).close()
            if proc.returncode != 0:  # run_all stops the others on the way out
                sys.exit(f"{r.name} failed (exit {proc.returncode}); see {logs / (r.name + '.log')}")
            r.info["wall_s"] = round(time.time() - start, 1)
            print(f"  {r.name}: finished in {r.info['wall_s']:.0f} s", flush=True)


def _next_run(pending: list[Run], elsewhere: set):
    """The first pending run that is ready and not being trained by another process, removed
    from ``pending``, with its lock (or (None, None)). Runs that another process finished are
    dropped; ``elsewhere`` holds the names of those another process is training now."""
    for r in list(pending):
        if not r.ready:
            continue
        lock = claim_run(r)
        if lock is None:
            if r.name not in elsewhere:
                print(f"  {r.name}: being trained by another process; waiting for it", flush=True)
            elsewhere.add(r.name)
            continue
        pending.remove(r)
        elsewhere.discard(r.name)
        if r.done:
            lock.close()
            print(f"  {r.name}: finished by another process, kept", flush=True)
            continue
        return r, lock
    return None, None


def as_args(values: dict) -> list[str]:
    """Recipe overrides from a dict (None as yaml's null).

    >>> as_args({"crop_seconds": None, "batch_size": 8})
    ['--crop_seconds=null', '--batch_size=8']
    """
    return [f"--{k}={'null' if v is None else v}" for k, v in values.items()]


def seed_limits(items: list[str], allowed) -> dict[str, list[int]]:
    """Parse ``--limit NAME=SEED[,SEED]`` options: which seeds a pretraining (or a label budget)
    runs with when the others take more.

    >>> seed_limits(["1h=0,1", "10h=0"], ["1h", "10h"])
    {'1h': [0, 1], '10h': [0]}
    >>> seed_limits(["2h=0"], ["1h"])
    Traceback (most recent call last):
    ValueError: --limit wants NAME=SEEDS with NAME one of ['1h'], got '2h=0'
    """
    limits = {}
    for item in items:
        name, _, values = item.partition("=")
        try:
            seeds = [int(v) for v in values.split(",")]
        except ValueError:
            seeds = []
        if name not in allowed or not seeds:
            raise ValueError(f"--limit wants NAME=SEEDS with NAME one of {list(allowed)}, got {item!r}")
        limits[name] = seeds
    return limits


def made_corpus(corpus: Path, size: str | None, seed: int, jobs: int, prep: Path, low_label=None) -> Path:
    """Make the generated corpus if missing (``tools/data/make_corpus.py``'s sizes) and write its
    CSV manifests into ``prep`` (both skipped when done); returns ``prep``.

    ``size=None`` takes ``corpus`` as it is (made elsewhere, or carried to a machine without the
    speech engines by ``tools/data/pack_corpus.py``): only the manifests are written."""
    from speechpos.corpora.librispeech import make_corpus
    from speechpos.speech.data.librispeech import prepare_librispeech

    if size is not None:
        make_corpus(corpus, size=size, seed=seed, jobs=jobs, progress=False)
    elif not (Path(corpus) / "train-clean-100").is_dir():
        raise FileNotFoundError(f"{corpus}: no train-clean-100 folder, not a LibriSpeech-layout corpus")
    prepare_librispeech(corpus, prep, tr_splits=["train-clean-100"], dev_splits=["dev-clean"],
                        te_splits=["test-clean"], low_label=low_label, progress=False)
    return prep
