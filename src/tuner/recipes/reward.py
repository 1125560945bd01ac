"""A reward model from preference pairs with TRL's RewardTrainer: a LoRA/QLoRA adapter and a new score head on the
base model.

`run(recipe)` reads top to bottom: seed, data, model (with a score head), trainer, train, save, evaluate (how often
the reward ranks a held-out pair's chosen answer first), write the run folder. The run folder's adapter holds the
score head, and its manifest says it is a reward model: a GRPO recipe names the folder to score answers with it.
"""

from __future__ import annotations

from typing import Any

from ..accounting import phase
from ..adapters import parameter_counts
from ..checkpoints import resume_point
from ..data.rows import scoring_rows
from ..data.splits import load_data
from ..hardware import is_main_process
from ..models import check_chat_template, load_model
from ..rendering import report_long_pairs
from ..rewards import evaluate_rewards
from ..runs import RunResult, build_manifest, finish_run, record_evaluation, run_folder, scoring
from ..speed import decide_precision
from ..trainers import build_trainer
from ..training import first_and_last, recorded_args, speed_record, train_and_save, train_metrics, trained_model
from .preflight import check_data

TRAINING_LOGS = ("loss", "accuracy", "margin")


def run(recipe) -> RunResult:
    """Train a reward model as the recipe says and write the run folder; returns its path and metrics."""
    from transformers import set_seed

    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        check_data(recipe, splits)
        eval_rows = scoring_rows(splits.eval)
    checkpoint = resume_point(recipe, splits.report)
    loaded = load_model(recipe.model, recipe.source, decide_precision(recipe.model), head="reward")
    check_chat_template(loaded.tokenizer, recipe)
    report_long_pairs(
        splits.train, loaded.tokenizer, recipe.train_settings().get("max_length"), splits.report, recipe.source
    )
    run_dir = run_folder(recipe, checkpoint)

    trainer, speed = build_trainer(recipe, loaded, splits.train, run_dir)
    counts = parameter_counts(trainer.model)
    output = train_and_save(trainer, speed, loaded.tokenizer, run_dir, phases, recipe, splits.report, checkpoint)
    if not is_main_process():
        return RunResult(run_dir=run_dir, metrics={}, manifest={})  # rank 0 evaluates and writes the run folder

    model = trained_model(trainer, recipe, run_dir, loaded)
    history = trainer.state.log_history
    metrics = {**train_metrics("reward", output, phases, counts), **first_and_last(history, TRAINING_LOGS)}
    manifest = build_manifest(
        recipe,
        splits.report,
        loaded.info,
        extra={
            "adapter": recipe.adapter.model_dump(),
            "trl_args": recorded_args(trainer.args, recipe),
            "speed": speed_record(speed, trainer.args),
        },
    )
    with scoring(run_dir, recipe, manifest, history):
        result = evaluate_rewards(model, loaded.tokenizer, eval_rows, recipe.eval, loaded.dtype)
        record_evaluation(run_dir, result, metrics, phases)
    return finish_run(run_dir, metrics, manifest, history)
