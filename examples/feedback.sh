#!/usr/bin/env bash
# Learning from rewards on the quickstart tickets, beside the quickstart pipeline (a second script, because with it
# the quickstart would pass 30 minutes on 2 CPU cores): the zero-shot baseline, LoRA SFT, a reward model from the
# preference pairs (`tuner reward`), GRPO with the `choice` reward from the base model and from the SFT adapter
# (`tuner grpo`), and `tuner compare` over them. About 12 minutes on 2 CPU cores (per seed).
#
#   bash examples/feedback.sh
#
# Environment (OUT, TUNER, PYTHON, SET, TRAIN_SET, SEEDS, README_TABLE): see examples/pipeline.sh.
source "$(dirname "$0")/pipeline.sh" feedback

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
finish Feedback
