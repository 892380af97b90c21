#!/usr/bin/env python3
"""Check that the installed Python packages are exactly those of ``requirements.lock``.

``tools/setup/setup.sh`` runs it after every install, so CI fails when a fresh ``.venv`` differs from
the tested environment (a package missing, added, or at another version). The project itself,
installed editable, is not in the lock.

    python tools/setup/check_lock.py [--lock requirements.lock]

Exit status 0 when the environment matches, 1 with one line per difference otherwise.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "speechpos"


def canonical(name: str) -> str:
    """PEP 503 name: case and the separators ``-_.`` do not matter.

    >>> canonical("Ruamel.YAML_clib")
    'ruamel-yaml-clib'
    """
    return "-".join(name.lower().replace("_", "-").replace(".", "-").split("-"))


def read_lock(text: str) -> dict[str, str]:
    """``name==version`` lines (comments and blank lines skipped) -> {name: version}.

    >>> read_lock("# tested 2026-11-30\\ntorch==2.11.0\\n\\nPyYAML==6.0.4\\n")
    {'torch': '2.11.0', 'pyyaml': '6.0.4'}
    """
    pins = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            raise ValueError(f"lock line {n} is not 'name==version': {line!r}")
        pins[canonical(name.strip())] = version.strip()
    return pins


def installed_packages() -> dict[str, str]:
    """{name: version} of every distribution in this interpreter's environment."""
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def differences(locked: dict[str, str], installed: dict[str, str]) -> list[str]:
    """One line per package that differs between the lock and the environment.

    >>> differences({"torch": "2.11.0", "numpy": "2.4.6"}, {"torch": "2.11.1", "rich": "14.0"})
    ['numpy: locked 2.4.6, not installed', 'rich: installed 14.0, not in the lock', 'torch: locked 2.11.0, installed 2.11.1']
    """
    lines = []
    for name in sorted((set(locked) | set(installed)) - {PROJECT}):
        want, have = locked.get(name), installed.get(name)
        if want == have:
            continue
        if have is None:
            lines.append(f"{name}: locked {want}, not installed")
        elif want is None:
            lines.append(f"{name}: installed {have}, not in the lock")
        else:
            lines.append(f"{name}: locked {want}, installed {have}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lock", default=str(ROOT / "requirements.lock"))
    args = p.parse_args(argv)
    locked = read_lock(Path(args.lock).read_text())
    diff = differences(locked, installed_packages())
    if diff:
        print(f"check_lock: the environment differs from {args.lock}:", file=sys.stderr)
        for line in diff:
            print(f"  {line}", file=sys.stderr)
        print("check_lock: rebuild it with 'rm -rf .venv && bash tools/setup/setup.sh'", file=sys.stderr)
        return 1
    print(f"check_lock: {len(locked)} packages exactly as in {Path(args.lock).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
