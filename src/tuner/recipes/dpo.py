"""Preference tuning (DPO) of a LoRA/QLoRA adapter with TRL's DPOTrainer.

`run(recipe)` reads top to bottom: seed, data, model, trainer (with its speed settings; with the SFT adapter when
continuing), train, save, evaluate preferences (and the recipe's task), write the run folder.

The reference model is never a second copy of the base weights: with a new adapter it is the base model with the
adapter switched off; when continuing from an SFT run, TRL keeps a frozen copy of the SFT adapter (a few MB) as the
reference's adapter on the same base.
"""

from __future__ import annotations

from typing import Any

from ..accounting import phase
from ..adapters import parameter_counts
from ..checkpoints import resume_point
from ..data.splits import load_data
from ..hardware import is_main_process
from ..models import check_chat_template, load_model
from ..rendering import report_long_rows
from ..runs import RunResult, build_manifest, finish_run, run_folder, scoring
from ..speed import decide_precision
from ..trainers import build_trainer
from ..training import (
    first_and_last,
    recorded_args,
    score_feedback_run,
    speed_record,
    train_and_save,
    train_metrics,
    trained_model,
)
from .preflight import check_data

TRAINING_LOGS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


def run(recipe) -> RunResult:
    """Train a preference adapter as the recipe says and write the run folder; returns its path and metrics."""
    from transformers import set_seed

    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        check_data(recipe, splits)
    checkpoint = resume_point(recipe, splits.report)
    loaded = load_model(recipe.model, recipe.source, decide_precision(recipe.model))
    check_chat_template(loaded.tokenizer, recipe)
    run_dir = run_folder(recipe, checkpoint)

    trainer, speed = build_trainer(recipe, loaded, splits.train, run_dir)
    report_long_rows(splits.train, loaded.tokenizer, trainer.args.max_length, splits.report)
    counts = parameter_counts(trainer.model)
    output = train_and_save(trainer, speed, loaded.tokenizer, run_dir, phases, recipe, splits.report, checkpoint)
    if not is_main_process():
        return RunResult(run_dir=run_dir, metrics={}, manifest={})  # rank 0 evaluates and writes the run folder

    model = trained_model(trainer, recipe, run_dir, loaded)
    history = trainer.state.log_history
    metrics = {
        **train_metrics("sft+dpo" if recipe.model.adapter else "dpo", output, phases, counts),
        **first_and_last(history, TRAINING_LOGS),
    }
    manifest = build_manifest(
        recipe,
        splits.report,
        loaded.info,
        extra={
            "adapter": recipe.adapter.model_dump(),
            "dpo": recipe.dpo.model_dump(),
            "continued_from": recipe.model.adapter,
            "trl_args": recorded_args(trainer.args, recipe),
            "speed": speed_record(speed, trainer.args),
        },
    )
    with scoring(run_dir, recipe, manifest, history):
        score_feedback_run(model, loaded.tokenizer, splits, recipe, loaded.dtype, run_dir, metrics, phases)
    return finish_run(run_dir, metrics, manifest, history)
