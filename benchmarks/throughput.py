"""Training throughput and peak memory: tuner's defaults against TRL's trainer with its own defaults, and against
TRL configured by hand the best ways found, on data of mixed lengths.

Every arm trains the same new LoRA adapter (r 16, all linear layers) on the same base model for one epoch over the
same rows, at the same `max_length` (TRL's default, 1024, so no arm truncates more than another). Each arm runs in a
child process of this one invocation, so each peak memory (resident set on a CPU, CUDA peak on a GPU) is its own.
Trained tokens are counted from the rows each trainer actually fed (after its truncation or packing), so arms that
pack, group or pad differently are compared on the same work. Each arm's useful FLOPs per second (the model's own
arithmetic, `benchmarks/ceiling.py`) are given as a fraction of the machine's dense matmul ceiling at the model's
shapes, measured in the same invocation in the arm's precision. Wall time runs from building the trainer (tokenizing,
and any precomputed reference pass) to the end of training.

    python benchmarks/throughput.py --method sft --rows 96      # alpaca_en_demo.json from ../shared/data
    python benchmarks/throughput.py --method dpo --rows 48      # dpo_en_demo.json
    python benchmarks/throughput.py --method sft --arms tuner,trl_defaults --model /path/to/model
    python benchmarks/throughput.py --method sft --rows 24 --arms tuner,tuner_compiled   # torch.compile's effect
    python benchmarks/throughput.py --method sft --rows 48 --arms tuner_batch_2,tuner_batch_4,tuner   # batch size

TRL's arms keep every config default except output folder, epochs, `max_length`, no saving, no tracker and, on a
machine without a GPU, `use_cpu=True` (without which transformers refuses TRL's bf16 default on a CPU). The
hand-configured arms then change only what their name says.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "llamafactory"
DATA = {"sft": SHARED / "alpaca_en_demo.json", "dpo": SHARED / "dpo_en_demo.json"}
RECIPE = {"sft": "recipes/quickstart/sft.yaml", "dpo": "recipes/quickstart/dpo.yaml"}

# tuner's arms: its defaults, and with these `train:` keys on top (asked for by --arms only).
TUNER_ARMS = {
    "tuner": {},
    "tuner_compiled": {"torch_compile": True},
    "tuner_batch_2": {"per_device_train_batch_size": 2},
    "tuner_batch_4": {"per_device_train_batch_size": 4},
    "tuner_batch_2_accumulate_4": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4},
    "tuner_batch_1_accumulate_8": {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 8},
    "tuner_batch_8_whole": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
    "tuner_pairs_1_accumulate_4": {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 4},
    "tuner_pairs_4_whole": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1},
    "tuner_system_malloc": {},
}
# Arms run with glibc's allocator as it sets itself up (TUNER_MALLOC=system), and arms that keep freed memory as a
# tuner run on a CPU does (speed.keep_freed_memory), so the allocator's part is measured on both sides.
SYSTEM_MALLOC_ARMS = {"tuner_system_malloc"}
KEPT_MEMORY_ARMS = {
    "trl_no_checkpointing_grouped_kept_memory",
    "trl_no_checkpointing_grouped_batch_2_kept_memory",
    "trl_no_checkpointing_1_pair_accumulate_4_kept_memory",
}
# Hand-configured TRL: each arm is TRL's defaults plus these config keys.
TRL_ARMS = {
    "sft": {
        "trl_defaults": {},
        "trl_no_checkpointing_grouped": {"gradient_checkpointing": False, "train_sampling_strategy": "group_by_length"},
        "trl_no_checkpointing_packed": {"gradient_checkpointing": False, "packing": True},
        "trl_no_checkpointing_grouped_kept_memory": {
            "gradient_checkpointing": False,
            "train_sampling_strategy": "group_by_length",
        },
        "trl_no_checkpointing_grouped_batch_2": {
            "gradient_checkpointing": False,
            "train_sampling_strategy": "group_by_length",
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 4,
        },
        "trl_no_checkpointing_grouped_batch_2_kept_memory": {
            "gradient_checkpointing": False,
            "train_sampling_strategy": "group_by_length",
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 4,
        },
    },
    # Without checkpointing, TRL's default 8 pairs of up to 1,024 tokens per step run out of 24 GiB: 4 pairs fit.
    "dpo": {
        "trl_defaults": {},
        "trl_no_checkpointing_4_pairs": {"gradient_checkpointing": False, "per_device_train_batch_size": 4},
        "trl_no_checkpointing_4_pairs_precomputed_reference": {
            "gradient_checkpointing": False,
            "per_device_train_batch_size": 4,
            "precompute_ref_log_probs": True,
        },
        "trl_no_checkpointing_1_pair_accumulate_4": {
            "gradient_checkpointing": False,
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 4,
        },
        "trl_no_checkpointing_1_pair_accumulate_4_kept_memory": {
            "gradient_checkpointing": False,
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 4,
        },
    },
}


def peak_memory_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trained_rows(method: str, dataset, max_length: int) -> list[int]:
    """The token length of every sequence one epoch feeds the model: SFT rows as stored (a packed row's sequences
    one by one); each side of a DPO pair as the collator cuts it."""
    if method == "sft":
        if "seq_lengths" in dataset.column_names:
            return [n for lengths in dataset["seq_lengths"] for n in lengths]
        return [len(ids) for ids in dataset["input_ids"]]
    return [
        min(len(p) + len(side), max_length)
        for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])
        for side in (c, r)
    ]


def useful_flops(method: str, model, rows: list[int], precomputed_reference: bool) -> float:
    """The model's own arithmetic in one epoch (benchmarks/ceiling.py): training FLOPs of every sequence, and for DPO
    the reference model's forward pass over them too (in the arm's time whether precomputed or not)."""
    from ceiling import forward_flops, training_flops

    return training_flops(model, rows) + (forward_flops(model, rows) if method == "dpo" else 0.0)


def recipe_for(method: str, data: str, rows: int, max_length: int, model: str | None):
    """The quickstart recipe on the benchmark's data, with tuner's own `train` defaults (not the quickstart's)."""
    from tuner import load_recipe

    overrides = [
        f"data.train.path={data}",
        "data.eval=null",
        "data.system_prompt=null",
        "eval.task=null",
        "eval.choices=null",
        f"data.max_train_samples={rows}",
        f"train={{num_train_epochs: 1, max_length: {max_length}, logging_steps: 1000}}",
        "data.format=" + ("alpaca" if method == "sft" else "preference"),
    ]
    if method == "dpo":
        overrides.append("dpo={beta: 0.1}")
    if model:
        overrides.append(f"model.name_or_path={model}")
    return load_recipe(RECIPE[method], overrides)


def tuner_trainer(recipe, loaded, train, folder: Path):
    """The trainer `tuner sft|dpo` builds for this recipe, on canonical training rows, and its speed settings, with
    the process set up as a run sets it before training (`training.train_and_save`)."""
    from tuner.speed import apply_process_settings
    from tuner.trainers import build_trainer

    trainer, speed = build_trainer(recipe, loaded, train, folder)
    apply_process_settings(speed)
    return trainer, speed


def arm(method: str, name: str, data: str, rows: int, max_length: int, model: str | None) -> dict:
    import torch

    from tuner.adapters import build_peft_config
    from tuner.data.splits import load_data
    from tuner.models import load_model

    recipe = recipe_for(method, data, rows, max_length, model)
    if name in SYSTEM_MALLOC_ARMS:
        os.environ["TUNER_MALLOC"] = "system"
    if name in KEPT_MEMORY_ARMS:
        from tuner.speed import keep_freed_memory

        keep_freed_memory()
    if name in TUNER_ARMS:
        recipe = recipe.model_copy(update={"train": {**recipe.train, **TUNER_ARMS[name]}})
    train = load_data(recipe.data, seed=recipe.seed, source=recipe.source).train
    loaded = load_model(recipe.model, recipe.source)
    with tempfile.TemporaryDirectory() as scratch:
        # The clock starts before the trainer is built: building tokenizes the rows and, with
        # `precompute_ref_log_probs`, runs the whole reference pass, which is work the run does.
        start = time.perf_counter()
        speed = None
        if name in TUNER_ARMS:
            trainer, speed = tuner_trainer(recipe, loaded, train, Path(scratch))
        else:
            from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

            config, trainer_class = (SFTConfig, SFTTrainer) if method == "sft" else (DPOConfig, DPOTrainer)
            args = config(
                output_dir=scratch,
                num_train_epochs=1,
                max_length=max_length,
                report_to="none",
                save_strategy="no",
                logging_steps=1000,
                use_cpu=not torch.cuda.is_available(),
                **TRL_ARMS[method][name],
            )
            trainer = trainer_class(
                model=loaded.model,
                args=args,
                train_dataset=train,
                processing_class=loaded.tokenizer,
                peft_config=build_peft_config(recipe.adapter),
            )
        built = time.perf_counter() - start
        trainer.train()
        wall = time.perf_counter() - start
        lengths = trained_rows(method, trainer.train_dataset, max_length)
        tokens = sum(lengths)
        flops = useful_flops(
            method, trainer.model, lengths, bool(getattr(trainer.args, "precompute_ref_log_probs", False))
        )
    return {
        "arm": name,
        "rows": rows,
        "steps": trainer.state.global_step,
        "tokens": tokens,
        "useful_gflops_per_second": round(flops / wall / 1e9, 1),
        "build_seconds": round(built, 1),
        "wall_seconds": round(wall, 1),
        "tokens_per_second": round(tokens / wall, 1),
        "peak_memory_mb": round(peak_memory_mb()),
        "bf16": trainer.args.bf16,
        "gradient_checkpointing": trainer.args.gradient_checkpointing,
        "batches": speed.batches
        if speed
        else (
            "packed, padding-free"
            if getattr(trainer.args, "packing", False)
            else trainer.args.train_sampling_strategy + " order"
        ),
    }


def measured_ceilings(method: str, data: str, rows: int, max_length: int, model: str | None) -> dict[str, float]:
    """The machine's dense matmul ceiling at the base model's shapes, bf16 and fp32, in this invocation (before the
    arms, each in its own process, so nothing else runs meanwhile)."""
    from ceiling import matmul_ceiling

    from tuner.models import load_config_and_tokenizer

    recipe = recipe_for(method, data, rows, max_length, model)
    config, _ = load_config_and_tokenizer(recipe.model, recipe.source)
    return {dtype: matmul_ceiling(config, 2048, dtype)["ceiling"] for dtype in ("bf16", "fp32")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["sft", "dpo"], default="sft")
    parser.add_argument("--rows", type=int, default=96, help="training rows (pairs for dpo), one epoch")
    parser.add_argument("--data", help="a file of the method's rows (default: the LLaMA-Factory demo in ../shared)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--model", help="base model (default: the quickstart's offline SmolLM2)")
    parser.add_argument("--arms", help="comma-separated arms (default: tuner and every TRL arm)")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    data = args.data or str(DATA[args.method])
    if args.arm:
        print("RESULT " + json.dumps(arm(args.method, args.arm, data, args.rows, args.max_length, args.model)))
        return
    names = args.arms.split(",") if args.arms else ["tuner", *TRL_ARMS[args.method]]
    ceilings = measured_ceilings(args.method, data, args.rows, args.max_length, args.model)
    print(
        json.dumps({"matmul_ceiling_gflops_per_second": {k: round(v / 1e9, 1) for k, v in ceilings.items()}}),
        flush=True,
    )
    results = []
    for name in names:
        command = [
            sys.executable,
            __file__,
            "--method",
            args.method,
            "--arm",
            name,
            "--rows",
            str(args.rows),
            "--data",
            data,
            "--max-length",
            str(args.max_length),
        ] + (["--model", args.model] if args.model else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"arm {name} failed:\n{done.stderr[-3000:]}")
        result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
        ceiling = ceilings["bf16" if result["bf16"] else "fp32"]
        results.append({**result, "ceiling_fraction": round(result["useful_gflops_per_second"] * 1e9 / ceiling, 3)})
        print(json.dumps(results[-1]), flush=True)
    by_name = {result["arm"]: result for result in results}
    trl_arms = [result for result in results if result["arm"] not in TUNER_ARMS]
    summary = {"method": args.method, "data": data, "rows": args.rows, "max_length": args.max_length}
    if "tuner" in by_name and trl_arms:
        best = max(trl_arms, key=lambda result: result["tokens_per_second"])
        tuner = by_name["tuner"]
        summary.update(
            best_trl_arm=best["arm"],
            tokens_per_second_vs_trl_best=round(tuner["tokens_per_second"] / best["tokens_per_second"], 2),
            peak_memory_vs_trl_best=round(tuner["peak_memory_mb"] / best["peak_memory_mb"], 2),
        )
        if "trl_defaults" in by_name:
            defaults = by_name["trl_defaults"]
            summary.update(
                tokens_per_second_vs_trl_defaults=round(tuner["tokens_per_second"] / defaults["tokens_per_second"], 2),
                peak_memory_vs_trl_defaults=round(tuner["peak_memory_mb"] / defaults["peak_memory_mb"], 2),
            )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
