"""What scoring in bf16 autocast costs against fp32 on a CPU: the same eval rows scored by the same model object
twice in one process, in bf16 autocast over fp32 weights (how tuner scored on CPUs with native bf16 before) and in
fp32 (how it scores now, the precision the merged and GGUF exports serve in on a CPU).

    python benchmarks/scoring_precision.py                          # quickstart's 150 test tickets, base model
    python benchmarks/scoring_precision.py --run runs/quickstart-sft --rows 50   # a trained run's adapter on

It prints each precision's seconds and accuracy, the fp32/bf16 time ratio, how many rows the two answer
differently, and the largest difference in a choice's log-probability. Model loading is outside both timings.
"""

from __future__ import annotations

import argparse
import json
import time

RECIPE = "recipes/quickstart/zeroshot.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=RECIPE, help="a recipe whose eval rows and task are scored")
    parser.add_argument("--run", help="a finished run folder whose adapter is put on the base")
    parser.add_argument("--rows", type=int, help="score the first N eval rows only")
    args = parser.parse_args()

    import torch

    from tuner import load_recipe
    from tuner.adapters import with_run_adapter
    from tuner.data.rows import scoring_rows
    from tuner.data.splits import load_data
    from tuner.evaluator import evaluate
    from tuner.hardware import cpu_has_native_bf16, cpu_name
    from tuner.models import load_model
    from tuner.speed import Precision

    recipe = load_recipe(args.recipe)
    splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
    rows = list(scoring_rows(splits.eval))[: args.rows]
    loaded = load_model(recipe.model, recipe.source, Precision(compute="fp32", weights="fp32"))
    model, tokenizer = loaded.model, loaded.tokenizer
    if args.run:
        model = with_run_adapter(model, args.run)
    model.eval()
    results = {}
    for precision in ("bf16", "fp32", "bf16 again"):  # bf16 twice: the machine's own drift between passes
        start = time.perf_counter()
        result = evaluate(model, tokenizer, rows, recipe.eval, splits.labels, precision.split()[0])
        results[precision] = (time.perf_counter() - start, result)
    bf16, fp32 = results["bf16"][1], results["fp32"][1]
    differing = [
        n for n, (a, b) in enumerate(zip(bf16.predictions, fp32.predictions)) if a["prediction"] != b["prediction"]
    ]
    largest = max(
        (abs(a["scores"][k] - b["scores"][k]) for a, b in zip(bf16.predictions, fp32.predictions) for k in a["scores"]),
        default=0.0,
    )
    seconds = {k: round(v[0], 2) for k, v in results.items()}
    print(
        json.dumps(
            {
                "cpu": cpu_name(),
                "cpu_native_bf16": cpu_has_native_bf16(),
                "torch": torch.__version__,
                "rows": len(rows),
                "seconds": seconds,
                "fp32_time_over_bf16": round(seconds["fp32"] / min(seconds["bf16"], seconds["bf16 again"]), 2),
                "accuracy": {"bf16": bf16.metrics["accuracy"], "fp32": fp32.metrics["accuracy"]},
                "rows_answered_differently": len(differing),
                "max_abs_choice_logprob_difference": round(largest, 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
