"""SFT training throughput: tuner's quickstart recipe against TRL's SFTTrainer with its own defaults.

Both arms train the same LoRA adapter on the same base model, the same canonical rows and the same number of
optimizer steps, in one process, one after the other; the figure that matters is the ratio of trained tokens per
second (absolute times drift with the machine).

    python benchmarks/sft_throughput.py                      # quickstart recipe, 5 steps per arm
    python benchmarks/sft_throughput.py --steps 10 --recipe recipes/quickstart/sft.yaml
    python benchmarks/sft_throughput.py --set model.dtype=fp32      # tuner forced to fp32 on a bf16-capable CPU

TRL's arm keeps every SFTConfig default (bf16 on, gradient checkpointing on, ...) except the three a comparison
needs: the output folder, the step count, token counting (`include_num_input_tokens_seen`, on in both arms), and on
a machine without a GPU `use_cpu=True`, without which transformers refuses TRL's bf16 default on a CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path


def train_arm(name: str, trainer) -> dict:
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    tokens = int(trainer.state.num_input_tokens_seen)
    return {"arm": name, "steps": trainer.state.global_step, "tokens": tokens, "wall_seconds": round(wall, 2),
            "tokens_per_second": round(tokens / wall, 1), "bf16": trainer.args.bf16,
            "gradient_checkpointing": trainer.args.gradient_checkpointing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/quickstart/sft.yaml")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override the recipe for tuner's arm, e.g. --set model.dtype=fp32")
    args = parser.parse_args()

    import torch
    from trl import SFTConfig, SFTTrainer

    from tuner import load_recipe
    from tuner.adapters import build_peft_config
    from tuner.data import load_data
    from tuner.models import load_model
    from tuner.recipes import sft

    recipe = load_recipe(args.recipe, [*args.overrides, f"train.max_steps={args.steps}", "train.logging_steps=1000"])
    rows = load_data(recipe.data, seed=recipe.seed, source=recipe.source).train
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        loaded = load_model(recipe.model, recipe.source)
        trainer = sft.build_trainer(recipe, loaded, sft.sft_rows(rows, loaded.tokenizer), Path(scratch) / "tuner")
        results.append(train_arm("tuner defaults (quickstart recipe)", trainer))
        del trainer, loaded
        gc.collect()

        loaded = load_model(recipe.model, recipe.source)
        trl_args = SFTConfig(output_dir=str(Path(scratch) / "trl"), max_steps=args.steps,
                             include_num_input_tokens_seen="non_padding", report_to="none", save_strategy="no",
                             use_cpu=not torch.cuda.is_available())
        trainer = SFTTrainer(model=loaded.model, args=trl_args, train_dataset=rows, processing_class=loaded.tokenizer,
                             peft_config=build_peft_config(recipe.adapter))
        results.append(train_arm("TRL SFTTrainer defaults", trainer))

    baseline = results[1]["tokens_per_second"]
    for result in results:
        result["ratio_vs_trl_defaults"] = round(result["tokens_per_second"] / baseline, 2)
    print(json.dumps({"recipe": args.recipe, "steps": args.steps, "results": results}, indent=2))
    print(f"\ntuner / TRL defaults, trained tokens per second: {results[0]['ratio_vs_trl_defaults']}x")


if __name__ == "__main__":
    main()
