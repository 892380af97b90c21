#!/usr/bin/env bash
# Refresh requirements.lock: a new .venv resolved from pyproject.toml alone (newest releases the
# pins allow), frozen into the lock, then the test suite on it. Commit the lock only if it passes.
#   bash tools/setup/refresh_lock.sh          (make lock)
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .venv
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 'setuptools>=68'  # >=68 builds speechpos without isolation
{
    echo "# The tested environment: every package at the version the test suite passed with."
    echo "# tools/setup/setup.sh installs exactly this; refresh with 'make lock' (tools/setup/refresh_lock.sh)."
    echo "# Python $(.venv/bin/python -c 'import platform; print(platform.python_version(), platform.machine())'), $(date -u +%Y-%m-%d)"
    .venv/bin/python -m pip freeze --all --exclude-editable | grep -iv '^speechpos[= ]'
} > requirements.lock
touch .venv/.speechpos-installed
.venv/bin/python tools/setup/check_lock.py
.venv/bin/python -m pytest -q -n auto --dist loadfile  # as make test runs it
