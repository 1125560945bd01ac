"""The methods and tuner's defaults under a recipe's `train:` keys (TRL config fields), per training method.

A leaf of the package, as `schema.py` (which reads it): no tuner imports, no torch.
"""

from __future__ import annotations

from typing import Any

METHODS = ("sft", "dpo", "kto", "reward", "grpo", "fewshot", "rag")
# Methods that train an adapter (and can resume, continue an SFT adapter, take `train:` keys).
TRAINING_METHODS = ("sft", "dpo", "kto", "reward", "grpo")
# How tables and notes name a trained run's `method` (metrics.json): an SFT run continued is "sft+<method>".
METHOD_NAMES = {
    "sft": "SFT",
    "dpo": "DPO",
    "sft+dpo": "SFT+DPO",
    "kto": "KTO",
    "sft+kto": "SFT+KTO",
    "grpo": "GRPO",
    "sft+grpo": "SFT+GRPO",
    "rloo": "RLOO",
    "sft+rloo": "SFT+RLOO",
    "reward": "reward model",
}

# tuner's defaults under the recipe's `train:` keys (TRL config fields). They differ from TRL's where TRL's suit full
# fine-tuning on a GPU rather than an adapter on any device: a LoRA learning rate, no gradient checkpointing unless
# asked or memory needs it (it costs about 20% of step time), tokens counted, no tracker, one adapter saved at the
# end. DPO takes the usual smaller learning rate and batch (each row is two sequences, and a reference pass); KTO the
# same learning rate, with batches of 8 because its KL estimate pairs each prompt with another row's answer. A reward
# model trains a new score head beside the adapter, at LoRA's usual rate halved.
_COMMON_TRAIN_DEFAULTS: dict[str, Any] = {
    "learning_rate": 2.0e-4,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "max_length": 512,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    "logging_steps": 10,
    "gradient_checkpointing": False,
    "include_num_input_tokens_seen": "non_padding",
    "report_to": "none",
    "save_strategy": "no",
    "eval_strategy": "no",
}
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": _COMMON_TRAIN_DEFAULTS,
    "dpo": {**_COMMON_TRAIN_DEFAULTS, "learning_rate": 5.0e-5, "per_device_train_batch_size": 4},
    "kto": {**_COMMON_TRAIN_DEFAULTS, "learning_rate": 5.0e-5, "per_device_train_batch_size": 8},
    "reward": {**_COMMON_TRAIN_DEFAULTS, "learning_rate": 1.0e-4, "per_device_train_batch_size": 8},
    # A GRPO batch holds whole groups (2 prompts x 4 answers by default); its lengths are the `grpo:` block's.
    "grpo": {
        **{k: v for k, v in _COMMON_TRAIN_DEFAULTS.items() if k != "max_length"},
        "learning_rate": 1.0e-4,
        "per_device_train_batch_size": 8,
        "logging_steps": 5,
    },
}
# Keys set by tuner itself from other sections or the hardware; a recipe that set them would be silently overridden.
RESERVED_TRAIN_KEYS = {
    "output_dir": "the top-level `output_dir`",
    "seed": "the top-level `seed`",
    "bf16": "`model.dtype` (auto picks the precision from the hardware)",
    "fp16": "`model.dtype` (auto picks the precision from the hardware)",
}
