"""Supervised fine-tuning of a LoRA/QLoRA adapter with TRL's SFTTrainer.

`run(recipe)` reads top to bottom: seed, data, model, trainer (with its speed settings), train, save, evaluate, write
the run folder.
"""

from __future__ import annotations

from typing import Any

from ..accounting import phase
from ..adapters import parameter_counts
from ..checkpoints import resume_point
from ..data.rows import scoring_rows
from ..data.splits import load_data
from ..evaluator import evaluate
from ..hardware import is_main_process
from ..models import check_chat_template, load_config_and_tokenizer, load_model
from ..rendering import report_long_rows, report_tools
from ..retrieval import grounding, request_latency, retrieval_aware_rows
from ..runs import RunResult, build_manifest, finish_run, record_evaluation, run_folder, scoring
from ..speed import decide_precision
from ..trainers import build_trainer
from ..training import logged, recorded_args, speed_record, train_and_save, train_metrics, trained_model
from .preflight import check_data


def run(recipe) -> RunResult:
    """Train an adapter as the recipe says and write the run folder; returns its path and metrics."""
    from transformers import set_seed

    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        check_data(recipe, splits)
        eval_rows = scoring_rows(splits.eval)
    checkpoint = resume_point(recipe, splits.report)
    train_rows, retrieval, index_report = splits.train, None, None
    if recipe.rag:  # retrieval-aware fine-tuning: train and eval prompts carry the passages retrieved for them
        config, tokenizer = load_config_and_tokenizer(recipe.model, recipe.source)
        train_rows, eval_rows, retrieval, index_report = retrieval_aware_rows(
            recipe, config, tokenizer, splits.train, eval_rows, phases
        )
    loaded = load_model(recipe.model, recipe.source, decide_precision(recipe.model))
    check_chat_template(loaded.tokenizer, recipe)
    run_dir = run_folder(recipe, checkpoint)

    trainer, speed = build_trainer(recipe, loaded, train_rows, run_dir)
    report_long_rows(train_rows, loaded.tokenizer, trainer.args.max_length, splits.report)
    report_tools(train_rows, loaded.tokenizer, splits.report)
    counts = parameter_counts(trainer.model)
    output = train_and_save(trainer, speed, loaded.tokenizer, run_dir, phases, recipe, splits.report, checkpoint)
    if not is_main_process():
        return RunResult(run_dir=run_dir, metrics={}, manifest={})  # rank 0 evaluates and writes the run folder

    model = trained_model(trainer, recipe, run_dir, loaded)
    history = trainer.state.log_history
    metrics = {
        **train_metrics("sft", output, phases, counts),
        "first_logged_loss": logged(history, "loss", 0),
        "last_logged_loss": logged(history, "loss", -1),
    }
    manifest = build_manifest(
        recipe,
        splits.report,
        loaded.info,
        extra={
            "adapter": recipe.adapter.model_dump(),
            "trl_args": recorded_args(trainer.args, recipe),
            "speed": speed_record(speed, trainer.args),
            "rag": recipe.rag.model_dump() if recipe.rag else None,
            "index": index_report,
        },
    )
    with scoring(run_dir, recipe, manifest, history):
        if recipe.eval.task:
            result = evaluate(model, loaded.tokenizer, eval_rows, recipe.eval, splits.labels, loaded.dtype)
            if retrieval:
                result.metrics.update(request_latency(result.metrics, retrieval, recipe.rag.k))
                result.metrics.update(grounding(result.task, result.predictions, retrieval))
            record_evaluation(run_dir, result, metrics, phases)
    if recipe.rag:
        metrics.update(retriever=recipe.rag.retriever, k=recipe.rag.k, index=index_report)
    return finish_run(run_dir, metrics, manifest, history)
