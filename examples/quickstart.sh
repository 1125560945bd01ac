#!/usr/bin/env bash
# The quickstart pipeline on the offline SmolLM2-135M-Instruct: zero-shot and 5-shot baselines, LoRA SFT, DPO, SFT then
# DPO, and `tuner compare` over the five runs. About 16 minutes on 2 CPU cores.
#
#   bash examples/quickstart.sh
#
# Environment: OUT (parent folder of the runs; default runs/quickstart, or runs/quickstart-2... when that holds
# files), TUNER (the command; default .venv/bin/tuner, else tuner on PATH), SET (options for every recipe, e.g.
# "--set data.max_eval_samples=20"), TRAIN_SET (options for the training recipes, e.g. "--set train.max_steps=5").
set -euo pipefail
cd "$(dirname "$0")/.."

TUNER=${TUNER:-.venv/bin/tuner}
[ -x "${TUNER%% *}" ] || TUNER=tuner
OUT=${OUT:-runs/quickstart}
# A finished pipeline is never overwritten: pick the first free folder, as run folders do.
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
  n=2; while [ -e "$OUT-$n" ] && [ -n "$(ls -A "$OUT-$n")" ]; do n=$((n + 1)); done; OUT="$OUT-$n"
fi
read -r -a SET <<< "${SET:-}"
read -r -a TRAIN_SET <<< "${TRAIN_SET:-}"
start=$SECONDS

step() { echo; echo "== [$(( (SECONDS - start) / 60 )) min] tuner $*"; }
step "fewshot recipes/quickstart/zeroshot.yaml"
$TUNER fewshot recipes/quickstart/zeroshot.yaml --set "output_dir=$OUT/zeroshot" "${SET[@]}"
step "fewshot recipes/quickstart/fewshot.yaml"
$TUNER fewshot recipes/quickstart/fewshot.yaml --set "output_dir=$OUT/fewshot" "${SET[@]}"
step "sft recipes/quickstart/sft.yaml"
$TUNER sft recipes/quickstart/sft.yaml --set "output_dir=$OUT/sft" "${SET[@]}" "${TRAIN_SET[@]}"
step "dpo recipes/quickstart/dpo.yaml"
$TUNER dpo recipes/quickstart/dpo.yaml --set "output_dir=$OUT/dpo" "${SET[@]}" "${TRAIN_SET[@]}"
step "dpo recipes/quickstart/sft_then_dpo.yaml"
$TUNER dpo recipes/quickstart/sft_then_dpo.yaml --set "output_dir=$OUT/sft-dpo" --set "model.adapter=$OUT/sft" \
  "${SET[@]}" "${TRAIN_SET[@]}"
step "compare $OUT"
$TUNER compare "$OUT"
echo "Quickstart pipeline: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
