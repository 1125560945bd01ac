"""Evaluator speed and agreement: tuner's `choice` task against lm-evaluation-harness's HF backend on SST-2 dev.

Both score the same 872 rows of ../shared/data/sst2/dev.jsonl with the same model object (SmolLM2-135M-Instruct
from the offline GGUF, fp32), the same plain-text prompt and the same choices, one after the other in one process;
model loading is outside both timings. Prints both accuracies and the speed ratio.

    pip install lm-eval==0.4.13            # the peer, only for this benchmark
    python benchmarks/eval_vs_lmeval.py    # from the repository root
    python benchmarks/eval_vs_lmeval.py --limit 200 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RECIPE = "recipes/sst2/zeroshot_lmeval_prompt.yaml"
TASK_YAML = """task: sst2_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {dev}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{sentence}}}}\\nQuestion: Is this sentence positive or negative?\\nAnswer:"
doc_to_target: label
doc_to_choice: ["negative", "positive"]
metric_list:
  - metric: acc
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N dev rows")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of both evaluators")
    args = parser.parse_args()

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tuner import load_recipe
    from tuner.data.splits import load_data
    from tuner.selection import fewshot_rows
    from tuner.evaluator import evaluate
    from tuner.models import load_model

    overrides = [f"data.max_eval_samples={args.limit}"] if args.limit else []
    recipe = load_recipe(RECIPE, overrides + [f"eval.batch_size={args.batch_size}"])
    splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
    rows = fewshot_rows(splits.train, splits.eval, recipe.fewshot)
    loaded = load_model(recipe.model, recipe.source)

    start = time.perf_counter()
    ours = evaluate(loaded.model, loaded.tokenizer, rows, recipe.eval, recipe.data.label_names, loaded.dtype)
    tuner_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as folder:
        dev = (Path(recipe.data.eval.path)).resolve()
        (Path(folder) / "sst2_local.yaml").write_text(TASK_YAML.format(dev=dev), encoding="utf-8")
        peer = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=args.batch_size)
        start = time.perf_counter()
        theirs = simple_evaluate(model=peer, tasks=["sst2_local"], task_manager=TaskManager(include_path=folder),
                                 limit=args.limit, num_fewshot=0)
        lmeval_seconds = time.perf_counter() - start
    peer_accuracy = theirs["results"]["sst2_local"]["acc,none"]

    print(json.dumps({
        "rows": ours.metrics["rows"],
        "tuner": {"accuracy": ours.metrics["accuracy"], "ci95": ours.metrics["accuracy_ci95"],
                  "seconds": round(tuner_seconds, 2)},
        "lm_eval_0.4.13_hf": {"accuracy": round(peer_accuracy, 4),
                              "stderr": round(theirs["results"]["sst2_local"]["acc_stderr,none"], 4),
                              "seconds": round(lmeval_seconds, 2)},
        "accuracy_difference_points": round(100 * (ours.metrics["accuracy"] - peer_accuracy), 2),
        "speed_ratio_tuner_over_lmeval": round(lmeval_seconds / tuner_seconds, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
