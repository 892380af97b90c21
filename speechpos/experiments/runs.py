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
``if __name__ == "__main__":`` (every tool's is). Three things a fork cannot give make the child
a fresh interpreter (``python -c``) instead:

- CUDA: on an H200 the server's preloading touched CUDA, which makes CUDA unusable in every
  process forked after it ("Cannot re-initialize CUDA in forked subprocess"). The seconds of
  imports are nothing beside a GPU run.
- Start-up variables (``PYTHONHASHSEED``, ``PYTHONUNBUFFERED``, ...) other than the server's:
  Python reads them when it starts, so in a forked child they would do nothing.

and a preloaded source edited since the server started (a speechpos module, the calling tool or
what it imported) restarts the server before the next child, with one line saying so: no run mixes
a stale library with new recipe files. The runs of the old server go on; it exits after them.

A run owns its lock: the child takes ``<out>/.run.lock`` (its pid written in it) before the
recipe starts and holds it until it exits, and it dies with the tool that started it, however the
tool ends (SIGKILL, the OOM killer): it watches a pipe only the tool holds. So a second
invocation over the same folders waits while a run trains, and resumes it from its checkpoints
once it stopped, never training one folder twice at once.

Example
-------
>>> r = Run("ctc", "asr_ctc.py", "hparams/ctc.yaml", ["--seed=1"], Path("/nonexistent"), "results.json")
>>> r.done
False
"""

from __future__ import annotations

import json
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
    # The masked patches never enter the encoder (MP3's gather path); the convolution is off in
    # pretraining and switched on, zero-initialised, at fine-tuning.
    "BEST-RQ, dropped": ("pretrain_bestrq.py", "hparams/bestrq.yaml",
                         {"conv_mode": "off", "drop_masked": True, "decoder_kind": "conv"}),
    "BEST-RQ, dropped, attention decoder": ("pretrain_bestrq.py", "hparams/bestrq.yaml",
                                            {"conv_mode": "off", "drop_masked": True, "decoder_kind": "transformer"}),
    # Dropped BEST-RQ and position prediction in one encoder pass: the kept patches (with the
    # anchors' signal) are the context, a third of the masked patches the position queries.
    "BEST-RQ, dropped + position": ("pretrain_joint.py", "hparams/joint_dropped.yaml", {"conv_mode": "off"}),
    "joint λ=0.05": ("pretrain_joint.py", "hparams/joint.yaml", {"position_weight": 0.05}),
    "joint λ=0.3": ("pretrain_joint.py", "hparams/joint.yaml", {"position_weight": 0.3}),
    "joint λ=1": ("pretrain_joint.py", "hparams/joint.yaml", {"position_weight": 1.0}),
}
# Pretrained with their position embedding and the convolution on: fine-tuned (or probed) as such.
MASKED = ("BEST-RQ", "joint λ=0.05", "joint λ=0.3", "joint λ=1")
# Pretrained with their position embedding and the convolution off (dropped tokens): probed as such.
POSITIONED_CONV_OFF = ("BEST-RQ, dropped", "BEST-RQ, dropped, attention decoder")
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
# Exit statuses of a run's child that did not start its recipe: another process holds the run's
# lock, or finished the run before this child got the lock.
HELD_ELSEWHERE, FINISHED_ELSEWHERE = 75, 76
_FORKSERVER = None
# The running server's start: the sources it may have imported (path -> (mtime_ns, size)) and
# its start-up environment; servers retired for stale sources, reaped once their runs end.
_SERVER = {"sources": {}, "startup_env": {}}
_RETIRED: list[int] = []


def _forkserver():
    global _FORKSERVER
    if _FORKSERVER is None:
        _FORKSERVER = multiprocessing.get_context("forkserver")
        # "__main__": the calling tool is imported once there, not by every child.
        _FORKSERVER.set_forkserver_preload(["__main__", *RECIPE_PRELOAD])
    return _FORKSERVER


def startup_env(env: dict) -> dict:
    """The variables of ``env`` that Python reads when it starts (``PYTHON*``, not ``PYTHON`` or
    ``PYTHON_*``, which are other programs' names): in a forked child they would do nothing, so a
    run whose values differ from the server's gets an interpreter.

    >>> startup_env({"PYTHONHASHSEED": "0", "HOME": "/home/me", "PYTHONUNBUFFERED": "1", "PYTHON_VERSION": "3.11"})
    {'PYTHONHASHSEED': '0', 'PYTHONUNBUFFERED': '1'}
    """
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHON" and not k.startswith("PYTHON_")}


def _stamp(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _own_sources() -> dict:
    """The Python files a preloading server imports that are not installed packages: every
    speechpos module, the calling tool and what it imported, the modules named to preload."""
    import importlib.util
    import sysconfig

    installed = tuple({os.path.realpath(sysconfig.get_path(k)) for k in ("stdlib", "platstdlib", "purelib", "platlib")})
    files = {str(f) for f in Path(__file__).resolve().parents[1].rglob("*.py")}
    named = []
    for name in RECIPE_PRELOAD:
        if "." not in name:  # a dotted name's spec would import its package here
            spec = importlib.util.find_spec(name)
            named.append(spec.origin if spec else None)
    # __dict__, not getattr: SpeechBrain's lazy modules import themselves on a missing attribute.
    imported = [vars(module).get("__file__") for module in list(sys.modules.values()) if hasattr(module, "__dict__")]
    for name in imported + named:
        if name and name.endswith(".py") and not os.path.realpath(name).startswith(installed):
            files.add(os.path.realpath(name))
    return {f: _stamp(f) for f in files}


def _fresh_forkserver():
    """The forkserver context, its server running on the sources as they are now: a server whose
    preloaded sources changed since it started is retired (its runs go on; it exits with them) and
    a new one started, with one line saying so."""
    from multiprocessing import forkserver, util

    context = _forkserver()
    server = forkserver._forkserver
    for pid in list(_RETIRED):
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                _RETIRED.remove(pid)
        except ChildProcessError:
            _RETIRED.remove(pid)
    with server._lock:
        running = server._forkserver_pid is not None
        changed = [f for f, stamp in _SERVER["sources"].items() if _stamp(f) != stamp] if running else []
        if changed:
            print(f"speechpos: {len(changed)} preloaded source file(s) changed ({changed[0]}, ...); "
                  "restarting the run server", file=sys.stderr, flush=True)
            os.close(server._forkserver_alive_fd)
            if not util.is_abstract_socket_namespace(server._forkserver_address):
                os.unlink(server._forkserver_address)
            _RETIRED.append(server._forkserver_pid)
            server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None
            running = False
        if not running:
            _SERVER["sources"] = _own_sources()
            _SERVER["startup_env"] = startup_env(os.environ)
    server.ensure_running()
    return context


def _watch_tool(alive) -> None:
    """Stop this process when the tool that started it is gone: ``alive`` is the read end of a
    pipe only the tool writes to, at end of file once the tool has exited, however it died."""
    import signal
    import threading
    from multiprocessing.connection import Connection

    conn = Connection(alive, writable=False) if isinstance(alive, int) else alive

    def watch():
        try:
            conn.recv_bytes()
        except (EOFError, OSError):
            pass
        print("speechpos: the tool that started this run is gone; stopping the run", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="watch-tool", daemon=True).start()


def _exec_python(argv: list[str], cwd: str, env: dict, out_path: str | None, err_path: str | None,
                 alive=None, lock_path: str | None = None, done_path: str | None = None) -> None:
    """Body of a child: ``python *argv`` (a script and its arguments, or ``-m module ...``)
    run in this process, which then exits with the status ``python`` would give. With
    ``alive`` it dies with its tool (:func:`_watch_tool`); with ``lock_path`` it first takes the
    run's lock (:func:`claim_run`) and holds it until it exits, or exits ``HELD_ELSEWHERE``
    (``FINISHED_ELSEWHERE`` when ``done_path`` exists once it has the lock)."""
    if alive is not None:
        _watch_tool(alive)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.stdout.flush(), sys.stderr.flush()
    for path, target in ((out_path, 1), (err_path, 2)):
        if path is not None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, target)
            os.close(fd)
    if lock_path is not None:
        lock = _claim(Path(lock_path))  # held (open) until this process exits
        if lock is None:
            os._exit(HELD_ELSEWHERE)
        if done_path is not None and Path(done_path).is_file():
            os._exit(FINISHED_ELSEWHERE)
    threads = env.get("OMP_NUM_THREADS")
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
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


# A fresh interpreter's first lines: this module loaded on its own (it imports only the
# standard library), not as part of a speechpos package the child's path may not hold.
_BOOT = """import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("_speechpos_run_child", sys.argv[1])
child = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = child
spec.loader.exec_module(child)
child._exec_python(*json.loads(sys.argv[2]))
"""


class RecipeProcess:
    """A running child of :func:`start_python`, with ``subprocess.Popen``'s ``pid``, ``poll``,
    ``wait``, ``terminate`` and ``returncode``."""

    def __init__(self, process, alive_w: int):
        self._process = process
        self._alive_w = alive_w  # closed when the child is seen to have ended, or with this tool

    def _ended(self, code):
        if code is not None and self._alive_w is not None:
            os.close(self._alive_w)
            self._alive_w = None
        return code

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        if isinstance(self._process, multiprocessing.process.BaseProcess):
            return self._ended(self._process.exitcode)
        return self._ended(self._process.poll())

    def wait(self, timeout: float | None = None) -> int | None:
        import subprocess

        if isinstance(self._process, multiprocessing.process.BaseProcess):
            self._process.join(timeout)
            return self.poll()
        try:
            return self._ended(self._process.wait(timeout))
        except subprocess.TimeoutExpired:
            return None

    def terminate(self) -> None:
        self._process.terminate()


def start_python(argv: list[str], cwd: Path | str | None = None, env: dict | None = None,
                 log: Path | None = None, err_log: Path | None = None, lock: Path | None = None,
                 done: Path | None = None) -> RecipeProcess:
    """Start ``python *argv`` (``[script, *args]`` or ``["-m", module, *args]``) in ``cwd``
    with environment ``env`` (default: this one's; ``OMP_NUM_THREADS`` sets its torch
    threads), forked from the preloaded server. Its output is appended to ``log`` (inherited
    when None), its standard error to ``err_log`` (default: ``log``). A killed child's
    ``returncode`` is minus the signal, as ``Popen``'s.

    The child dies with this process, however this one ends. With ``lock`` (a run's
    ``.run.lock``) the child takes that lock before running anything and holds it until it exits,
    or exits ``HELD_ELSEWHERE`` at once (``FINISHED_ELSEWHERE`` if ``done`` exists once it has it).
    A child whose start-up variables (``PYTHON*``) differ from the server's, or where CUDA is
    present, is a fresh interpreter instead; one whose preloaded sources changed gets a new server.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     script = Path(tmp, "hello.py")
    ...     _ = script.write_text("import os, sys; print(sys.argv[1:], os.environ['WHO']); sys.exit(3)")
    ...     proc = start_python([str(script), "--x=1"], tmp, {**startup_env(os.environ), "WHO": "me"},
    ...                         Path(tmp, "log"))
    ...     proc.wait(), Path(tmp, "log").read_text()
    (3, "['--x=1'] me\\n")
    """
    import subprocess

    import torch

    env = dict(os.environ if env is None else env)
    cwd = str(cwd or os.getcwd())
    err_log = err_log or log
    alive_r, alive_w = os.pipe()
    claim = [None if lock is None else os.path.abspath(lock), None if done is None else os.path.abspath(done)]
    context = None if torch.cuda.is_available() else _fresh_forkserver()
    if context is not None and startup_env(env) == _SERVER["startup_env"]:
        from multiprocessing.connection import Connection

        reader = Connection(alive_r)
        process = context.Process(
            target=_exec_python, daemon=False,
            args=(list(argv), cwd, env, None if log is None else str(log),
                  None if err_log is None else str(err_log), reader, *claim))
        process.start()
        reader.close()
        return RecipeProcess(process, alive_w)
    spec = [list(argv), cwd, env, None, None, alive_r, *claim]
    out = None if log is None else open(log, "ab")
    err = None if err_log is None else (out if err_log == log else open(err_log, "ab"))
    try:
        process = subprocess.Popen([sys.executable, "-c", _BOOT, __file__, json.dumps(spec)], cwd=cwd, env=env,
                                   stdout=out, stderr=err, pass_fds=(alive_r,))
    finally:
        os.close(alive_r)
        for stream in {out, err} - {None}:
            stream.close()
    return RecipeProcess(process, alive_w)


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
    checkpoints are kept, and the same command resumes them; a caller that dies without a word
    (SIGKILL, the OOM killer) takes its runs with it too. A run that another invocation is
    training (two tools whose plans overlap, on the same folders) is waited for, not trained a
    second time in the same folder: kept if it finishes there, taken over if it stops. The lock
    that says so is the run's own (its child process takes it, see :func:`start_python`)."""
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


def _claim(path: Path):
    """An exclusive lock on ``path`` with this process's id written in it (an open file: the
    lock lasts until it is closed, or this process ends), or None while another holds it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def claim_run(run: Run):
    """An exclusive lock on ``<run.out>/.run.lock``, holding this process's id, or None while
    another process holds it. The child that trains a run takes it (:func:`start_python`).

    >>> import tempfile
    >>> run = Run("r", "r.py", "r.yaml", [], Path(tempfile.mkdtemp()) / "r", "done")
    >>> mine = claim_run(run)
    >>> (run.out / ".run.lock").read_text() == f"{os.getpid()}\\n"
    True
    >>> claim_run(run) is None  # a second claim, as another tool's, waits
    True
    >>> run_held(run)
    True
    >>> mine.close()
    >>> run_held(run)
    False
    """
    return _claim(run.out / ".run.lock")


def run_held(run: Run) -> bool:
    """Whether a process holds ``run``'s lock now (it is trained there)."""
    lock = claim_run(run)
    if lock is None:
        return True
    lock.close()
    return False


def _run_all(runs: list[Run], jobs: int, threads: int, logs: Path, active: list) -> None:
    pending = [r for r in runs if not r.done]
    for r in runs:
        if r.done:
            print(f"  {r.name}: done already, kept", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    elsewhere = set()
    while pending or active:
        while pending and len(active) < jobs:
            r = _next_run(pending, elsewhere)
            if r is None:
                if pending and not active and not elsewhere:
                    sys.exit(f"{pending[0].name} needs a run that is neither done nor listed")
                break
            log = logs / f"{r.name}.log"
            log.write_text("")
            proc = start_python([str(RECIPES / r.script), r.hparams, *r.args, f"--output_folder={r.out}"],
                                RECIPES, env, log, lock=r.out / ".run.lock", done=r.out / r.done_file)
            active.append((r, proc, time.time()))
            print(f"  {r.name}: started", flush=True)
        time.sleep(0.2 if active or not elsewhere else 1.0)
        for item in list(active):
            r, proc, start = item
            if proc.poll() is None:
                continue
            active.remove(item)
            if proc.returncode == HELD_ELSEWHERE:  # another process took it first: wait for it
                pending.insert(0, r)
                _waiting(r, elsewhere)
                continue
            if proc.returncode == FINISHED_ELSEWHERE:
                print(f"  {r.name}: finished by another process, kept", flush=True)
                continue
            if proc.returncode != 0:  # run_all stops the others on the way out
                sys.exit(f"{r.name} failed (exit {proc.returncode}); see {logs / (r.name + '.log')}")
            r.info["wall_s"] = round(time.time() - start, 1)
            print(f"  {r.name}: finished in {r.info['wall_s']:.0f} s", flush=True)


def _waiting(run: Run, elsewhere: set) -> None:
    if run.name not in elsewhere:
        print(f"  {run.name}: being trained by another process; waiting for it", flush=True)
    elsewhere.add(run.name)


def _next_run(pending: list[Run], elsewhere: set):
    """The first pending run that is ready and not being trained by another process, removed
    from ``pending`` (or None). Runs that another process finished are dropped; ``elsewhere``
    holds the names of those another process is training now."""
    for r in list(pending):
        if not r.ready:
            continue
        if run_held(r):
            _waiting(r, elsewhere)
            continue
        pending.remove(r)
        elsewhere.discard(r.name)
        if r.done:
            print(f"  {r.name}: finished by another process, kept", flush=True)
            continue
        return r
    return None


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
    """Make the generated corpus if missing (``tools/data/make_corpus.py``'s sizes; test-other is
    added to one made without it) and write its CSV manifests into ``prep`` (test-other's too
    where the corpus has it; both skipped when done); returns ``prep``.

    ``size=None`` takes ``corpus`` as it is (made elsewhere, or carried to a machine without the
    speech engines by ``tools/data/pack_corpus.py``): only the manifests are written. So is a
    LibriSpeech-layout folder of the user's (:func:`make_or_use_corpus`)."""
    from speechpos.speech.data.librispeech import prepare_librispeech

    if size is not None:
        make_or_use_corpus(corpus, size, seed, jobs)
    elif not (Path(corpus) / "train-clean-100").is_dir():
        raise FileNotFoundError(f"{corpus}: no train-clean-100 folder, not a LibriSpeech-layout corpus")
    # test-other (engines no training split uses) where the corpus has it
    tests = ["test-clean", *(["test-other"] if (Path(corpus) / "test-other").is_dir() else [])]
    prepare_librispeech(corpus, prep, tr_splits=["train-clean-100"], dev_splits=["dev-clean"],
                        te_splits=tests, low_label=low_label, progress=False)
    return prep


def make_or_use_corpus(corpus: Path, size: str, seed: int, jobs: int) -> None:
    """Make the generated corpus in ``corpus`` (skipped when done), or, where ``corpus`` is a
    LibriSpeech-layout folder not made by it, use that as it is: nothing is written into it."""
    from speechpos.corpora.librispeech import foreign_corpus, make_corpus

    if foreign_corpus(corpus):
        print(f"{corpus}: a LibriSpeech-layout corpus not made here, used as it is", flush=True)
        return
    make_corpus(corpus, size=size, seed=seed, jobs=jobs, progress=False)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name), else the platform's processor string:
    reports name the machine that measured them."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
