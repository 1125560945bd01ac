"""Preference tuning (DPO) of a LoRA/QLoRA adapter with TRL's DPOTrainer.

`run(recipe)` reads top to bottom: seed, data, model (with the SFT adapter when continuing), trainer, train, save,
evaluate preferences (and the recipe's task), write the run folder.

The reference model is never a second copy of the base weights: with a new adapter it is the base model with the
adapter switched off; when continuing from an SFT run, TRL keeps a frozen copy of the SFT adapter (a few MB) as the
reference's adapter on the same base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..accounting import phase
from ..adapters import build_peft_config, parameter_counts
from ..batching import dpo_batching
from ..data import load_data, scoring_rows
from ..distributed import is_main_process
from ..errors import TunerError
from ..evaluate import check_rows, evaluate
from ..models import check_chat_template, load_model
from ..runs import RunResult, build_manifest, finish_run, record_evaluation
from ..training import DEFAULTS as COMMON_DEFAULTS
from ..training import (checkpoint_if_memory_needs_it, prepare_base, recorded_args, report_long_rows, resume_point,
                        run_folder, speed_settings, train_and_save, train_metrics, training_args)

# As for SFT, plus DPO's usual smaller learning rate and batch (each row is two sequences, and a reference pass).
DEFAULTS: dict[str, Any] = {**COMMON_DEFAULTS, "learning_rate": 5.0e-5, "per_device_train_batch_size": 4}
TRAINING_LOGS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


def require_pairs(splits, source: str) -> None:
    if splits.format != "preference":
        raise TunerError(f"{source}: method dpo needs preference pairs, but data.train holds {splits.format} rows "
                         f"(columns found: {splits.report['train_columns']}). Give rows with `chosen` and `rejected` "
                         f"(plus `prompt`, or `conversations` as LLaMA-Factory writes them, or full transcripts).")


def policy_model(recipe, loaded, gradient_checkpointing: bool):
    """The model to train and the peft config for a new adapter (None when continuing from an SFT adapter)."""
    model = prepare_base(loaded.model, recipe.model.quantize, gradient_checkpointing)
    if recipe.model.adapter is None:
        return model, build_peft_config(recipe.adapter)
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(Path(recipe.model.adapter) / "adapter"), is_trainable=True), None


def build_trainer(recipe, loaded, train_rows, run_dir: Path):
    """DPOTrainer over the policy; with no reference model given, TRL uses the adapter-free (or SFT) policy."""
    from trl import DPOConfig, DPOTrainer

    settings = recipe.dpo.model_dump(exclude_none=True)
    if isinstance(settings["loss_type"], str):
        settings["loss_type"] = [settings["loss_type"]]
    args = training_args(recipe, loaded.dtype, run_dir, DPOConfig, DEFAULTS, settings)
    checkpointing_reason = checkpoint_if_memory_needs_it(args, recipe, loaded, train_rows)
    model, peft_config = policy_model(recipe, loaded, args.gradient_checkpointing)
    trainer = DPOTrainer(model=model, args=args, train_dataset=train_rows, processing_class=loaded.tokenizer,
                         peft_config=peft_config)
    trainer.checkpointing_reason = checkpointing_reason
    trainer.batching = dpo_batching(trainer, recipe.train)
    return trainer


def _logged(history: list[dict[str, Any]], key: str, which: int) -> float | None:
    values = [entry[key] for entry in history if key in entry]
    return values[which] if values else None


def run(recipe) -> RunResult:
    """Train a preference adapter as the recipe says and write the run folder; returns its path and metrics."""
    from transformers import set_seed

    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        require_pairs(splits, recipe.source)
        eval_rows = scoring_rows(splits.eval)
        if recipe.eval.task not in (None, "preference"):
            check_rows(eval_rows, recipe.eval, recipe.data.label_names)
    checkpoint = resume_point(recipe, splits.report)
    loaded = load_model(recipe.model, recipe.source)
    check_chat_template(loaded.tokenizer, recipe)
    run_dir = run_folder(recipe, checkpoint)

    trainer = build_trainer(recipe, loaded, splits.train, run_dir)
    report_long_rows(splits.train, loaded.tokenizer, trainer.args.max_length, splits.report)
    counts = parameter_counts(trainer.model)
    output = train_and_save(trainer, loaded.tokenizer, run_dir, phases, recipe, splits.report, checkpoint)
    if not is_main_process():
        return RunResult(run_dir=run_dir, metrics={}, manifest={})  # rank 0 evaluates and writes the run folder

    history = trainer.state.log_history
    metrics = {**train_metrics("sft+dpo" if recipe.model.adapter else "dpo", output, phases, counts),
               **{f"first_{key.replace('/', '_')}": _logged(history, key, 0) for key in TRAINING_LOGS},
               **{f"last_{key.replace('/', '_')}": _logged(history, key, -1) for key in TRAINING_LOGS}}
    # Held-out pairs are always scored as preferences; the recipe's own task, when it names another, is the main score.
    preference = evaluate(trainer.model, loaded.tokenizer, eval_rows,
                          recipe.eval.model_copy(update={"task": "preference"}), recipe.data.label_names, loaded.dtype)
    if recipe.eval.task in (None, "preference"):
        record_evaluation(run_dir, preference, metrics, phases)
    else:
        record_evaluation(run_dir, preference, metrics, phases, name="preference")
        task = evaluate(trainer.model, loaded.tokenizer, eval_rows, recipe.eval, recipe.data.label_names,
                        loaded.dtype)
        record_evaluation(run_dir, task, metrics, phases)
    manifest = build_manifest(recipe, splits.report, loaded.info,
                              extra={"adapter": recipe.adapter.model_dump(), "dpo": recipe.dpo.model_dump(),
                                     "continued_from": recipe.model.adapter,
                                     "trl_args": recorded_args(trainer.args, recipe, DEFAULTS),
                                     "speed": speed_settings(trainer)})
    return finish_run(run_dir, metrics, manifest, history)
