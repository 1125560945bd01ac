"""The few-shot prompt baseline: a base model with k in-context examples from the train split; no training.

`run(recipe)` reads top to bottom: seed, data, prompts with examples, model, evaluate, write the run folder.
"""

from __future__ import annotations

from typing import Any

from ..accounting import phase
from ..data.splits import load_data
from ..evaluator import check_rows, evaluate
from ..models import check_chat_template, load_model
from ..runs import RunResult, build_manifest, finish_run, record_evaluation, run_folder
from ..selection import fewshot_rows
from ..speed import decide_precision


def run(recipe) -> RunResult:
    """Score the base model with `fewshot.k` examples per prompt on the eval rows; returns the run folder."""
    from transformers import set_seed

    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        rows = fewshot_rows(splits.train, splits.eval, recipe.fewshot)
        check_rows(rows, recipe.eval, splits.labels, recipe.source)
    loaded = load_model(recipe.model, recipe.source, decide_precision(recipe.model))
    check_chat_template(loaded.tokenizer, recipe)
    run_dir = run_folder(recipe)

    result = evaluate(loaded.model, loaded.tokenizer, rows, recipe.eval, splits.labels, loaded.dtype)

    metrics: dict[str, Any] = {
        "method": "fewshot",
        "k": recipe.fewshot.k,
        "select": recipe.fewshot.select,
        "trainable_parameters": 0,
        "phases": phases,
    }
    record_evaluation(run_dir, result, metrics, phases)
    manifest = build_manifest(recipe, splits.report, loaded.info, extra={"fewshot": recipe.fewshot.model_dump()})
    return finish_run(run_dir, metrics, manifest)
