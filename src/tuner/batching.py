"""How training rows become batches: packed where the attention kernel keeps packed sequences apart for free,
length-grouped elsewhere.

Measured on CPU (BENCHMARKS.md): TRL's best-fit-decreasing packing flattens a batch into one padding-free sequence,
which the varlen flash-attention kernels split at the sequence boundaries; with SDPA or eager attention (every CPU,
GPUs without flash-attn) transformers instead masks the flattened sequence block-diagonally and still computes the
whole (batch x max_length)^2 score matrix. There, batches of rows of similar length waste almost nothing on padding
and keep attention short. Whatever is chosen is recorded in the manifest; `train.packing` and
`train.train_sampling_strategy` in a recipe override it.
"""

from __future__ import annotations

from typing import Any

FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")


def uses_flash_attention(model) -> bool:
    """Whether the model attends with a varlen flash-attention kernel (which takes flattened batches as they are)."""
    implementation = str(getattr(model.config, "_attn_implementation", None) or "")
    return implementation in FLASH_ATTENTION or "flash-attn" in implementation


def sft_batching(args, model, recipe_train: dict[str, Any]) -> None:
    """Set packing or length grouping on an SFTConfig before the trainer is built (it packs the data then)."""
    if "packing" not in recipe_train:
        args.packing = uses_flash_attention(model)
    if not args.packing and "train_sampling_strategy" not in recipe_train:
        args.train_sampling_strategy = "group_by_length"


def packed_rows_collator(pad_token_id: int, pad_to_multiple_of: int | None = None):
    """A collator for BFD-packed rows that keeps the rows: padded to the batch's longest, position ids restarting at
    each packed sequence, labels -100 on padding, no attention mask. transformers reads the sequence boundaries from
    the position ids and masks each row block-diagonally, so attention costs max_length^2 per row, not per batch."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class PackedRowsCollator(DataCollatorForLanguageModeling):
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch = super().torch_call(examples)
            # TRL pads position ids with 0, which makes every padding token a sequence of its own.
            del batch["attention_mask"]
            return batch

    return PackedRowsCollator(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True,
                              pad_to_multiple_of=pad_to_multiple_of)


def finish_sft_batching(trainer) -> str:
    """After the SFTTrainer is built: packed rows for SDPA/eager attention; returns the layout, for the manifest."""
    if not trainer.args.packing:
        grouped = trainer.args.train_sampling_strategy == "group_by_length"
        return "length-grouped padded rows" if grouped else "padded rows"
    if uses_flash_attention(trainer.model):
        return "packed, padding-free (flash-attention varlen)"
    trainer.data_collator = packed_rows_collator(trainer.data_collator.pad_token_id, trainer.args.pad_to_multiple_of)
    return "packed rows (block-diagonal causal mask per row)"


def dpo_batching(trainer, recipe_train: dict[str, Any]) -> str:
    """Length-grouped DPO batches unless the recipe picks a sampler: pairs of similar length are padded together.

    TRL's preference rows have no `input_ids` for transformers' LengthGroupedSampler to measure, so each row gets a
    `length` column (prompt plus the longer answer) that the trainer keeps."""
    if "train_sampling_strategy" in recipe_train:
        return f"padded pairs ({trainer.args.train_sampling_strategy} order)"
    dataset = trainer.train_dataset
    if not hasattr(dataset, "map"):
        return "padded pairs"
    trainer.train_dataset = dataset.map(
        lambda row: {"length": len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))})
    trainer._set_signature_columns_if_needed()
    trainer._signature_columns = [*trainer._signature_columns, "length"]
    trainer.args.train_sampling_strategy = "group_by_length"
    trainer.args.length_column_name = "length"
    return "length-grouped padded pairs"
