"""Supervised fine-tuning of a LoRA/QLoRA adapter with TRL's SFTTrainer.

`run(recipe)` reads top to bottom: seed, data, model, adapter, trainer, train, save, evaluate, write the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..accounting import phase
from ..adapters import build_peft_config, parameter_counts
from ..batching import finish_sft_batching, sft_batching
from ..data import last_turn_as_completion, load_data, scoring_rows
from ..distributed import is_main_process
from ..evaluate import check_rows, evaluate
from ..models import check_chat_template, load_model
from ..runs import RunResult, build_manifest, finish_run, record_evaluation
from ..training import (DEFAULTS, checkpoint_if_memory_needs_it, prepare_base, recorded_args, report_long_rows,
                        resume_point, run_folder, speed_settings, train_and_save, train_metrics, training_args)


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
    sft_batching(args, loaded.model, recipe.train)
    checkpointing_reason = checkpoint_if_memory_needs_it(args, recipe, loaded, train_rows)
    model = prepare_base(loaded.model, recipe.model.quantize, args.gradient_checkpointing)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, processing_class=loaded.tokenizer,
                         peft_config=build_peft_config(recipe.adapter))
    trainer.checkpointing_reason = checkpointing_reason
    trainer.batching = finish_sft_batching(trainer)
    return trainer


def run(recipe) -> RunResult:
    """Train an adapter as the recipe says and write the run folder; returns its path and metrics."""
    from transformers import set_seed

    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        eval_rows = scoring_rows(splits.eval)
        if recipe.eval.task:
            check_rows(eval_rows, recipe.eval, recipe.data.label_names)
    checkpoint = resume_point(recipe, splits.report)
    loaded = load_model(recipe.model, recipe.source)
    check_chat_template(loaded.tokenizer, recipe)
    train_rows = sft_rows(splits.train, loaded.tokenizer)
    run_dir = run_folder(recipe, checkpoint)

    trainer = build_trainer(recipe, loaded, train_rows, run_dir)
    report_long_rows(splits.train, loaded.tokenizer, trainer.args.max_length, splits.report)
    counts = parameter_counts(trainer.model)
    output = train_and_save(trainer, loaded.tokenizer, run_dir, phases, recipe, splits.report, checkpoint)
    if not is_main_process():
        return RunResult(run_dir=run_dir, metrics={}, manifest={})  # rank 0 evaluates and writes the run folder

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = {**train_metrics("sft", output, phases, counts),
               "first_logged_loss": losses[0] if losses else None, "last_logged_loss": losses[-1] if losses else None}
    if recipe.eval.task:
        result = evaluate(trainer.model, loaded.tokenizer, eval_rows, recipe.eval, recipe.data.label_names,
                          loaded.dtype)
        record_evaluation(run_dir, result, metrics, phases)
    manifest = build_manifest(recipe, splits.report, loaded.info,
                              extra={"adapter": recipe.adapter.model_dump(),
                                     "trl_args": recorded_args(trainer.args, recipe, DEFAULTS),
                                     "speed": speed_settings(trainer)})
    return finish_run(run_dir, metrics, manifest, trainer.state.log_history)
