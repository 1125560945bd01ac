#!/usr/bin/env bash
# The GPU check on the lent GPU machine, which reaches no package index: install from the kit into a fresh virtual
# environment that sees the machine's own packages (its CUDA torch), then run benchmarks/gpu_check.py with tuner
# imported from this tree (about 5 minutes on one H100/H200). Results: $OUT/gpu_check.json and gpu_check.md.
#
#   python benchmarks/gpu_kit.py build --out gpu-kit      # first, here (with the index): ~30 MiB
#   bash benchmarks/gpu_check.sh                          # there; carry gpu-kit with the tree
#
# Environment: PYTHON (default python3, the one whose torch sees the GPU), KIT (default gpu-kit), ENV (the virtual
# environment, default /tmp/tuner-gpu-env), OUT (default gpu-check). Options go on to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
KIT=${KIT:-gpu-kit}
ENV=${ENV:-/tmp/tuner-gpu-env}
OUT=${OUT:-gpu-check}
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print('torch', torch.__version__, torch.cuda.get_device_name())"
"$PYTHON" benchmarks/gpu_kit.py install --kit "$KIT" --env "$ENV"
# tuner from this tree, not an install: the check measures the code as committed.
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH="$PWD/src" "$ENV/bin/python" benchmarks/gpu_check.py --kit "$KIT" --out "$OUT" "$@"
