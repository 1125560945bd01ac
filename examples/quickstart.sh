#!/usr/bin/env bash
# The quickstart pipeline on the offline SmolLM2-135M-Instruct: zero-shot and 5-shot baselines, LoRA SFT, DPO, KTO on
# thumbs up/down feedback, SFT then DPO, and `tuner compare` over the six runs. About 23 minutes on 2 CPU cores (per
# seed).
#
#   bash examples/quickstart.sh
#
# Environment: OUT (parent folder of the runs; default runs/quickstart, or runs/quickstart-2... when that holds
# files; a given OUT is used as it is), TUNER (the command; default .venv/bin/tuner, else tuner on PATH), SET (options for every recipe, e.g.
# "--set data.max_eval_samples=20"), TRAIN_SET (options for the training recipes, e.g. "--set train.max_steps=5"),
# SEEDS (e.g. 0,1,2: every recipe once per seed into OUT/<run>/seed-<n>, compared as one row per method with the
# spread; three seeds take about three times as long), README_TABLE (a file: write the comparison as README's
# table there, with the machine and versions under it, and put it into README.md; see examples/readme_table.py).
set -euo pipefail
cd "$(dirname "$0")/.."

TUNER=${TUNER:-.venv/bin/tuner}
[ -x "${TUNER%% *}" ] || TUNER=tuner
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
# A finished pipeline is never overwritten: without OUT, the first free runs/quickstart, -2, ... is used. A given OUT
# is used as it is: with SEEDS, the seeds that finished there are kept and the rest run (an interrupted pipeline
# continues); without, runs already there stay and new ones go beside them (sft-2...).
if [ -z "${OUT:-}" ]; then
  OUT=runs/quickstart
  if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
    n=2; while [ -e "$OUT-$n" ] && [ -n "$(ls -A "$OUT-$n")" ]; do n=$((n + 1)); done; OUT="$OUT-$n"
  fi
fi
read -r -a SET <<< "${SET:-}"
read -r -a TRAIN_SET <<< "${TRAIN_SET:-}"
SEEDS_OPTION=()
[ -n "${SEEDS:-}" ] && SEEDS_OPTION=(--seeds "$SEEDS")
start=$SECONDS

step() { echo; echo "== [$(( (SECONDS - start) / 60 )) min] tuner $*"; }
step "fewshot recipes/quickstart/zeroshot.yaml"
$TUNER fewshot recipes/quickstart/zeroshot.yaml --set "output_dir=$OUT/zeroshot" "${SET[@]}" "${SEEDS_OPTION[@]}"
step "fewshot recipes/quickstart/fewshot.yaml"
$TUNER fewshot recipes/quickstart/fewshot.yaml --set "output_dir=$OUT/fewshot" "${SET[@]}" "${SEEDS_OPTION[@]}"
step "sft recipes/quickstart/sft.yaml"
$TUNER sft recipes/quickstart/sft.yaml --set "output_dir=$OUT/sft" "${SET[@]}" "${TRAIN_SET[@]}" "${SEEDS_OPTION[@]}"
step "dpo recipes/quickstart/dpo.yaml"
$TUNER dpo recipes/quickstart/dpo.yaml --set "output_dir=$OUT/dpo" "${SET[@]}" "${TRAIN_SET[@]}" "${SEEDS_OPTION[@]}"
step "kto recipes/quickstart/kto.yaml"
$TUNER kto recipes/quickstart/kto.yaml --set "output_dir=$OUT/kto" "${SET[@]}" "${TRAIN_SET[@]}" "${SEEDS_OPTION[@]}"
step "dpo recipes/quickstart/sft_then_dpo.yaml"
$TUNER dpo recipes/quickstart/sft_then_dpo.yaml --set "output_dir=$OUT/sft-dpo" --set "model.adapter=$OUT/sft" \
  "${SET[@]}" "${TRAIN_SET[@]}" "${SEEDS_OPTION[@]}"
step "compare $OUT"
$TUNER compare "$OUT"
took="$(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
echo "Quickstart pipeline: $took"
if [ -n "${README_TABLE:-}" ]; then
  "$PYTHON" examples/readme_table.py "$OUT" --out "$README_TABLE" --readme README.md \
    --marker quickstart --command "SEEDS=${SEEDS:-0} bash examples/quickstart.sh" --took "$took"
fi
