"""`tuner predict`: answer a file of requests with a run's model, rendered the way the run rendered its eval rows
(system prompt, template, few-shot examples, retrieved passages), scored by the evaluator's batching.

`predict(target, input, output)` reads top to bottom: the run (or a recipe for the base model), the requests, the
prompts as the run's method builds them, the model with the run's adapter, scoring, one output line per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters import read_adapter_run, with_run_adapter
from ..data.requests import read_requests
from ..data.splits import load_data, load_split
from ..errors import TunerError
from ..evaluator import evaluate
from ..files import write_jsonl
from ..models import check_chat_template, load_config_and_tokenizer, load_model
from ..recipe_file import load_recipe
from ..retrieval import context_length, open_index, with_passages
from ..runs import read_run
from ..selection import fewshot_rows
from ..speed import decide_precision


@dataclass
class Predictions:
    """Where the answers were written, one dict per request, and accuracy over the requests that gave an answer."""

    output: Path
    rows: list[dict[str, Any]]
    accuracy: float | None
    answered: int


def model_target(target: str | Path):
    """A run folder (its recipe as it ran, its adapter) or a recipe file (the base model as the recipe sets it up):
    (recipe, adapter run folder or None, the run's data report or {})."""
    path = Path(target)
    if path.is_dir():
        run = read_run(path)
        run.require_policy("answer with")
        # Its own adapter; else the adapter `tuner eval --adapter` scored, or the one a rag recipe used.
        adapter = run.run_dir if run.adapter else run.metrics.get("adapter") or run.recipe.model.adapter
        return run.recipe, adapter, run.manifest.get("data") or {}
    recipe = load_recipe(path)
    return recipe, recipe.model.adapter, {}


def data_format(recipe, known: str | None) -> str:
    """The run's row format, or for a recipe its `data.format` (detected from its train data when `auto`)."""
    if known:
        return known
    if recipe.data.format != "auto":
        return recipe.data.format
    return load_split(recipe.data.train_sources()[0], recipe.data, f"{recipe.source}: data.train")[1]


def method_prompts(recipe, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[float] | None]:
    """The requests' prompts as the run's method built its eval prompts: k examples from its train split for
    few-shot, the passages retrieved from its index for retrieval (and retrieval-aware SFT); and with retrieval, the
    seconds each row's search took."""
    seconds = None
    if recipe.method == "fewshot":
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        rows = fewshot_rows(splits.train, rows, recipe.fewshot)
    if recipe.rag is not None:
        config, tokenizer = load_config_and_tokenizer(recipe.model, recipe.source)
        index = open_index(recipe.rag, tokenizer, context_length(config), recipe.source)
        rows, retrieval = with_passages(rows, index, recipe.rag, tokenizer, context_length(config), what="request")
        index.close()
        seconds = retrieval.seconds
    return rows, seconds


def free_path(path: Path) -> Path:
    """`path`, or `NAME-2.EXT`, `NAME-3.EXT`... when it exists: an earlier output is never overwritten."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    if candidate != path:
        print(f"tuner: {path} exists; writing to {candidate} instead")
    return candidate


def _answer(prediction: dict[str, Any], answered: bool, retrieval_seconds: float | None) -> dict[str, Any]:
    line = {"row": prediction["row"], "answer": prediction["prediction"]}
    line.update({k: prediction[k] for k in ("top", "scores", "generated", "passages") if k in prediction})
    if answered:
        line.update(gold=prediction["gold"], correct=prediction["correct"])
    if retrieval_seconds is None:
        line["latency_ms"] = prediction["latency_ms"]
    else:  # a request's latency is its search and its scoring
        line.update(
            retrieval_ms=round(1000 * retrieval_seconds, 2),
            model_ms=prediction["latency_ms"],
            latency_ms=round(1000 * retrieval_seconds + prediction["latency_ms"], 2),
        )
    line["prompt"] = prediction["prompt"]
    return line


def predict(
    target: str | Path, input_path: str | Path, output_path: str | Path, batch_size: int | None = None
) -> Predictions:
    """Answer every row of `input_path` with the model of `target` (a run folder, or a recipe file for its base
    model) and write one JSON line per row to `output_path` (a new name if it exists)."""
    from transformers import set_seed

    recipe, adapter, data_report = model_target(target)
    labels = data_report.get("labels") or recipe.data.label_names
    eval_config = recipe.eval.model_copy(
        update={"task": recipe.eval.task or "generate", **({"batch_size": batch_size} if batch_size else {})}
    )
    if eval_config.task == "choice" and not (eval_config.choices or labels or recipe.data.choices_column):
        raise TunerError(
            f"{target}: its eval task is choice but it names no choices (`eval.choices`). Set them in the recipe."
        )
    requests = read_requests(
        input_path, recipe.data, data_format(recipe, data_report.get("format")), eval_config, labels
    )
    set_seed(recipe.seed)
    rows, retrieval_seconds = method_prompts(recipe, requests.rows)
    if adapter is not None:
        read_adapter_run(adapter, recipe.model, recipe.source)
    loaded = load_model(recipe.model, recipe.source, decide_precision(recipe.model))
    check_chat_template(loaded.tokenizer, recipe)
    model = with_run_adapter(loaded.model, adapter) if adapter is not None else loaded.model

    result = evaluate(model, loaded.tokenizer, rows, eval_config, labels, loaded.dtype)

    lines = [
        _answer(p, had, retrieval_seconds[p["row"]] if retrieval_seconds else None)
        for p, had in zip(result.predictions, requests.answered)
    ]
    output = free_path(Path(output_path))
    output.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(output, lines)
    scored = [line["correct"] for line in lines if "correct" in line]
    return Predictions(
        output=output,
        rows=lines,
        accuracy=round(sum(scored) / len(scored), 4) if scored else None,
        answered=len(scored),
    )
