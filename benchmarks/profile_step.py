"""Where a training step's time goes: tuner's SFT trainer on the throughput benchmark's data, a few steps under
torch.profiler, its operators' own time grouped into matmul, attention, loss (the LM head's softmax and
cross-entropy), optimizer, elementwise and the rest, as shares of the profiled time.

    python benchmarks/profile_step.py --rows 24 --steps 3        # the first rows of alpaca_en_demo.json

Operators are grouped by name (aten::mm/addmm/bmm/linear backward are matmul; scaled_dot_product and softmax of
attention; log_softmax and nll of the loss; the AdamW kernels; ...). Profiling adds overhead of its own, so the
shares matter, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from throughput import DATA, recipe_for, tuner_trainer

GROUPS = [
    ("attention", ("scaled_dot_product", "_efficient_attention", "_flash_attention", "attention")),
    (
        "loss (LM head log-softmax, chunked)",
        ("log_softmax", "nll_loss", "cross_entropy", "_softmax_backward", "chunkedlogprob", "logsumexp"),
    ),
    ("optimizer", ("adam", "_foreach", "lerp", "addcdiv", "sqrt")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")),
    (
        "elementwise and copies",
        (
            "aten::mul",
            "aten::add",
            "aten::silu",
            "aten::copy_",
            "aten::to",
            "aten::cat",
            "aten::pow",
            "aten::mean",
            "aten::rsqrt",
            "aten::neg",
            "aten::sum",
            "aten::div",
            "aten::sub",
            "aten::embedding",
            "aten::index",
            "aten::fill_",
            "aten::zero_",
            "aten::where",
            "aten::clone",
            "aten::contiguous",
            "aten::_to_copy",
            "aten::sigmoid",
            "aten::cos",
            "aten::sin",
            "aten::exp",
        ),
    ),
]


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, needles in GROUPS:
        if any(needle.lower() in lowered for needle in needles):
            return group
    return "other (data, autograd bookkeeping, Python)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from tuner.data.splits import load_data
    from tuner.models import load_model

    recipe = recipe_for("sft", str(DATA["sft"]), args.rows, args.max_length, None)
    recipe = recipe.model_copy(update={"train": {**recipe.train, "max_steps": args.steps}})
    train = load_data(recipe.data, seed=recipe.seed, source=recipe.source).train
    loaded = load_model(recipe.model, recipe.source)
    with tempfile.TemporaryDirectory() as scratch:
        trainer, speed = tuner_trainer(recipe, loaded, train, Path(scratch))
        with profile(
            activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        ) as prof:
            trainer.train()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        totals[group_of(event.key)] = totals.get(group_of(event.key), 0.0) + event.self_cpu_time_total
    whole = sum(totals.values())
    shares = {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    print(f"{args.steps} steps on {args.rows} rows ({speed.batches}), {whole / 1e6:.1f} s of operators' own time")
    print("| where | share |\n| --- | ---: |")
    for group, share in shares.items():
        print(f"| {group} | {100 * share:.1f}% |")
    print("top operators: " + "; ".join(f"{e.key} {100 * e.self_cpu_time_total / whole:.1f}%" for e in top))
    print("PROFILE " + json.dumps({"steps": args.steps, "rows": args.rows, "shares": shares}))


if __name__ == "__main__":
    main()
