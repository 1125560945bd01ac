"""Build the peft config from a recipe's `adapter` section (pure: needs no model), and count parameters."""

from __future__ import annotations

from typing import Any


def build_peft_config(adapter_config):
    """Map an AdapterConfig to a `peft.LoraConfig` (LoRA, DoRA or rsLoRA) for a causal language model."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=adapter_config.r,
        lora_alpha=adapter_config.alpha,
        lora_dropout=adapter_config.dropout,
        target_modules=adapter_config.target_modules,
        modules_to_save=adapter_config.modules_to_save,
        use_dora=adapter_config.type == "dora",
        use_rslora=adapter_config.type == "rslora",
        bias="none",
    )


def parameter_counts(model) -> dict[str, Any]:
    """Trainable and total parameters of a (peft-wrapped) model, and the trainable share in percent."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_parameters": trainable, "total_parameters": total,
            "trainable_percent": round(100.0 * trainable / total, 4) if total else 0.0}
