#!/usr/bin/env bash
# The GPU path in under 8 minutes: 3 min of position-prediction pretraining and 4 min of CTC
# fine-tuning on the bench corpus, on CUDA where there is a GPU; prints throughput, peak memory
# and WER (tools/gpu_check.py has the options; --quick runs the same on CPU in seconds).
#   bash tools/gpu_check.sh [--corpus DIR] [--out DIR] [--quick]
# A bare GPU node without the project's environment: WHEELS=dir-of-wheels installs the lock's
# packages from that folder first (no index), into the Python that runs the check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps "$WHEELS"/*.whl
  "$PY" -m pip install --quiet --no-deps --no-build-isolation -e .
fi
export PYTHONUNBUFFERED=1
exec "$PY" tools/gpu_check.py "$@"
