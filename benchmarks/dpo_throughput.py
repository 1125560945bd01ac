"""DPO step throughput and peak memory: tuner's quickstart DPO recipe against TRL's DPOTrainer with its own defaults.

Both arms train the same new LoRA adapter on the same base model, the same canonical preference pairs and the same
number of optimizer steps. Each arm runs in a child process of this one invocation, so that each peak memory
(resident set on a CPU, CUDA peak on a GPU) is its own; the ratio is what matters.

    python benchmarks/dpo_throughput.py                  # quickstart DPO recipe, 8 steps per arm
    python benchmarks/dpo_throughput.py --steps 12

TRL's arm keeps every DPOConfig default (bf16, gradient checkpointing, batch size 8, ...) except output folder,
step count, token counting (`include_num_input_tokens_seen`, on in both arms) and, without a GPU, `use_cpu=True`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = "recipes/quickstart/dpo.yaml"


def peak_memory_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def arm(name: str, steps: int) -> dict:
    import torch
    from trl import DPOConfig, DPOTrainer

    from tuner import load_recipe
    from tuner.adapters import build_peft_config
    from tuner.data import load_data
    from tuner.models import load_model
    from tuner.recipes import dpo

    # The tuner arm uses the recipe's batch size; TRL's arm its own default (8), so the same steps see as many rows.
    recipe = load_recipe(RECIPE, [f"train.max_steps={steps}", "train.logging_steps=1000"])
    rows = load_data(recipe.data, seed=recipe.seed, source=recipe.source).train
    loaded = load_model(recipe.model, recipe.source)
    with tempfile.TemporaryDirectory() as scratch:
        if name == "tuner":
            trainer = dpo.build_trainer(recipe, loaded, rows, Path(scratch))
        else:
            args = DPOConfig(output_dir=scratch, max_steps=steps, include_num_input_tokens_seen="non_padding",
                             report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available())
            trainer = DPOTrainer(model=loaded.model, args=args, train_dataset=rows, processing_class=loaded.tokenizer,
                                 peft_config=build_peft_config(recipe.adapter))
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    tokens = int(trainer.state.num_input_tokens_seen)
    return {"arm": name, "steps": trainer.state.global_step, "pairs_per_step": trainer.args.per_device_train_batch_size,
            "tokens": tokens, "wall_seconds": round(wall, 2), "tokens_per_second": round(tokens / wall, 1),
            "seconds_per_step": round(wall / trainer.state.global_step, 2),
            "peak_memory_mb": round(peak_memory_mb(), 1), "bf16": trainer.args.bf16,
            "gradient_checkpointing": trainer.args.gradient_checkpointing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--arm", choices=["tuner", "trl"], help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.arm:
        print("RESULT " + json.dumps(arm(args.arm, args.steps)))
        return
    results = []
    for name in ("tuner", "trl"):
        done = subprocess.run([sys.executable, __file__, "--arm", name, "--steps", str(args.steps)],
                              capture_output=True, text=True, check=True)
        results.append(json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:]))
    tuner, trl = results
    print(json.dumps({"recipe": RECIPE, "steps": args.steps, "results": results,
                      "tokens_per_second_ratio": round(tuner["tokens_per_second"] / trl["tokens_per_second"], 2),
                      "peak_memory_ratio": round(tuner["peak_memory_mb"] / trl["peak_memory_mb"], 2)}, indent=2))


if __name__ == "__main__":
    main()
