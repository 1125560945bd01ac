"""How close `--dry-run`'s peak-memory estimate comes to the measured peak, for a few recipes.

Each case runs in its own child process: the dry-run estimate first (meta device, nothing allocated), then two
optimizer steps of the real run. Length-grouped batches put the longest batch first, so two steps reach the
run's peak. Peak is the resident set on a CPU and torch's allocator peak on a GPU.

    python benchmarks/memory_estimate.py
    python benchmarks/memory_estimate.py --cases sft_alpaca_b8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import DATA, peak_memory_mb, recipe_for, tuner_trainer  # noqa: E402

# name: (method, rows, max_length, extra train keys)
CASES = {
    "sft_alpaca_b8": ("sft", 64, 1024, {"per_device_train_batch_size": 8}),
    "sft_alpaca_b4_checkpointing": ("sft", 64, 512, {"per_device_train_batch_size": 4, "gradient_checkpointing": True}),
    "dpo_pairs_b2": ("dpo", 32, 1024, {"per_device_train_batch_size": 2}),
    "dpo_pairs_b4_len512": ("dpo", 32, 512, {"per_device_train_batch_size": 4}),
}


def case(name: str) -> dict:
    from tuner import dry_run, recipe_from_dict
    from tuner.data.splits import load_data
    from tuner.models import load_model

    method, rows, max_length, extra = CASES[name]
    document = recipe_for(method, str(DATA[method]), rows, max_length, None).to_dict()
    document["train"] = {**document["train"], **extra, "max_steps": 2}
    recipe = recipe_from_dict(document, source=name)
    predicted = dry_run(recipe)  # what `tuner sft|dpo --dry-run` prints
    train = load_data(recipe.data, seed=recipe.seed, source=recipe.source).train
    with tempfile.TemporaryDirectory() as scratch:
        tuner_trainer(recipe, load_model(recipe.model, recipe.source), train, Path(scratch))[0].train()
    measured = peak_memory_mb()
    return {
        "case": name,
        "estimated_mb": round(predicted.peak_mb),
        "measured_mb": round(measured),
        "error": round(predicted.peak_mb / measured - 1, 3),
        "batch_tokens": predicted.batch_tokens,
        "parts_mb": {k: round(v) for k, v in predicted.memory_mb.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", help="comma-separated (default: all): " + ", ".join(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print("RESULT " + json.dumps(case(args.case)))
        return
    for name in args.cases.split(",") if args.cases else CASES:
        done = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"case {name} failed:\n{done.stderr[-3000:]}")
        print(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:], flush=True)


if __name__ == "__main__":
    main()
