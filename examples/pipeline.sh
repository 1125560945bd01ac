# Sourced by examples/quickstart.sh and examples/feedback.sh (`source examples/pipeline.sh NAME`): what both read
# from the environment, the output folder, the step banner and the README table at the end.
#
# Environment: OUT (parent folder of the runs; default runs/NAME, or runs/NAME-2... when that holds files; a given
# OUT is used as it is), TUNER (the command; default .venv/bin/tuner, else tuner on PATH), PYTHON, SET (options for
# every recipe, e.g. "--set data.max_eval_samples=20"), TRAIN_SET (options for the training recipes, e.g.
# "--set train.max_steps=5"), SEEDS (e.g. 0,1,2: every recipe once per seed into OUT/<run>/seed-<n>, compared as one
# row per method with the spread; three seeds take about three times as long), README_TABLE (a file: write the
# comparison as README's table there, with the machine and versions under it, and put it into README.md between the
# NAME-table markers: README.md, a page of docs/ or BENCHMARKS.md, or README_FILE; see examples/readme_table.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PIPELINE=$1

TUNER=${TUNER:-.venv/bin/tuner}
[ -x "${TUNER%% *}" ] || TUNER=tuner
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
# A finished pipeline is never overwritten: without OUT, the first free runs/NAME, -2, ... is used. A given OUT is
# used as it is: with SEEDS, the seeds that finished there are kept and the rest run (an interrupted pipeline
# continues); without, runs already there stay and new ones go beside them (sft-2...).
if [ -z "${OUT:-}" ]; then
  OUT=runs/$PIPELINE
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

# The page that holds NAME's table markers (README.md, a page of docs/ or BENCHMARKS.md); README.md when none does.
table_page() {
  local found
  found=$(grep -l -- "<!-- $1-table:start -->" README.md docs/*.md BENCHMARKS.md 2>/dev/null | head -1 || true)
  echo "${found:-README.md}"
}

# The comparison of OUT, the time the pipeline took, and with README_TABLE its table on the page holding its markers.
finish() {
  step "compare $OUT"
  $TUNER compare "$OUT"
  local took="$(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
  echo "$1 pipeline: $took"
  if [ -n "${README_TABLE:-}" ]; then
    "$PYTHON" examples/readme_table.py "$OUT" --out "$README_TABLE" --readme "${README_FILE:-$(table_page "$PIPELINE")}" \
      --marker "$PIPELINE" --command "SEEDS=${SEEDS:-0} bash examples/$PIPELINE.sh" --took "$took"
  fi
}
