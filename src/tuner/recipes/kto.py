"""Feedback tuning (KTO) of a LoRA/QLoRA adapter with TRL's KTOTrainer, on answers marked good or bad.

`run(recipe)` reads top to bottom: seed, data (pairs unpaired on request), model, trainer (desirable and undesirable
weights from the data's balance unless the recipe gives them; with the SFT adapter when continuing), train, save,
evaluate (held-out pairs as preferences, and the recipe's task), write the run folder.

As for DPO, the reference model is the base with the adapter switched off, or a frozen copy of the SFT adapter.
"""

from __future__ import annotations

from typing import Any

from ..accounting import phase
from ..adapters import parameter_counts
from ..checkpoints import resume_point
from ..data.splits import feedback_counts, feedback_rows, load_data
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

TRAINING_LOGS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "kl")


def run(recipe) -> RunResult:
    """Train an adapter on thumbs up/down feedback as the recipe says and write the run folder; returns its path
    and metrics."""
    from transformers import set_seed

    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        check_data(recipe, splits)
        train_rows = feedback_rows(splits.train, recipe.seed)
    checkpoint = resume_point(recipe, splits.report)
    loaded = load_model(recipe.model, recipe.source, decide_precision(recipe.model))
    check_chat_template(loaded.tokenizer, recipe)
    run_dir = run_folder(recipe, checkpoint)

    trainer, speed = build_trainer(recipe, loaded, train_rows, run_dir)
    report_long_rows(train_rows, loaded.tokenizer, trainer.args.max_length, splits.report)
    counts = parameter_counts(trainer.model)
    output = train_and_save(trainer, speed, loaded.tokenizer, run_dir, phases, recipe, splits.report, checkpoint)
    if not is_main_process():
        return RunResult(run_dir=run_dir, metrics={}, manifest={})  # rank 0 evaluates and writes the run folder

    model = trained_model(trainer, recipe, run_dir, loaded)
    history = trainer.state.log_history
    metrics = {
        **train_metrics("sft+kto" if recipe.model.adapter else "kto", output, phases, counts),
        **first_and_last(history, TRAINING_LOGS),
        "feedback_rows": feedback_counts(train_rows),
    }
    weights = {"desirable_weight": trainer.args.desirable_weight, "undesirable_weight": trainer.args.undesirable_weight}
    manifest = build_manifest(
        recipe,
        splits.report,
        loaded.info,
        extra={
            "adapter": recipe.adapter.model_dump(),
            "kto": {**recipe.kto.model_dump(), **weights},
            "continued_from": recipe.model.adapter,
            "trl_args": recorded_args(trainer.args, recipe),
            "speed": speed_record(speed, trainer.args),
        },
    )
    with scoring(run_dir, recipe, manifest, history):
        score_feedback_run(model, loaded.tokenizer, splits, recipe, loaded.dtype, run_dir, metrics, phases)
    return finish_run(run_dir, metrics, manifest, history)
