#!/usr/bin/env python3
"""Wall time of the test suite, its ten slowest tests and slowest files, for one or more checkouts.

Runs the README's test command (``pytest -q -n auto --dist loadfile --durations=10``, what
``make test`` runs after the set-up, with ``--durations=0``) in each checkout, one after the
other, with this interpreter, and writes ``docs/test_suite_time.{md,json}``: per checkout the
tests passed (and the failed ones), the wall time, the ten slowest test phases and the test
files with the most time (``--dist loadfile`` runs a file on one worker: the largest bounds the
wall time). A checkout of another commit is made with ``git worktree add``; it uses the modules
of its own tree (``PYTHONPATH`` is its root, so the recipes its tests start import them too).

    git worktree add /tmp/before <commit>
    python tools/bench/bench_suite.py --checkout before=/tmp/before --checkout after=.
    python tools/bench/bench_suite.py --checkout now=. --pytest-args tests/unittests   # a part only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from speechpos.experiments.plots import markdown_table  # noqa: E402
from speechpos.experiments.runs import cpu_name  # noqa: E402

# The README's command, with every test's duration (the ten slowest and the per-file sums).
PYTEST = ["-m", "pytest", "-q", "-n", "auto", "--dist", "loadfile", "--durations=0", "-p", "no:cacheprovider"]
SLOW_LINE = re.compile(r"^(\d+\.\d+)s (call|setup|teardown)\s+(\S.*)$")  # ids may hold spaces
SUMMARY = re.compile(r"^=*\s*(\d+ \w+.*) in ([\d.]+)s")
COUNT = re.compile(r"(\d+) (passed|failed|errors?)\b")


def parse_pytest(output: str) -> dict:
    """Tests passed/failed (errors count as failed), the failed tests, pytest's own wall time
    and the slowest phases from its output.

    >>> out = "x\\n12.50s call     tests/a.py::test_b\\n0.30s setup    tests/a.py::test_c\\n"
    >>> parse_pytest(out + "FAILED tests/a.py::test_d - assert 1 == 2\\n= 1 failed, 5 passed, 1 warning in 61.20s (0:01:01) =")
    {'passed': 5, 'failed': 1, 'failed_tests': ['tests/a.py::test_d'], 'pytest_seconds': 61.2, 'slowest': [{'seconds': 12.5, 'phase': 'call', 'test': 'tests/a.py::test_b'}, {'seconds': 0.3, 'phase': 'setup', 'test': 'tests/a.py::test_c'}], 'files': {'tests/a.py': 12.8}}
    """
    slowest = [{"seconds": float(m[1]), "phase": m[2], "test": m[3]}
               for m in map(SLOW_LINE.match, output.splitlines()) if m]
    summary = [m for m in map(SUMMARY.match, output.splitlines()) if m]
    if not summary:
        raise ValueError("no pytest summary line ('N passed ... in S s') in the output")
    counts = {"passed": 0, "failed": 0}
    for number, what in COUNT.findall(summary[-1][1]):
        counts["passed" if what == "passed" else "failed"] += int(number)
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in output.splitlines()
              if line.startswith(("FAILED ", "ERROR "))]
    files: dict[str, float] = {}
    for phase in slowest:
        name = phase["test"].split("::")[0]
        files[name] = round(files.get(name, 0.0) + phase["seconds"], 2)
    return {**counts, "failed_tests": failed, "pytest_seconds": float(summary[-1][2]), "slowest": slowest[:10],
            "files": dict(sorted(files.items(), key=lambda kv: -kv[1]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkout", action="append", required=True, metavar="NAME=PATH",
                   help="a checkout to time (repeatable; timed in the order given)")
    p.add_argument("--pytest-args", nargs="*", default=[], help="extra pytest arguments (e.g. a folder)")
    p.add_argument("--note", default="", help="a sentence on the conditions, added to the report")
    p.add_argument("--docs", default=str(ROOT / "docs"))
    p.add_argument("--report", default="test_suite_time")
    args = p.parse_args(argv)

    checkouts = []
    for item in args.checkout:
        name, sep, path = item.partition("=")
        if not sep or not Path(path, "pyproject.toml").is_file():
            p.error(f"--checkout wants NAME=PATH with PATH a checkout of the project, got {item!r}")
        checkouts.append((name, Path(path).resolve()))

    results = []
    for name, path in checkouts:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        env = {**os.environ, "PYTHONPATH": str(path)}  # its recipes' children import its modules too
        start = time.time()
        proc = subprocess.run([sys.executable, *PYTEST, *args.pytest_args], cwd=path, env=env,
                              capture_output=True, text=True)
        wall = time.time() - start
        print(proc.stdout[-2500:], flush=True)
        row = {"name": name, "commit": commit + ("+changes" if dirty else ""), "wall_seconds": round(wall, 1),
               "exit_status": proc.returncode, **parse_pytest(proc.stdout)}
        results.append(row)

    cpu = cpu_name()
    from speechpos.experiments.plots import tool_command

    command = tool_command(__file__, argv if argv is not None else sys.argv[1:])
    setup = (f"`python {' '.join(PYTEST)}{' ' + ' '.join(args.pytest_args) if args.pytest_args else ''}` "
             f"in each checkout, one after the other, on {os.cpu_count()} cores ({cpu}). {args.note}").strip()
    summary = markdown_table(
        ["checkout", "commit", "passed", "failed", "wall time (min:s)", "pytest's time (s)"],
        [[r["name"], r["commit"], r["passed"], r["failed"], f"{int(r['wall_seconds'] // 60)}:{r['wall_seconds'] % 60:04.1f}",
          r["pytest_seconds"]] for r in results])
    slow = "\n\n".join(
        f"### Ten slowest: {r['name']}\n\n" + markdown_table(
            ["s", "phase", "test"], [[s["seconds"], s["phase"], f"`{s['test']}`"] for s in r["slowest"]])
        for r in results)
    failures = "".join(f"\n\nFailed in {r['name']}: " + ", ".join(f"`{t}`" for t in r["failed_tests"])
                       for r in results if r["failed_tests"])
    by_file = "\n\n".join(
        f"### Slowest files (sum of their tests' phases; each file runs on one worker): {r['name']}\n\n"
        + markdown_table(["s", "file"], [[v, f"`{k}`"] for k, v in list(r["files"].items())[:8]])
        for r in results)
    text = (f"# Test suite time\n\n{setup}\n\n{summary}{failures}\n\n{slow}\n\n{by_file}\n\n"
            f"## Command\n\n```bash\n{command}\n```\n")
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"{args.report}.md").write_text(text)
    (docs / f"{args.report}.json").write_text(json.dumps({"setup": setup, "command": command, "checkouts": results}, indent=1))
    print(text)
    return 0 if all(r["exit_status"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
