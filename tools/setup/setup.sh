#!/usr/bin/env bash
# Installs everything speechpos needs on a fresh Debian machine:
# the Debian packages in tools/setup/apt-packages.txt, then a virtual environment in .venv holding
# exactly the packages of requirements.lock (the tested environment) and speechpos (editable).
# Safe to run again: it skips what is done. Any failing step stops it with that step's message.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOCK=requirements.lock

mapfile -t pkgs < <(grep -v '^\s*#' tools/setup/apt-packages.txt | grep -v '^\s*$')
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

# pip's own messages, without the notes this machine's pip config adds to every call
# (with pipefail a failing pip still stops the script).
pip_install() {
    .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
}

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.speechpos-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$LOCK" -nt "$stamp" ]; then
    echo "setup: installing the Python packages of $LOCK into .venv (torch, torchaudio, speechbrain, ...)"
    pip_install -c "$LOCK" pip setuptools
    pip_install -c "$LOCK" -r <(grep -v '^\s*#' "$LOCK" | grep -v '^\s*$' | grep -v '^pip==\|^setuptools==')
    pip_install -c "$LOCK" --no-deps --no-build-isolation -e .
    touch "$stamp"
fi
.venv/bin/python tools/setup/check_lock.py --lock "$LOCK"
.venv/bin/python -c "
import torch, torchaudio, speechbrain, speechpos
from speechpos.precision import choose_precision
print(f'setup: torch {torch.__version__}, torchaudio {torchaudio.__version__}, '
      f'speechbrain {speechbrain.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, '
      'precision auto -> %s (%s)' % choose_precision('auto', 'cpu'))
"
echo "setup: ready (.venv/bin/python)"
