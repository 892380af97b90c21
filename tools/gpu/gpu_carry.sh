#!/usr/bin/env bash
# What a bare GPU node needs for tools/gpu/gpu_check.sh when it has PyTorch (torch, torchaudio,
# numpy, scipy, ...) but neither this project's other packages nor its speech engines, and no
# package index: made here, carried there (both folders are git-ignored).
#   .whl/                        wheels of the lock's pins that such a node lacks, for its Python
#                                (PYVER, default 3.12; x86-64 manylinux)
#   .carry/LibriSpeech-default/  the default corpus (2.2 h), packed as Opus by tools/data/pack_corpus.py
# Then, on the node, from the checkout:
#   WHEELS=.whl PACKED_CORPUS=.carry/LibriSpeech-default bash tools/gpu/gpu_check.sh [--compare-compile]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
PYVER=${PYVER:-3.12}
# What speechpos, SpeechBrain and the recipes import beyond a PyTorch image (checked against the
# imports of asr_ctc.py, pretrain.py and the tools on a node that has torch, numpy, scipy, yaml,
# sentencepiece, tqdm, requests, matplotlib).
names=(speechbrain HyperPyYAML ruamel.yaml ruamel.yaml.clib jiwer RapidFuzz soundfile cffi pycparser flashlight-text)
pins=()
for name in "${names[@]}"; do
  pin=$(grep -i "^${name//./\\.}==" requirements.lock) || { echo "gpu_carry: $name is not in requirements.lock" >&2; exit 1; }
  pins+=("$pin")
done
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp "${platforms[@]}" -d .whl "${pins[@]}"
"$PY" tools/data/make_corpus.py --out data/LibriSpeech-default --size default --seed 1234 --jobs 2 --no-progress
"$PY" tools/data/pack_corpus.py pack data/LibriSpeech-default .carry/LibriSpeech-default --jobs 2
du -sh .whl .carry
