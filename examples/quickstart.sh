#!/usr/bin/env bash
# The quickstart pipeline on the offline SmolLM2-135M-Instruct: zero-shot and 5-shot baselines, LoRA SFT, DPO, KTO on
# thumbs up/down feedback, SFT then DPO, and `tuner compare` over the six runs. About 20 minutes on 2 CPU cores (per
# seed).
#
#   bash examples/quickstart.sh
#
# Environment (OUT, TUNER, PYTHON, SET, TRAIN_SET, SEEDS, README_TABLE): see examples/pipeline.sh.
source "$(dirname "$0")/pipeline.sh" quickstart

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
finish Quickstart
