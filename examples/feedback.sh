#!/usr/bin/env bash
# Learning from rewards on the quickstart tickets, beside the quickstart pipeline (a second script, because with it
# the quickstart would pass 30 minutes on 2 CPU cores): the zero-shot baseline, LoRA SFT, a reward model from the
# preference pairs (`tuner reward`), GRPO with the `choice` reward from the base model and from the SFT adapter
# (`tuner grpo`), and `tuner compare` over them. About 35 minutes on 2 CPU cores (per seed).
#
#   bash examples/feedback.sh
#
# Environment: as examples/quickstart.sh (OUT, default runs/feedback or runs/feedback-2...; TUNER; PYTHON; SET;
# TRAIN_SET; SEEDS; README_TABLE, written between README's feedback-table markers).
set -euo pipefail
cd "$(dirname "$0")/.."

TUNER=${TUNER:-.venv/bin/tuner}
[ -x "${TUNER%% *}" ] || TUNER=tuner
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
if [ -z "${OUT:-}" ]; then
  OUT=runs/feedback
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
step "sft recipes/quickstart/sft.yaml"
$TUNER sft recipes/quickstart/sft.yaml --set "output_dir=$OUT/sft" "${SET[@]}" "${TRAIN_SET[@]}" "${SEEDS_OPTION[@]}"
step "reward recipes/quickstart/reward.yaml"
$TUNER reward recipes/quickstart/reward.yaml --set "output_dir=$OUT/reward" "${SET[@]}" "${TRAIN_SET[@]}" \
  "${SEEDS_OPTION[@]}"
step "grpo recipes/quickstart/grpo.yaml"
$TUNER grpo recipes/quickstart/grpo.yaml --set "output_dir=$OUT/grpo" "${SET[@]}" "${TRAIN_SET[@]}" "${SEEDS_OPTION[@]}"
step "grpo recipes/quickstart/sft_then_grpo.yaml"
$TUNER grpo recipes/quickstart/sft_then_grpo.yaml --set "output_dir=$OUT/sft-grpo" --set "model.adapter=$OUT/sft" \
  "${SET[@]}" "${TRAIN_SET[@]}" "${SEEDS_OPTION[@]}"
step "compare $OUT"
$TUNER compare "$OUT"
took="$(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
echo "Feedback pipeline: $took"
if [ -n "${README_TABLE:-}" ]; then
  "$PYTHON" examples/readme_table.py "$OUT" --out "$README_TABLE" --readme README.md \
    --marker feedback --command "SEEDS=${SEEDS:-0} bash examples/feedback.sh" --took "$took"
fi
