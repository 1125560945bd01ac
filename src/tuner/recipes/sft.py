"""Supervised fine-tuning of a LoRA/QLoRA adapter with TRL's SFTTrainer.

`run(recipe)` reads top to bottom: seed, data, model, adapter, trainer, train, save, evaluate, write the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..accounting import phase
from ..adapters import build_peft_config, parameter_counts
from ..data import last_turn_as_completion, load_data, scoring_rows
from ..evaluate import check_rows, evaluate
from ..models import device_kind, load_model
from ..runs import RunResult, build_manifest, new_run_dir, record_evaluation, write_json, write_recipe

# tuner's defaults under the recipe's `train:` keys. They differ from TRL's where TRL's suit full fine-tuning on a
# GPU rather than an adapter on any device: a LoRA learning rate, no gradient checkpointing unless asked (it costs
# about 20% of step time), tokens counted, no tracker, one adapter saved at the end.
DEFAULTS: dict[str, Any] = {
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


def training_args(recipe, dtype: str, run_dir: Path, config_class=None, defaults: dict[str, Any] = DEFAULTS,
                  method_settings: dict[str, Any] | None = None):
    """The TRL config for a recipe: tuner's defaults, the recipe's `train:` keys and the method's own block (such as
    `dpo:`), then precision and paths, which tuner sets."""
    from ..config import trl_config_class

    config_class = config_class or trl_config_class(recipe.method)
    values = {**defaults, **recipe.train, **(method_settings or {})}
    # The precision follows the hardware (model.dtype), never TRL's bf16 default blindly (see models.resolve_dtype).
    values.update(bf16=dtype == "bf16", fp16=dtype == "fp16", output_dir=str(run_dir / "checkpoints"),
                  seed=recipe.seed, use_cpu=device_kind() == "cpu")
    return config_class(**values)


def _chat_template_marks_assistant(tokenizer) -> bool:
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if tokenizer.chat_template and has_generation_markers(tokenizer.chat_template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except (ValueError, TypeError):
        return False


def sft_rows(dataset, tokenizer):
    """Rows ready for SFTTrainer with loss on the answer only.

    Prompt/completion rows train on the completion. Chats keep every assistant turn as a target when the chat
    template can mark assistant turns; otherwise the last assistant turn becomes the completion.
    """
    if "messages" not in dataset.column_names or _chat_template_marks_assistant(tokenizer):
        return dataset
    return dataset.map(last_turn_as_completion, remove_columns=["messages"])


def build_trainer(recipe, loaded, train_rows, run_dir: Path):
    """SFTTrainer over the base model with a fresh adapter from the recipe (QLoRA: k-bit preparation first)."""
    from trl import SFTTrainer

    args = training_args(recipe, loaded.dtype, run_dir)
    if "messages" in train_rows.column_names:
        args.assistant_only_loss = True
    model = loaded.model
    if recipe.model.quantize:
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    return SFTTrainer(model=model, args=args, train_dataset=train_rows, processing_class=loaded.tokenizer,
                      peft_config=build_peft_config(recipe.adapter))


def save_adapter(model, tokenizer, adapter_dir: Path) -> None:
    """Adapter weights as safetensors, with the tokenizer and chat template beside them.

    Not `trainer.save_model`: it also pickles the training arguments (training_args.bin), and a run folder holds
    safetensors and text only.
    """
    # Only the trained adapter: DPO from an SFT run also holds a frozen "ref" copy, which is not the result.
    model.save_pretrained(str(adapter_dir), safe_serialization=True, selected_adapters=["default"])
    tokenizer.save_pretrained(str(adapter_dir))


def remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def run(recipe) -> RunResult:
    """Train an adapter as the recipe says and write the run folder; returns its path and metrics."""
    from transformers import set_seed

    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        if recipe.eval.task:
            check_rows(scoring_rows(splits.eval), recipe.eval, recipe.data.label_names)
    loaded = load_model(recipe.model, recipe.source)
    train_rows = sft_rows(splits.train, loaded.tokenizer)
    run_dir = new_run_dir(recipe.output_dir)
    write_recipe(run_dir, recipe)

    trainer = build_trainer(recipe, loaded, train_rows, run_dir)
    args = trainer.args
    counts = parameter_counts(trainer.model)

    with phase("train", phases) as record:
        output = trainer.train()
        record["tokens"] = int(trainer.state.num_input_tokens_seen)
        record["steps"] = int(trainer.state.global_step)

    save_adapter(trainer.model, loaded.tokenizer, run_dir / "adapter")
    remove_if_empty(run_dir / "checkpoints")

    history = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = {
        "method": "sft",
        "train_loss": output.training_loss,
        "first_logged_loss": history[0] if history else None,
        "last_logged_loss": history[-1] if history else None,
        "train_tokens": phases["train"]["tokens"],
        "train_tokens_per_second": phases["train"].get("tokens_per_second"),
        "train_steps": phases["train"]["steps"],
        **counts,
        "phases": phases,
    }
    if recipe.eval.task:
        result = evaluate(trainer.model, loaded.tokenizer, scoring_rows(splits.eval), recipe.eval,
                          recipe.data.label_names, loaded.dtype)
        record_evaluation(run_dir, result, metrics, phases)
    manifest = build_manifest(recipe, splits.report, loaded.info,
                              extra={"adapter": recipe.adapter.model_dump(), "precision": loaded.dtype,
                                     "eval_settings": recipe.eval.model_dump(),
                                     "trl_args": {k: getattr(args, k) for k in sorted({**DEFAULTS, **recipe.train})}})
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "manifest.json", manifest)
    write_json(run_dir / "log_history.json", trainer.state.log_history)
    return RunResult(run_dir=run_dir, metrics=metrics, manifest=manifest)
