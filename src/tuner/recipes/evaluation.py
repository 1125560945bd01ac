"""`tuner eval`: score a base model, or a trained adapter from a run folder, with the recipe's `eval` section.

`run(recipe, adapter=None)` reads top to bottom: check the adapter run, data, model (+ adapter), evaluate, write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..accounting import phase
from ..adapters import read_adapter_run, with_run_adapter
from ..data.rows import scoring_rows
from ..data.splits import load_data
from ..errors import TunerError
from ..evaluator import check_rows, evaluate
from ..models import check_chat_template, load_model
from ..runs import RunResult, build_manifest, finish_run, new_run_dir, record_evaluation, write_recipe
from ..speed import decide_precision


def run(recipe, adapter: str | Path | None = None, output_dir: str | Path | None = None) -> RunResult:
    """Evaluate and write a run folder (default: the recipe's output_dir with an `-eval` suffix)."""
    from transformers import set_seed

    if adapter and recipe.model.endpoint:
        raise TunerError(
            f"{recipe.source}: `--adapter {adapter}` cannot go on a served model (`model.endpoint`): the server "
            f"holds its weights. Export the run and serve the export, or drop `model.endpoint`."
        )
    adapter_manifest = read_adapter_run(adapter, recipe.model, recipe.source) if adapter else None
    set_seed(recipe.seed)
    phases: dict[str, Any] = {}
    with phase("data", phases):
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
        eval_rows = scoring_rows(splits.eval)
        check_rows(eval_rows, recipe.eval, splits.labels, recipe.source)
    loaded = load_model(recipe.model, recipe.source, decide_precision(recipe.model))
    check_chat_template(loaded.tokenizer, recipe)
    model = with_run_adapter(loaded.model, adapter) if adapter else loaded.model
    base = Path(recipe.output_dir)
    run_dir = new_run_dir(output_dir or base.with_name(base.name + "-eval"))
    write_recipe(run_dir, recipe)

    result = evaluate(model, loaded.tokenizer, eval_rows, recipe.eval, splits.labels, loaded.dtype)

    metrics: dict[str, Any] = {
        "method": adapter_manifest["method"] if adapter_manifest else "base",
        "adapter": str(adapter) if adapter else None,
        "phases": phases,
    }
    record_evaluation(run_dir, result, metrics, phases)
    manifest = build_manifest(
        recipe, splits.report, loaded.info, extra={"adapter_run": str(adapter) if adapter else None}
    )
    return finish_run(run_dir, metrics, manifest)
