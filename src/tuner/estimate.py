"""What a training run will need, known before it runs (`tuner sft|dpo recipe.yaml --dry-run`).

The model is built on the meta device (shapes, no weights, no memory), the adapter is added to count what trains,
and peak memory is estimated part by part from the recipe's batch size and the longest batch the data makes.

Activations: for a Llama-style decoder layer with LoRA on its linear layers and a frozen base, autograd keeps per
token the residual stream at both RMSNorms (2 x h in the residual dtype) and, in the compute dtype, the two norm
outputs, the query before and after rotary embedding, the attention output (5 x h), keys before and after rotary
embedding and values (3 x kv), and in the MLP the gate and up outputs, the activation and the product (4 x i). With
gradient checkpointing only each layer's input is kept, plus one layer recomputed at a time. On a GPU, TRL's fused LM
head (SFT and DPO) scores answer tokens in Triton tiles and flash or memory-efficient attention keeps no score
matrix. Off a GPU both cost memory: the LM head's full-vocabulary logits for the batch (about three fp32 copies
kept for backward) and each layer's attention probabilities (length squared per head and sequence).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .adapters import build_peft_config, run_peft_config
from .hardware import MB, available_memory_mb, device_kind
from .rendering import longest_row_tokens, rendered_row, sampled_row

# Python, torch, peft and TRL's trainers imported, before any model: 516 MB resident on this project's CPU
# machine (BENCHMARKS.md). A GPU's peak is counted by torch's allocator and has no such share.
CPU_RUNTIME_MB = 450
OPTIMIZER_BYTES = {"adamw_bnb_8bit": 2, "paged_adamw_8bit": 2, "adamw_8bit": 2, "sgd": 0, "adafactor": 1}


@dataclass
class Estimate:
    """Parameters, peak memory by part (MB), the device's memory and whether the run fits, and two rendered rows."""

    trainable_parameters: int
    total_parameters: int
    memory_mb: dict[str, float]
    batch_tokens: int
    device: str
    available_mb: float | None
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def peak_mb(self) -> float:
        return sum(self.memory_mb.values())

    @property
    def fits(self) -> bool | None:
        return None if self.available_mb is None else self.peak_mb <= 0.9 * self.available_mb

    def to_dict(self) -> dict[str, Any]:
        return {
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            "memory_mb": {k: round(v, 1) for k, v in self.memory_mb.items()},
            "peak_mb": round(self.peak_mb),
            "batch_tokens": self.batch_tokens,
            "device": self.device,
            "available_mb": self.available_mb,
            "fits": self.fits,
            "rows": self.rows,
        }


def meta_model(config, recipe):
    """The base model with the recipe's adapter, on the meta device: real shapes, no storage."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=recipe.model.trust_remote_code)
    if recipe.model.adapter is not None:
        peft_config = run_peft_config(recipe.model.adapter)
    else:
        peft_config = build_peft_config(recipe.adapter)
    return get_peft_model(model, peft_config)


def activation_bytes_per_token(config, compute_bytes: int, residual_bytes: int, checkpointing: bool) -> float:
    """Bytes autograd keeps per token for the whole decoder stack (see the module docstring for the count)."""
    text = config.get_text_config()
    h, i, layers = text.hidden_size, text.intermediate_size, text.num_hidden_layers
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or h // heads
    kv = (getattr(text, "num_key_value_heads", None) or heads) * head_dim
    per_layer = 2 * h * residual_bytes + compute_bytes * (5 * h + 3 * kv + 4 * i)
    if checkpointing:
        return layers * h * residual_bytes + per_layer
    return layers * per_layer


def estimate(
    recipe,
    rows,
    config,
    tokenizer,
    precision,
    checkpointing: bool,
    rendered_rows: int = 2,
    micro_batch: int | None = None,
) -> Estimate:
    """Peak training memory of `recipe` on `rows` (canonical training rows) for a model `config` in `precision` (a
    `speed.Precision`) with gradient `checkpointing` on or off, with the first `rendered_rows` rows rendered as the
    trainer will see them; `micro_batch` rows at a time where the run splits its batch (`speed.micro_batches`)."""
    train = recipe.train_settings()
    device = device_kind()
    compute = precision.compute
    compute_bytes = 4 if compute == "fp32" else 2
    weight_bytes = 4 if precision.weights == "fp32" else 2

    model = meta_model(config, recipe)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    frozen = total - trainable
    if recipe.model.quantize:
        embedding = config.get_text_config().vocab_size * config.get_text_config().hidden_size
        per_param = 0.5 + 4 / 64 if recipe.model.quantize == "4bit" else 1 + 4 / 64  # NF4/int8 plus scales
        weights = embedding * weight_bytes + (frozen - embedding) * per_param
    else:
        weights = frozen * weight_bytes
    optimizer_bytes = OPTIMIZER_BYTES.get(str(train.get("optim", "adamw")), 8)

    batch = micro_batch or int(train["per_device_train_batch_size"])
    max_length = train.get("max_length")
    if recipe.method == "grpo":  # prompts alone: each answer is sampled, up to max_completion_length tokens
        generated = recipe.grpo.max_completion_length
        shown = [sampled_row(row, tokenizer, generated) for row in list(rows)[:2000]]
        longest = max((row["answers"][0]["prompt_tokens"] for row in shown), default=0) + generated
    else:
        shown = [rendered_row(row, tokenizer) for row in list(rows)[:rendered_rows]]
        longest = longest_row_tokens(rows, tokenizer, max_length)
    packing = bool(train.get("packing")) and recipe.method == "sft"
    # DPO and reward models run chosen and rejected side by side; KTO each answer and its KL answer (another row's).
    sequences = batch * (2 if recipe.method in ("dpo", "kto", "reward") else 1)
    batch_tokens = sequences * (max_length if packing and max_length else longest)
    residual_bytes = 4 if weight_bytes == 4 or compute == "fp32" else 2
    activations = batch_tokens * activation_bytes_per_token(config, compute_bytes, residual_bytes, checkpointing)
    memory = {
        "weights": weights / MB,
        "adapter": trainable * 4 / MB,
        "gradients": trainable * 4 / MB,
        "optimizer": trainable * optimizer_bytes / MB,
        "activations": activations / MB,
    }
    text = config.get_text_config()
    if device != "cuda":
        # Off CUDA, TRL's fused LM head has no Triton kernel and scores every position in chunks of 32,768 tokens:
        # a batch's full-vocabulary logits exist at once (compute dtype, plus about three fp32 copies for backward).
        memory["logits"] = min(batch_tokens, 32768) * text.vocab_size * (compute_bytes + 3 * 4) / MB
        # SDPA on a CPU has no memory-efficient kernel for masked batches: each layer keeps its attention
        # probabilities (sequences x heads x length^2, compute dtype plus fp32 softmax) for backward.
        length = batch_tokens // sequences
        kept_layers = 1 if checkpointing else text.num_hidden_layers
        memory["attention"] = sequences * text.num_attention_heads * length**2 * (compute_bytes + 4) * kept_layers / MB
    if device == "cpu":
        memory["runtime"] = CPU_RUNTIME_MB
    return Estimate(
        trainable_parameters=trainable,
        total_parameters=total,
        memory_mb=memory,
        batch_tokens=batch_tokens,
        device=device,
        available_mb=available_memory_mb(device),
        rows=shown[:rendered_rows],
    )


def describe(result: Estimate, recipe) -> str:
    """The dry run as text: parameters, memory by part, fit, and two rendered rows with their loss mask."""
    lines = [
        f"tuner dry run of {recipe.source} ({recipe.method}; nothing trained, no weights loaded)",
        f"  trainable parameters: {result.trainable_parameters:,} of {result.total_parameters:,} "
        f"({100 * result.trainable_parameters / max(result.total_parameters, 1):.2f}%)",
        f"  largest batch: {result.batch_tokens:,} tokens",
        "  estimated peak memory:",
    ]
    for part, mb in result.memory_mb.items():
        lines.append(f"    {part:<12}{mb:>10,.0f} MB")
    lines.append(f"    {'total':<12}{result.peak_mb:>10,.0f} MB")
    where = "GPU memory free" if result.device == "cuda" else "RAM available"
    if result.fits is None:
        lines.append(f"  fits: unknown ({where} could not be read)")
    elif result.fits:
        lines.append(f"  fits: yes ({result.available_mb:,.0f} MB {where} on {result.device})")
    else:
        lines.append(
            f"  fits: NO ({result.available_mb:,.0f} MB {where} on {result.device}). Lower "
            f"`train.per_device_train_batch_size` or `train.max_length`, set `train.gradient_checkpointing: "
            f"true`, or `model.quantize: 4bit`."
        )
    for number, row in enumerate(result.rows):
        for part in row["answers"]:
            lines.append(
                f"  row {number}: {part['prompt_tokens']} prompt tokens (no loss) + {part['answer_tokens']} "
                f"answer tokens (loss), the answer{'s' if part.get('marked') else ''} between [[ ]]:"
            )
            text = part.get("marked") or part["prompt"] + "[[" + part["answer"] + "]]"
            lines.extend("    | " + line for line in text.splitlines())
    return os.linesep.join(lines)
