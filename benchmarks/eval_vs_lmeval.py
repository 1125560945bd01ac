"""Evaluator speed and agreement: tuner's `choice` task against lm-evaluation-harness's HF backend on SST-2 dev.

Both score the same 872 rows of ../shared/data/sst2/dev.jsonl with the same model object (SmolLM2-135M-Instruct
from the offline GGUF, fp32), the same plain-text prompt and the same choices, one after the other in one process;
model loading is outside both timings. Zero-shot, and 5-shot with the same five worked examples before every
question (tuner's `fewshot.select: first`, lm-eval's `first_n` sampler on a file of those five training rows):
the script checks that both built the same prompt for every row, then prints both accuracies, the speed ratio and
each side's useful FLOPs per second as a fraction of the machine's matmul ceiling (in the weights' precision,
fp32 unless `--dtype bf16`) measured first.

Useful FLOPs (benchmarks/ceiling.py `scoring_flops`) are the least arithmetic that scores the rows exactly: each
row's own tokens and the prefix every row shares (the five examples) once, the LM head only where an answer
token is scored. Both sides are divided by the same count, so their fractions differ as their times do.

    pip install lm-eval==0.4.13            # the peer, only for this benchmark
    python benchmarks/eval_vs_lmeval.py    # from the repository root; --shots 0 or --shots 5 for one of the two
    python benchmarks/eval_vs_lmeval.py --limit 200 --batch-size 32
    python benchmarks/eval_vs_lmeval.py --limit 256 --scaling 8,16,32,64     # tuner alone, one line per batch size
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RECIPE = "recipes/sst2/zeroshot_lmeval_prompt.yaml"
FIRST_SHOTS = ["fewshot.select=first", "fewshot.as_chat=false"]
TASK_YAML = """task: sst2_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {dev}
    train: {train}
output_type: multiple_choice
validation_split: validation
fewshot_split: train
fewshot_config:
  sampler: first_n
doc_to_text: "{{{{sentence}}}}\\nQuestion: Is this sentence positive or negative?\\nAnswer:"
doc_to_target: label
doc_to_choice: ["negative", "positive"]
metric_list:
  - metric: acc
"""


def tuner_side(shots: int, limit: int | None, batch_size: int):
    """The recipe with `shots` first examples and this batch size, its data splits, and its eval rows."""
    from tuner import load_recipe
    from tuner.data.splits import load_data
    from tuner.selection import fewshot_rows

    overrides = [f"data.max_eval_samples={limit}"] if limit else []
    recipe = load_recipe(RECIPE, overrides + FIRST_SHOTS + [f"eval.batch_size={batch_size}", f"fewshot.k={shots}"])
    splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
    rows = fewshot_rows(splits.train, splits.eval, recipe.fewshot)
    return recipe, splits, rows


def shot_sentences(splits, rows, shots: int) -> list[dict]:
    """The training rows tuner put before every question, as lm-eval documents (sentence, label index)."""
    from tuner.data.rows import answer_text, prompt_text, scoring_rows

    eval_questions = {prompt_text(row) for row in scoring_rows(splits.eval)}
    pool = [row for row in scoring_rows(splits.train) if prompt_text(row) not in eval_questions][:shots]
    suffix = "\nQuestion: Is this sentence positive or negative?\nAnswer:"
    return [
        {"sentence": prompt_text(row)[: -len(suffix)], "label": ["negative", "positive"].index(answer_text(row))}
        for row in pool
    ]


def scoring_rows_flops(model, tokenizer, contexts: list[str]) -> float:
    """Useful FLOPs of scoring these contexts (one scored position each: both answers are one token)."""
    from ceiling import scoring_flops

    from tuner.likelihood import _shared_prefix

    encoded = [tuple(tokenizer(context, add_special_tokens=False)["input_ids"]) for context in contexts]
    shared = len(_shared_prefix(encoded))  # the prefix the evaluator itself runs once
    return scoring_flops(model, shared, [len(ids) - shared for ids in encoded])


def model_and_ceiling(recipe, dtype: str):
    """The recipe's model with weights in `dtype`, and the machine's matmul ceiling in it (FLOP/s)."""
    import torch
    from ceiling import matmul_ceiling

    from tuner.models import load_model

    loaded = load_model(recipe.model, recipe.source)
    loaded.model.to({"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    return loaded, matmul_ceiling(loaded.model.config, 2048, dtype)["ceiling"]


def batch_scaling(args, sizes: list[int]) -> None:
    """tuner's evaluator alone at each batch size, zero- and 5-shot: rows per second and the ceiling fraction."""
    from tuner.evaluator import evaluate

    loaded = ceiling = None
    for shots in args.shots or [0, 5]:
        for size in sizes:
            recipe, _, rows = tuner_side(shots, args.limit, size)
            if loaded is None:
                loaded, ceiling = model_and_ceiling(recipe, args.dtype)
            start = time.perf_counter()
            ours = evaluate(loaded.model, loaded.tokenizer, rows, recipe.eval, recipe.data.label_names, loaded.dtype)
            seconds = time.perf_counter() - start
            flops = scoring_rows_flops(loaded.model, loaded.tokenizer, [p["prompt"] for p in ours.predictions])
            print(
                json.dumps(
                    {
                        "shots": shots,
                        "batch_size": size,
                        "rows": len(rows),
                        "seconds": round(seconds, 2),
                        "rows_per_second": round(len(rows) / seconds, 1),
                        "accuracy": ours.metrics["accuracy"],
                        "ceiling_fraction": round(flops / seconds / ceiling, 3),
                    }
                ),
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N dev rows")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of both evaluators")
    parser.add_argument("--shots", type=int, choices=[0, 5], action="append", help="0, 5 or both (the default)")
    parser.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        default="fp32",
        help="weights of the one model both score with (and the ceiling measured in it)",
    )
    parser.add_argument("--scaling", help="comma-separated batch sizes: time tuner alone at each (no lm-eval)")
    args = parser.parse_args()
    if args.scaling:
        return batch_scaling(args, [int(size) for size in args.scaling.split(",")])

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from tuner.evaluator import evaluate

    results = []
    loaded = ceiling = None
    for shots in args.shots or [0, 5]:
        recipe, splits, rows = tuner_side(shots, args.limit, args.batch_size)
        if loaded is None:
            loaded, ceiling = model_and_ceiling(recipe, args.dtype)
            print(json.dumps({f"{args.dtype}_matmul_ceiling_gflops_per_second": round(ceiling / 1e9, 1)}), flush=True)
        start = time.perf_counter()
        ours = evaluate(loaded.model, loaded.tokenizer, rows, recipe.eval, recipe.data.label_names, loaded.dtype)
        tuner_seconds = time.perf_counter() - start

        with tempfile.TemporaryDirectory() as folder:
            dev = Path(recipe.data.eval.path).resolve()
            train = Path(folder) / "shots.jsonl"
            train.write_text(
                "".join(json.dumps(doc) + "\n" for doc in shot_sentences(splits, rows, shots))
                or json.dumps({"sentence": "unused", "label": 0}) + "\n",
                encoding="utf-8",
            )
            (Path(folder) / "sst2_local.yaml").write_text(TASK_YAML.format(dev=dev, train=train), encoding="utf-8")
            peer = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=args.batch_size)
            start = time.perf_counter()
            theirs = simple_evaluate(
                model=peer,
                tasks=["sst2_local"],
                task_manager=TaskManager(include_path=folder),
                limit=args.limit,
                num_fewshot=shots,
                log_samples=True,
            )
            lmeval_seconds = time.perf_counter() - start
        samples = sorted(theirs["samples"]["sst2_local"], key=lambda sample: sample["doc_id"])
        their_contexts = [sample["arguments"][0][0] for sample in samples]
        our_contexts = [prediction["prompt"] for prediction in ours.predictions]
        if their_contexts != our_contexts:
            raise SystemExit(
                f"{shots}-shot: the two evaluators built different prompts, e.g.\n"
                f"{our_contexts[0]!r}\n{their_contexts[0]!r}"
            )
        flops = scoring_rows_flops(loaded.model, loaded.tokenizer, our_contexts)
        peer_accuracy = theirs["results"]["sst2_local"]["acc,none"]
        results.append(
            {
                "shots": shots,
                "dtype": args.dtype,
                "rows": ours.metrics["rows"],
                "same_prompts": True,
                "prompt_tokens_per_row": ours.metrics["prompt_tokens_per_example"],
                "useful_gflop": round(flops / 1e9, 1),
                "tuner": {
                    "accuracy": ours.metrics["accuracy"],
                    "ci95": ours.metrics["accuracy_ci95"],
                    "seconds": round(tuner_seconds, 2),
                    "ceiling_fraction": round(flops / tuner_seconds / ceiling, 3),
                },
                "lm_eval_0.4.13_hf": {
                    "accuracy": round(peer_accuracy, 4),
                    "stderr": round(theirs["results"]["sst2_local"]["acc_stderr,none"], 4),
                    "seconds": round(lmeval_seconds, 2),
                    "ceiling_fraction": round(flops / lmeval_seconds / ceiling, 3),
                },
                "accuracy_difference_points": round(100 * (ours.metrics["accuracy"] - peer_accuracy), 2),
                "speed_ratio_tuner_over_lmeval": round(lmeval_seconds / tuner_seconds, 2),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
