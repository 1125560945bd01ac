#!/usr/bin/env bash
# The knowledge quickstart: prompt, retrieve or fine-tune, on a fictional company handbook that no base model knows
# (data: python examples/make_handbook.py). On the offline SmolLM2-135M-Instruct it runs zero-shot, few-shot,
# RAG (BM25), RAG (dense), SFT, SFT+RAG and retrieval-aware SFT, compares them; then the handbook is updated and the
# questions whose answer changed are asked again, without retraining: retrieval follows the update, the tuned-only
# adapter does not. About 20 minutes on 2 CPU cores.
#
#   bash examples/knowledge.sh
#
# Environment: OUT (parent folder of the runs; default runs/knowledge, or runs/knowledge-2... when that holds files),
# TUNER (the command; default .venv/bin/tuner, else tuner on PATH), SET (options for every recipe, e.g.
# "--set data.max_eval_samples=8"), TRAIN_SET (options for the training recipes, e.g. "--set train.max_steps=2"),
# README_TABLE (any value: write both comparisons as README's knowledge tables, docs/knowledge-table.md and
# docs/knowledge-updated-table.md, and put them into README.md; see examples/readme_table.py).
set -euo pipefail
cd "$(dirname "$0")/.."

TUNER=${TUNER:-.venv/bin/tuner}
[ -x "${TUNER%% *}" ] || TUNER=tuner
OUT=${OUT:-runs/knowledge}
# A finished pipeline is never overwritten: pick the first free folder, as run folders do.
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
  n=2; while [ -e "$OUT-$n" ] && [ -n "$(ls -A "$OUT-$n")" ]; do n=$((n + 1)); done; OUT="$OUT-$n"
fi
read -r -a SET <<< "${SET:-}"
read -r -a TRAIN_SET <<< "${TRAIN_SET:-}"
R=recipes/knowledge
# The handbook as a team keeps it: one folder, edited in place. Its index is built on the first run, reused after,
# and updated (only the passages that changed) when the folder changes.
CORPUS="$OUT/corpus"
mkdir -p "$OUT" && rm -rf "$CORPUS" && cp -r examples/data/handbook/corpus_v1 "$CORPUS"
HANDBOOK=(--set "rag.corpus=$CORPUS")
UPDATED=(--set data.eval.path=examples/data/handbook/updated.jsonl)
start=$SECONDS

step() { echo; echo "== [$(( (SECONDS - start) / 60 )) min] tuner $*"; }
step "fewshot $R/zeroshot.yaml"
$TUNER fewshot $R/zeroshot.yaml --set "output_dir=$OUT/handbook/zeroshot" "${SET[@]}"
step "fewshot $R/fewshot.yaml"
$TUNER fewshot $R/fewshot.yaml --set "output_dir=$OUT/handbook/fewshot" "${SET[@]}"
step "rag $R/rag_bm25.yaml"
$TUNER rag $R/rag_bm25.yaml "${HANDBOOK[@]}" --set "output_dir=$OUT/handbook/rag-bm25" "${SET[@]}"
step "rag $R/rag_dense.yaml"
$TUNER rag $R/rag_dense.yaml "${HANDBOOK[@]}" --set "output_dir=$OUT/handbook/rag-dense" "${SET[@]}"
step "sft $R/sft.yaml"
$TUNER sft $R/sft.yaml --set "output_dir=$OUT/handbook/sft" "${SET[@]}" "${TRAIN_SET[@]}"
step "rag $R/sft_rag.yaml"
$TUNER rag $R/sft_rag.yaml "${HANDBOOK[@]}" --set "model.adapter=$OUT/handbook/sft" \
  --set "output_dir=$OUT/handbook/sft-rag" "${SET[@]}"
step "sft $R/rag_sft.yaml"
$TUNER sft $R/rag_sft.yaml "${HANDBOOK[@]}" --set "output_dir=$OUT/handbook/rag-sft" "${SET[@]}" "${TRAIN_SET[@]}"
step "compare $OUT/handbook"
$TUNER compare "$OUT/handbook"
PYTHON=${PYTHON:-.venv/bin/python}; [ -x "$PYTHON" ] || PYTHON=python3
"$PYTHON" examples/knowledge_breakdown.py "$OUT/handbook"

echo; echo "== The handbook changed (corpus_v2 copied over $CORPUS): the questions whose answer changed, asked again"
echo "   without retraining"
rm -rf "$CORPUS" && cp -r examples/data/handbook/corpus_v2 "$CORPUS"
step "fewshot $R/zeroshot.yaml (updated questions)"
$TUNER fewshot $R/zeroshot.yaml "${UPDATED[@]}" --set "output_dir=$OUT/updated/zeroshot" "${SET[@]}"
step "eval $R/sft.yaml --adapter $OUT/handbook/sft (updated questions)"
$TUNER eval $R/sft.yaml "${UPDATED[@]}" --adapter "$OUT/handbook/sft" --output-dir "$OUT/updated/sft" "${SET[@]}"
step "rag $R/rag_bm25.yaml (updated handbook)"
$TUNER rag $R/rag_bm25.yaml "${HANDBOOK[@]}" "${UPDATED[@]}" --set "output_dir=$OUT/updated/rag-bm25" "${SET[@]}"
step "rag $R/rag_dense.yaml (updated handbook)"
$TUNER rag $R/rag_dense.yaml "${HANDBOOK[@]}" "${UPDATED[@]}" --set "output_dir=$OUT/updated/rag-dense" "${SET[@]}"
step "rag $R/sft_rag.yaml (updated handbook)"
$TUNER rag $R/sft_rag.yaml "${HANDBOOK[@]}" "${UPDATED[@]}" --set "model.adapter=$OUT/handbook/sft" \
  --set "output_dir=$OUT/updated/sft-rag" "${SET[@]}"
step "rag $R/sft_rag.yaml with the retrieval-aware adapter (updated handbook)"
$TUNER rag $R/sft_rag.yaml "${HANDBOOK[@]}" "${UPDATED[@]}" --set "model.adapter=$OUT/handbook/rag-sft" \
  --set "output_dir=$OUT/updated/rag-sft" "${SET[@]}"
step "compare $OUT/updated"
$TUNER compare "$OUT/updated"
"$PYTHON" examples/knowledge_breakdown.py "$OUT/updated"
took="$(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
echo "Knowledge pipeline: $took"
if [ -n "${README_TABLE:-}" ]; then
  for part in handbook updated; do
    marker=knowledge; [ "$part" = updated ] && marker=knowledge-updated
    "$PYTHON" examples/readme_table.py "$OUT/$part" --out "docs/$marker-table.md" --readme README.md \
      --marker "$marker" --command "bash examples/knowledge.sh" --took "$took"
  done
fi
