"""speechpos.experiments.runs' launcher: a Python command line run in a child forked from the
preloaded server behaves as ``python`` would run it (argv, cwd, environment, threads, output,
exit status), and run_all stops the others when one fails."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speechpos.experiments.runs import Run, run_all, run_python, start_python, startup_env

# Python's start-up variables as this process has them: a child with them is forked from the server.
STARTUP = startup_env(os.environ)

REPORT = """
import os, sys, torch
print(sys.argv, os.getcwd(), os.environ.get("WHO"), torch.get_num_threads())
print("to stderr", file=sys.stderr)
"""


def script(tmp_path, text, name="child.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_child_gets_its_argv_cwd_environment_and_torch_threads(tmp_path):
    child = script(tmp_path, REPORT)
    work = tmp_path / "work"
    work.mkdir()
    done = run_python([sys.executable, str(child), "--a=1", "b"], cwd=work,
                      env={**STARTUP, "WHO": "child", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{[str(child), '--a=1', 'b']} {work} child 1\n"
    assert done.stderr == "to stderr\n"
    two = run_python([sys.executable, str(child)], cwd=work, env={**STARTUP, "WHO": "again",
                                                                          "OMP_NUM_THREADS": "2"})
    assert two.stdout.endswith(" again 2\n")  # each child sets its own threads and environment


def test_an_exception_exits_1_with_its_traceback(tmp_path):
    child = script(tmp_path, "def main():\n    raise RuntimeError('corrupt file x.flac')\nmain()\n")
    done = run_python([sys.executable, str(child)], cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().endswith("RuntimeError: corrupt file x.flac")


def test_a_module_runs_as_python_dash_m(tmp_path):
    data = tmp_path / "data.json"
    data.write_text('{"b": 1, "a": [2]}')
    done = run_python([sys.executable, "-m", "json.tool", "--sort-keys", str(data)], cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.splitlines()[1] == '    "a": ['


def test_timeout_kills_the_child_and_check_raises(tmp_path):
    sleeper = script(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    run_python([sys.executable, "-c", "pass"])  # the server up first: its start is not the child's time
    start = time.time()
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        run_python([sys.executable, str(sleeper)], cwd=tmp_path, timeout=3)
    assert time.time() - start < 30 and expired.value.output == "started\n"
    failing = script(tmp_path, "import sys\nsys.exit(4)\n", "failing.py")
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_python([sys.executable, str(failing)], cwd=tmp_path, check=True)
    assert failed.value.returncode == 4


def test_terminate_gives_minus_the_signal(tmp_path):
    sleeper = script(tmp_path, "import time\ntime.sleep(60)\n")
    proc = start_python([str(sleeper)], tmp_path, STARTUP, tmp_path / "log")
    time.sleep(1)
    assert proc.poll() is None
    proc.terminate()
    assert proc.wait(30) == -signal.SIGTERM


def test_run_python_refuses_another_interpreter_or_uncaptured_output(tmp_path):
    with pytest.raises(ValueError, match="run_python runs .* command lines, got 'bash'"):
        run_python(["bash", "-c", "true"])
    with pytest.raises(ValueError, match="captures the output as text"):
        run_python([sys.executable, "-c", "pass"], text=False)


def test_run_all_stops_the_others_and_names_the_failed_log(tmp_path, monkeypatch):
    import speechpos.experiments.runs as runs

    monkeypatch.setattr(runs, "RECIPES", tmp_path)
    script(tmp_path, "import sys, time\ntime.sleep(1)\nprint('bad manifest', file=sys.stderr)\nsys.exit(3)\n",
           "fails.py")
    script(tmp_path, "import time\ntime.sleep(60)\n", "slow.py")
    logs = tmp_path / "logs"
    logs.mkdir()
    jobs = [Run("slow", "slow.py", "x.yaml", [], tmp_path / "slow", "done"),
            Run("fails", "fails.py", "x.yaml", [], tmp_path / "fails", "done")]
    start = time.time()
    with pytest.raises(SystemExit, match=r"fails failed \(exit 3\); see .*fails.log"):
        run_all(jobs, jobs=2, threads=1, logs=logs)
    assert time.time() - start < 30  # the slow one was stopped, not waited for
    assert (logs / "fails.log").read_text() == "bad manifest\n"
    assert Path(logs / "slow.log").is_file()


def test_a_child_leaves_no_semaphore_and_its_threads_finish(tmp_path):
    """tqdm's lock is a multiprocessing semaphore: a child that skipped the finalizers left it to
    the resource tracker, which warned when the parent exited. Non-daemon threads are waited for."""
    child = script(tmp_path, "import threading, time\nfrom tqdm import tqdm\nfor _ in tqdm(range(2)): pass\n"
                             "threading.Thread(target=lambda: (time.sleep(1), print('thread done'))).start()\n")
    parent = script(tmp_path, f"import sys\nfrom speechpos.experiments.runs import run_python\n"
                              f"if __name__ == '__main__':\n"
                              f"    print(run_python([sys.executable, {str(child)!r}]).stdout, end='')\n", "parent.py")
    done = subprocess.run([sys.executable, str(parent)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "thread done\n", done.stderr
    assert "leaked semaphore" not in done.stderr


def test_stopping_the_caller_stops_the_runs_it_started(tmp_path):
    """A tool killed with SIGTERM takes its runs with it (a forked run's command line is the fork
    server's, so they are hard to find and kill by name afterwards)."""
    script(tmp_path, "import os, time\nopen('child.pid', 'w').write(str(os.getpid()))\ntime.sleep(120)\n", "slow.py")
    parent = script(tmp_path, f"""import sys
from pathlib import Path
import speechpos.experiments.runs as runs
if __name__ == "__main__":
    runs.RECIPES = Path({str(tmp_path)!r})
    runs.run_all([runs.Run("slow", "slow.py", "x.yaml", [], Path({str(tmp_path)!r}) / "out", "done")],
                 jobs=1, threads=1, logs=Path({str(tmp_path)!r}))
""", "tool.py")
    tool = subprocess.Popen([sys.executable, str(parent)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "child.pid"
    deadline = time.time() + 90
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.time() < deadline and tool.poll() is None, tool.communicate()
        time.sleep(0.2)
    child = int(pid_file.read_text())
    tool.send_signal(signal.SIGTERM)
    out, err = tool.communicate(timeout=60)
    assert "stopped by signal 15" in err
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the run {child} outlived its tool")


TRAIN = """import sys
from pathlib import Path
out = Path(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--output_folder=")))
(out / "trained_here").write_text("yes")
(out / "done").write_text("ok")
"""


@pytest.mark.parametrize("other_finishes", [True, False])
def test_a_run_that_another_tool_is_training_is_waited_for_not_trained_twice(tmp_path, monkeypatch, capsys,
                                                                            other_finishes):
    """Two tools whose plans overlap once trained the same run folder at the same time (one then
    failed, the other's result was of an interleaved run). Now the second waits; it keeps the
    other's result, or takes the run over if the other stops before the end."""
    import threading

    import speechpos.experiments.runs as runs

    monkeypatch.setattr(runs, "RECIPES", tmp_path)
    script(tmp_path, TRAIN, "train.py")
    run = Run("shared", "train.py", "x.yaml", [], tmp_path / "shared", "done")
    others = runs.claim_run(run)  # the other tool's claim on the run
    raised = []

    def other_tool():
        try:
            run_all([run], jobs=1, threads=1, logs=tmp_path)
        except BaseException as err:
            raised.append(err)

    seen_held = threading.Event()

    def run_held(run):  # the tool's look at the lock, reported to the test
        held = real_run_held(run)
        if held:
            seen_held.set()
        return held

    real_run_held = runs.run_held
    monkeypatch.setattr(runs, "run_held", run_held)
    tool = threading.Thread(target=other_tool)
    tool.start()
    assert seen_held.wait(120)
    assert tool.is_alive() and not (run.out / "trained_here").exists()
    if other_finishes:
        (run.out / "done").write_text("the other tool's result")
    others.close()
    tool.join(timeout=60)
    assert not tool.is_alive() and not raised, raised
    out = capsys.readouterr().out
    assert "shared: being trained by another process; waiting for it" in out
    if other_finishes:
        assert "shared: finished by another process, kept" in out
        assert (run.out / "done").read_text() == "the other tool's result"
        assert not (run.out / "trained_here").exists()
    else:
        assert "shared: started" in out and (run.out / "trained_here").read_text() == "yes"


def test_where_cuda_is_present_a_child_is_an_interpreter_not_forked_from_the_server(tmp_path, monkeypatch):
    """A forked child cannot use CUDA once the preloading server has asked for the devices
    (seen on an H200: "Cannot re-initialize CUDA in forked subprocess"); a fresh interpreter can."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    child = script(tmp_path, REPORT + "print('forked' if 'torchaudio' in sys.modules else 'interpreter')\n")
    proc = start_python([str(child), "--a"], tmp_path, {**os.environ, "WHO": "started", "OMP_NUM_THREADS": "1"},
                        tmp_path / "log")
    assert proc.wait() == 0, (tmp_path / "log").read_text()
    log = (tmp_path / "log").read_text()
    assert f"['{child}', '--a'] {tmp_path} started 1" in log and log.endswith("interpreter\n")


def test_a_child_starts_its_own_processes_as_python_would(tmp_path, monkeypatch):
    """DataLoader workers (num_workers > 0) of a recipe run here are forked, as under
    ``python recipe.py``, so local pipeline functions need no pickling; seen failing on an H200
    ("Can't pickle local object 'audio_dataset.<locals>.audio_pipeline'") when the spawned
    child kept spawn as its start method."""
    import torch

    child = script(tmp_path, """
import multiprocessing, torch
def local_pipeline():
    square = lambda i: i * i
    return torch.utils.data.DataLoader(list(range(4)), num_workers=1, collate_fn=lambda b: [square(x) for x in b])
print(multiprocessing.get_start_method(), [int(x[0]) for x in local_pipeline()])
""")
    expected = subprocess.run([sys.executable, "-c", "import multiprocessing; print(multiprocessing.get_start_method())"],
                              capture_output=True, text=True, check=True).stdout.strip()
    for cuda in (False, True):  # the forkserver, then an interpreter
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        done = run_python([sys.executable, str(child)], cwd=tmp_path, env={**STARTUP, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{expected} [0, 1, 4, 9]\n"


# A recipe that trains STEPS steps of 0.1 s, checkpointing its step, resuming from it; it
# records each start ("pid step") and fails if another process is training its folder.
TRAINER = """import fcntl, os, sys, time
from pathlib import Path
out = Path(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--output_folder=")))
out.mkdir(parents=True, exist_ok=True)
trainer = open(out / "trainer.lock", "a")
try:
    fcntl.flock(trainer, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    (out / "trained_twice").write_text(str(os.getpid()))
    sys.exit(9)
ckpt = out / "ckpt"
step = int(ckpt.read_text()) if ckpt.is_file() else 0
with open(out / "starts", "a") as f:
    f.write(f"{os.getpid()} {step}\\n")
while step < STEPS:
    time.sleep(0.1)
    step += 1
    (out / "ckpt.tmp").write_text(str(step))
    os.replace(out / "ckpt.tmp", ckpt)  # as a checkpointer does: never a torn checkpoint
(out / "done").write_text("ok")
"""
TOOL = """import sys
from pathlib import Path
import speechpos.experiments.runs as runs
if __name__ == "__main__":
    runs.RECIPES = Path(sys.argv[1])
    runs.run_all([runs.Run("train", "train.py", "x.yaml", [], Path(sys.argv[1]) / "out", "done")],
                 jobs=1, threads=1, logs=Path(sys.argv[2]))
"""


def gone(pid: int) -> bool:
    """The process ended (a zombie waiting for its parent counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_for(condition, what, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def start_tool(tmp_path, name, steps):
    (tmp_path / "train.py").write_text(TRAINER.replace("STEPS", str(steps)))
    tool = script(tmp_path, TOOL, "tool.py")
    logs = tmp_path / name
    logs.mkdir(exist_ok=True)
    out = open(tmp_path / f"{name}.out", "w")
    return subprocess.Popen([sys.executable, str(tool), str(tmp_path), str(logs)], cwd=tmp_path,
                            stdout=out, stderr=subprocess.STDOUT, text=True)


def starts(out):
    return [tuple(map(int, line.split())) for line in (out / "starts").read_text().splitlines()]


def test_a_tool_killed_without_a_word_takes_its_run_along_and_the_rerun_resumes_it_alone(tmp_path):
    """SIGKILL (or the OOM killer) gives a tool no time to stop its runs: the run, a child of the
    fork server, once went on training with its folder's lock free, and a second invocation then
    trained the folder beside it. The run now dies with its tool and holds its own lock."""
    out = tmp_path / "out"
    first = start_tool(tmp_path, "first", steps=600)
    wait_for(lambda: (out / "ckpt").is_file() and int((out / "ckpt").read_text()) >= 3, "training")
    (trainer, step0), = starts(out)
    assert (out / ".run.lock").read_text() == f"{trainer}\n"  # the run's lock is its trainer's
    first.kill()
    first.wait()
    wait_for(lambda: gone(trainer), f"the run {trainer} to stop with its tool", timeout=30)
    stopped_at = int((out / "ckpt").read_text())
    time.sleep(0.5)
    assert int((out / "ckpt").read_text()) == stopped_at  # nothing trains the folder any more
    (tmp_path / "train.py").write_text(TRAINER.replace("STEPS", str(stopped_at + 10)))
    second = subprocess.run([sys.executable, str(tmp_path / "tool.py"), str(tmp_path), str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "train: started" in second.stdout and "train: finished" in second.stdout
    assert [step for _, step in starts(out)] == [step0, stopped_at]  # resumed from its checkpoint
    assert (out / "done").is_file() and not (out / "trained_twice").exists()


def test_two_tools_over_one_folder_never_train_it_at_once(tmp_path):
    """The second tool waits while the first trains; when the first is killed, it takes the run
    over only once the first's run has stopped, and resumes it."""
    out = tmp_path / "out"
    first = start_tool(tmp_path, "first", steps=600)
    wait_for(lambda: (out / "ckpt").is_file() and int((out / "ckpt").read_text()) >= 3, "training")
    (trainer, _), = starts(out)
    second = start_tool(tmp_path, "second", steps=600)
    wait_for(lambda: "train: being trained by another process; waiting for it"
             in (tmp_path / "second.out").read_text(), "the second tool to wait")
    assert second.poll() is None and len(starts(out)) == 1
    (tmp_path / "train.py").write_text(TRAINER.replace("STEPS", "100"))
    first.kill()
    first.wait()
    assert second.wait(300) == 0, (tmp_path / "second.out").read_text()
    assert not (out / "trained_twice").exists()
    (_, _), (taker, resumed_at) = starts(out)
    assert taker != trainer and resumed_at >= 3 and (out / "done").is_file()


def test_a_source_edited_between_two_runs_is_seen_by_the_second(tmp_path):
    """The server imports speechpos (and the modules named with it) once; a module edited during
    a study must not run from that stale copy: the server is restarted, saying so."""
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    (tmp_path / "show.py").write_text("import helper\nprint(helper.VALUE)\n")
    tool = script(tmp_path, f"""import sys
from pathlib import Path
import speechpos.experiments.runs as runs
if __name__ == "__main__":
    sys.path.insert(0, {str(tmp_path)!r})
    runs.RECIPE_PRELOAD.append("helper")  # imported once by the server, as speechpos is
    show = [sys.executable, {str(tmp_path / 'show.py')!r}]
    print(runs.run_python(show).stdout, end="")
    Path({str(tmp_path / 'helper.py')!r}).write_text("VALUE = 22\\n")
    print(runs.run_python(show).stdout, end="")
    print(runs.run_python(show).stdout, end="")
""", "tool.py")
    done = subprocess.run([sys.executable, str(tool)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1\n22\n22\n"
    restarts = [line for line in done.stderr.splitlines() if "restarting the run server" in line]
    assert len(restarts) == 1 and "helper.py" in restarts[0]


def test_start_up_variables_take_effect_as_under_python(tmp_path):
    """PYTHONHASHSEED, PYTHONUNBUFFERED, PYTHONDONTWRITEBYTECODE are read when Python starts: set
    in a run's environment they did nothing in a forked child. Such a run gets an interpreter."""
    child = script(tmp_path, "import sys\nprint(hash('speechpos'), sys.stdout.write_through, sys.dont_write_bytecode,"
                             " sys.flags.hash_randomization)\n")
    for extra in ({"PYTHONHASHSEED": "0"}, {"PYTHONHASHSEED": "123", "PYTHONUNBUFFERED": "1",
                                            "PYTHONDONTWRITEBYTECODE": "1"}):
        env = {**os.environ, **extra}
        python = subprocess.run([sys.executable, str(child)], env=env, capture_output=True, text=True, check=True)
        ours = run_python([sys.executable, str(child)], env=env)
        assert ours.returncode == 0, ours.stderr
        # write_through differs by design: run_python's output goes to a file, python's to a pipe
        assert ours.stdout.split()[0::2] == python.stdout.split()[0::2] and ours.stdout.split()[2] == \
            python.stdout.split()[2], (ours.stdout, python.stdout)
    unbuffered = run_python([sys.executable, str(child)], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert unbuffered.stdout.split()[1] == "True"
