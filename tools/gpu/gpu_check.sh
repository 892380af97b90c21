#!/usr/bin/env bash
# The GPU path in under 8 minutes: 3 min of position-prediction pretraining and 4 min of CTC
# fine-tuning on the bench corpus, on CUDA where there is a GPU; prints throughput, warm-up,
# peak memory and WER (tools/gpu/gpu_check.py has the options; --quick runs the same on CPU in seconds).
#   bash tools/gpu/gpu_check.sh [--corpus DIR] [--out DIR] [--quick] [...]
# A bare GPU node without the project's environment or speech engines:
#   WHEELS=dir          installs the wheels in dir first (no index, no dependencies resolved: the
#                       node's own torch, numpy, ... stay) and puts this checkout on PYTHONPATH;
#   PACKED_CORPUS=dir   a corpus packed by tools/data/pack_corpus.py: unpacked to data/<its name>
#                       (FLAC) and passed as --corpus.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile "$WHEELS"/*.whl
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
extra=()
if [ -n "${PACKED_CORPUS:-}" ]; then
  corpus="data/$(basename "$PACKED_CORPUS")"
  "$PY" tools/data/pack_corpus.py unpack "$PACKED_CORPUS" "$corpus" --jobs "$(nproc)"
  extra=(--corpus "$corpus")
fi
exec "$PY" tools/gpu/gpu_check.py "${extra[@]}" "$@"
