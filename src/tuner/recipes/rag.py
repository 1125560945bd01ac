"""Retrieval into the prompt: the recipe's `rag.k` passages from an index of `rag.corpus` put before each question;
no training. With `model.adapter` it retrieves for a tuned adapter (SFT+RAG). With `rag.retrieval_only` it scores
retrieval alone (recall@k, MRR, nDCG@k) and loads no language model.

`run(recipe)` reads top to bottom: seed, data, tokenizer, index, prompts with passages, model, evaluate, write the
run folder.
"""

from __future__ import annotations

from typing import Any

from ..accounting import phase
from ..adapters import read_adapter_run, with_run_adapter
from ..data.rows import scoring_rows
from ..data.splits import load_data
from ..evaluator import evaluate
from ..models import check_chat_template, load_config_and_tokenizer, load_model
from ..retrieval import context_length, grounding, open_index, request_latency, retrieval_scores, with_passages
from ..runs import RunResult, build_manifest, finish_run, record_evaluation, run_folder
from ..speed import decide_precision
from .preflight import check_data


def run(recipe) -> RunResult:
    """Score the base model (or `model.adapter`) with retrieved passages in every prompt; returns the run folder."""
    from transformers import set_seed

    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        check_data(recipe, splits)
        eval_rows = scoring_rows(splits.eval)
    config, tokenizer = load_config_and_tokenizer(recipe.model, recipe.source)
    check_chat_template(tokenizer, recipe)
    with phase("index", phases):
        index = open_index(recipe.rag, tokenizer, context_length(config), recipe.source)
    if recipe.rag.retrieval_only:  # the passages are the answer: no language model to load
        return _retrieval_only(recipe, splits, index, phases)
    rows, retrieval = with_passages(eval_rows, index, recipe.rag, tokenizer, context_length(config))
    index.close()
    upstream = read_adapter_run(recipe.model.adapter, recipe.model, recipe.source) if recipe.model.adapter else None
    loaded = load_model(recipe.model, recipe.source, decide_precision(recipe.model))
    model = with_run_adapter(loaded.model, recipe.model.adapter) if upstream else loaded.model
    run_dir = run_folder(recipe)

    result = evaluate(model, loaded.tokenizer, rows, recipe.eval, splits.labels, loaded.dtype)

    result.metrics.update(request_latency(result.metrics, retrieval, recipe.rag.k))
    result.metrics.update(grounding(result.task, result.predictions, retrieval))
    metrics: dict[str, Any] = {
        "method": "rag",
        "retriever": recipe.rag.retriever,
        "rerank": recipe.rag.rerank.model if recipe.rag.rerank else None,
        "k": recipe.rag.k,
        "adapter_run": recipe.model.adapter,
        "upstream_method": (upstream or {}).get("method"),
        "upstream_retrieval_aware": bool((upstream or {}).get("rag")),
        "trainable_parameters": 0,
        "index": index.report,
        "phases": phases,
    }
    record_evaluation(run_dir, result, metrics, phases)
    manifest = build_manifest(
        recipe,
        splits.report,
        loaded.info,
        extra={"rag": recipe.rag.model_dump(), "index": index.report, "continued_from": recipe.model.adapter},
    )
    return finish_run(run_dir, metrics, manifest)


def _retrieval_only(recipe, splits, index, phases: dict[str, Any]) -> RunResult:
    """The run of `rag.retrieval_only`: retrieval's scores as the run's evaluation (task retrieval)."""
    result = retrieval_scores(splits.eval, index, recipe.rag, recipe.source)
    index.close()
    run_dir = run_folder(recipe)
    metrics: dict[str, Any] = {
        "method": "rag",
        "retriever": recipe.rag.retriever,
        "rerank": recipe.rag.rerank.model if recipe.rag.rerank else None,
        "k": recipe.rag.k,
        "retrieval_only": True,
        "trainable_parameters": 0,
        "index": index.report,
        "phases": phases,
    }
    record_evaluation(run_dir, result, metrics, phases)
    model = {"name_or_path": recipe.model.name_or_path, "loaded": "tokenizer only (retrieval_only)"}
    extra = {"rag": recipe.rag.model_dump(), "index": index.report}
    return finish_run(run_dir, metrics, build_manifest(recipe, splits.report, model, extra=extra))
