#!/usr/bin/env bash
# Installs everything speechpos needs on a fresh Debian machine:
# the Debian packages in tools/apt-packages.txt, then a virtual environment in .venv
# holding speechpos (editable) with its dev extra. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t pkgs < <(grep -v '^\s*#' tools/apt-packages.txt | grep -v '^\s*$')
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.speechpos-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing Python packages into .venv (torch, torchaudio, speechbrain, ...)"
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -c "import torch, torchaudio, speechbrain, speechpos" 
    touch "$stamp"
fi
echo "setup: ready (.venv/bin/python)"
