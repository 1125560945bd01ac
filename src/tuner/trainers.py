"""The TRL trainers tuner builds. Each run's TRL config is built here, in one place, from tuner's `train:` defaults
(defaults.py), the recipe's `train:` keys, the method's own block (`dpo:`, `kto:`, `grpo:`) and the `speed.Speed`
decisions; the trainer is built over it. Nothing changes the config or the trainer once they are built.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from trl import (
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    KTOConfig,
    KTOTrainer,
    RewardConfig,
    RewardTrainer,
    RLOOConfig,
    RLOOTrainer,
    SFTConfig,
    SFTTrainer,
)
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from .adapters import build_peft_config, with_run_adapter
from .data.splits import feedback_counts
from .models import prepare_base
from .progress import Lines, bars_shown
from .recipe_file import trl_method
from .rendering import sft_rows, with_lengths
from .speed import decide, loss_types

CONFIG_CLASSES = {
    "sft": SFTConfig,
    "dpo": DPOConfig,
    "kto": KTOConfig,
    "reward": RewardConfig,
    "grpo": GRPOConfig,
    "rloo": RLOOConfig,
}
POLICY_TRAINERS = {"grpo": GRPOTrainer, "rloo": RLOOTrainer}


def trl_config(recipe, speed, run_dir: Path, method_settings: dict[str, Any] | None = None):
    """The TRL config of a run: tuner's defaults, the recipe's `train:` keys, the method's settings, then what
    tuner decides itself (precision, batching, checkpointing, kernels from `speed`; paths and seed)."""
    config_class = CONFIG_CLASSES[trl_method(recipe)]
    # Training's bar is drawn where someone watches it; elsewhere (a log file) `TrainingLines` prints its tenths.
    values = {
        "disable_tqdm": not bars_shown(),
        **recipe.train_settings(),
        **(method_settings or {}),
        **speed.trl_values(),
        "output_dir": str(run_dir / "checkpoints"),
        "seed": recipe.seed,
    }
    # transformers 5 reads `activation_checkpointing`; `gradient_checkpointing` is its older name, copied over only
    # when the new one is unset, so the decision is given under the name the config reads.
    if "activation_checkpointing" in {field.name for field in dataclasses.fields(config_class)}:
        values["activation_checkpointing"] = speed.gradient_checkpointing
    return config_class(**values)


class TrainingBar(ProgressCallback):
    """transformers' training bar with the loss logs above it, less the end-of-training summary it prints as a dict
    of strings (`{'train_runtime': '91.23', ...}`): tuner prints the run's summary itself."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "train_loss" not in logs:  # the summary (train_loss, train_runtime...), not a step's loss
            super().on_log(args, state, control, logs=logs, **kwargs)


class TrainingLines(TrainerCallback):
    """Training's progress where no bar is drawn (a log file, a cluster job): `progress.Lines` over the steps of
    this invocation (a resumed run counts from its checkpoint), with the last logged loss; nothing under --quiet."""

    def __init__(self):
        self.lines, self.first, self.loss = None, 0, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.first = state.global_step
        self.lines = Lines(state.max_steps - self.first, "training", "steps")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = logs["loss"]

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.lines is not None:
            self.lines.update(
                state.global_step - self.first, f", loss {self.loss:.4g}" if isinstance(self.loss, float) else ""
            )


def packed_rows_collator(pad_token_id: int, pad_to_multiple_of: int | None = None):
    """A collator for BFD-packed rows that keeps the rows: padded to the batch's longest, position ids restarting at
    each packed sequence, labels -100 on padding, no attention mask. transformers reads the sequence boundaries from
    the position ids and masks each row block-diagonally, so attention costs max_length^2 per row, not per batch."""
    return PackedRowsCollator(
        pad_token_id=pad_token_id, padding_free=False, return_position_ids=True, pad_to_multiple_of=pad_to_multiple_of
    )


class PackedRowsCollator(DataCollatorForLanguageModeling):
    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        # TRL pads position ids with 0, which makes every padding token a sequence of its own.
        del batch["attention_mask"]
        return batch


class PackedRowsSFTTrainer(SFTTrainer):
    """SFTTrainer over BFD-packed rows batched as rows (`packed_rows_collator`), for attention kernels without
    varlen support (SDPA, eager). TRL refuses a custom collator alongside BFD packing, so this trainer puts its
    own in place while it is being built."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_collator = packed_rows_collator(self.processing_class.pad_token_id, self.args.pad_to_multiple_of)


def sft_trainer(recipe, speed, loaded, rows, run_dir: Path):
    """SFTTrainer over the base model with a fresh adapter from the recipe (QLoRA: k-bit preparation first)."""
    # Chats train on every assistant turn (`rendering.sft_rows` kept them only where the template can mark them).
    args = trl_config(recipe, speed, run_dir, {"assistant_only_loss": True} if "messages" in rows.column_names else {})
    model = prepare_base(loaded.model, recipe.model.quantize, speed.gradient_checkpointing)
    trainer_class = PackedRowsSFTTrainer if speed.packed_rows else SFTTrainer
    return trainer_class(
        model=model,
        args=args,
        train_dataset=rows,
        processing_class=loaded.tokenizer,
        peft_config=build_peft_config(recipe.adapter),
    )


def policy(recipe, speed, loaded):
    """The model a feedback trainer trains and the peft config it is given: the base with a new adapter from the
    recipe (peft config for TRL to apply), or with the adapter of `model.adapter`'s SFT run, trainable (no config)."""
    model = prepare_base(loaded.model, recipe.model.quantize, speed.gradient_checkpointing)
    if recipe.model.adapter is None:
        return model, build_peft_config(recipe.adapter)
    return with_run_adapter(model, recipe.model.adapter, trainable=True), None


def dpo_trainer(recipe, speed, loaded, rows, run_dir: Path):
    """DPOTrainer over the policy: a new adapter from the recipe, or the adapter of `model.adapter`'s SFT run
    trained on. With no reference model given, TRL scores the reference with the adapter switched off (or, from
    an SFT run, with a frozen copy of the SFT adapter): never a second copy of the base weights."""
    settings = {**recipe.dpo.model_dump(exclude_none=True), "loss_type": loss_types(recipe)}
    args = trl_config(recipe, speed, run_dir, settings)
    model, peft_config = policy(recipe, speed, loaded)
    rows = with_lengths(rows, loaded.tokenizer) if speed.length_column else rows
    return DPOTrainer(
        model=model, args=args, train_dataset=rows, processing_class=loaded.tokenizer, peft_config=peft_config
    )


def feedback_weights(settings, counts: dict[str, int]) -> dict[str, float]:
    """KTO's desirable and undesirable weights: the recipe's, or (neither given) the rarer side weighted up so both
    sides weigh the same, as KTO's authors advise (desirable x count over undesirable x count within 1 to 4/3)."""
    if settings.desirable_weight is not None or settings.undesirable_weight is not None:
        return {
            "desirable_weight": settings.desirable_weight or 1.0,
            "undesirable_weight": settings.undesirable_weight or 1.0,
        }
    up, down = counts["desirable"], counts["undesirable"]
    return {"desirable_weight": round(max(1.0, down / up), 4), "undesirable_weight": round(max(1.0, up / down), 4)}


def kto_trainer(recipe, speed, loaded, rows, run_dir: Path):
    """KTOTrainer over the policy, new adapter or an SFT run's, on feedback rows (`desirable` is TRL's `label`). The
    reference is the policy with the adapter off, or a frozen copy of the SFT adapter, as for DPO."""
    settings = {
        **recipe.kto.model_dump(exclude={"unpair"}, exclude_none=True),
        **feedback_weights(recipe.kto, feedback_counts(rows)),
    }
    args = trl_config(recipe, speed, run_dir, settings)
    model, peft_config = policy(recipe, speed, loaded)
    return KTOTrainer(
        model=model,
        args=args,
        train_dataset=rows.rename_column("desirable", "label"),
        processing_class=loaded.tokenizer,
        peft_config=peft_config,
    )


def reward_trainer(recipe, speed, loaded, rows, run_dir: Path):
    """RewardTrainer over the base model loaded with a score head (`models.load_model(head="reward")`): a new
    adapter and the head, trained so the chosen answer of each pair scores above the rejected one."""
    args = trl_config(recipe, speed, run_dir)
    model = prepare_base(loaded.model, recipe.model.quantize, speed.gradient_checkpointing)
    rows = with_lengths(rows, loaded.tokenizer) if speed.length_column else rows
    return RewardTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        processing_class=loaded.tokenizer,
        peft_config=build_peft_config(recipe.adapter, head="reward"),
    )


def grpo_trainer(recipe, speed, loaded, rows, run_dir: Path, reward_funcs: list):
    """GRPOTrainer (or RLOOTrainer, `grpo.algorithm: rloo`) over the policy (a new adapter, or an SFT run's trained
    on) with the recipe's rewards (built by `rewards.reward_functions`, their weights as TRL's `reward_weights`), on
    prompt rows (`gold`, `choices` beside each prompt for the rewards that need them)."""
    settings = {
        **recipe.grpo.model_dump(exclude={"rewards", "algorithm"}),
        "reward_weights": [spec.weight for spec in recipe.grpo.rewards],
    }
    args = trl_config(recipe, speed, run_dir, settings)
    model, peft_config = policy(recipe, speed, loaded)
    trainer_class = POLICY_TRAINERS[recipe.grpo.algorithm]
    return trainer_class(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=rows,
        processing_class=loaded.tokenizer,
        peft_config=peft_config,
    )


TRAINERS = {"sft": sft_trainer, "dpo": dpo_trainer, "kto": kto_trainer, "reward": reward_trainer, "grpo": grpo_trainer}


def build_trainer(recipe, loaded, rows, run_dir: Path, **parts):
    """The trainer `tuner sft|dpo|kto|reward|grpo` builds for a recipe on its canonical training rows, and the
    `speed.Speed` decided for it (SFT chats rendered by `rendering.sft_rows` first). `parts` are what a method's
    trainer takes beside (GRPO: `reward_funcs`, built by the recipe module)."""
    speed = decide(recipe, loaded, rows)
    train_rows = sft_rows(rows, loaded.tokenizer) if recipe.method == "sft" else rows
    trainer = TRAINERS[recipe.method](recipe, speed, loaded, train_rows, run_dir, **parts)
    # transformers' own progress callbacks print the run's summary as a dict of strings, and without a bar every log
    # as a dict too: tuner's summary and lines say the same once.
    if trainer.args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(TrainingLines())
    else:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(TrainingBar())
    return trainer, speed
