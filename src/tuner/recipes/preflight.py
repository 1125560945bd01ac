"""Checks before a run, with no weights loaded: `tuner validate` (recipe, files and data rows) and the dry run of a
training recipe (`tuner sft|dpo --dry-run`: parameters and peak memory on the meta device)."""

from __future__ import annotations

from typing import Any

from ..data.corpus import read_corpus
from ..data.rows import scoring_rows
from ..data.splits import load_data, require_preference
from ..embedder import resolve_embedding_model
from ..estimate import Estimate, estimate
from ..evaluator import check_rows
from ..models import check_chat_template, load_config_and_tokenizer
from ..retrieval import retrieval_aware_rows
from ..speed import checkpointing, decide_precision


def validate(recipe) -> dict[str, Any]:
    """Read the recipe's data (and a retrieval corpus) and check that its eval rows can be scored; returns the data
    report (formats, row counts, skipped rows, corpus documents). Raises TunerError on any problem."""
    splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
    if recipe.eval.task and recipe.eval.task != "preference" or recipe.method == "fewshot":
        check_rows(scoring_rows(splits.eval), recipe.eval, splits.labels, recipe.source)
    report = dict(splits.report)
    if recipe.rag is not None:
        corpus = read_corpus(recipe.rag.corpus, recipe.source)
        report["corpus"] = {"documents": len(corpus.documents), "skipped": [f"{n}: {r}" for n, r in corpus.skipped]}
        if recipe.rag.retriever != "bm25":
            resolve_embedding_model(recipe.rag.embedding_model, recipe.source)
    return report


def dry_run(recipe) -> Estimate:
    """Validate the recipe, read the data and the model's config (no weights), and estimate the run as it would go:
    the same precision and gradient-checkpointing decision as the run itself."""
    splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
    if recipe.method == "dpo":
        require_preference(splits, recipe.source, recipe.method)
    config, tokenizer = load_config_and_tokenizer(recipe.model, recipe.source)
    check_chat_template(tokenizer, recipe)
    train = splits.train
    if recipe.rag:  # retrieval-aware SFT trains on prompts with passages: estimate and show those
        train = retrieval_aware_rows(recipe, config, tokenizer, splits.train, scoring_rows(splits.eval), {})[0]
    precision = decide_precision(recipe.model)
    on, _ = checkpointing(recipe, precision, config, tokenizer, train)
    return estimate(recipe, train, config, tokenizer, precision, checkpointing=on)
