"""tuner: few-shot, retrieval, SFT and DPO recipes on one loader, adapter builder and evaluator.

    from tuner import load_recipe, run
    result = run(load_recipe("recipes/quickstart/sft.yaml", ["train.max_steps=5"]))   # or tuner.recipes.sft.run
    result.run_dir, result.metrics

    from tuner import evaluate          # score any model or adapter on canonical rows
    from tuner import dry_run           # parameters and peak memory of a training recipe, before it runs
    from tuner import prompt_dry_run    # a fewshot or rag recipe's prompts as the model will read them
    from tuner import compare           # one table of runs
    from tuner import build_index       # a retrieval index of a corpus: index.search(question, k)
    from tuner import run_seeds, sweep  # a recipe over seeds, and over a grid of values with its learning curve
    from tuner import decide            # a folder of data to the trade-off table: arms planned, costed, run, compared
    from tuner import export            # a run as a merged model, a GGUF file or its adapter, checked against the run
    from tuner import predict, chat     # a run's model on a file of rows, or in a conversation

Where each part lives: ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from . import noise

# TRL's trainers report every run to the Hugging Face Hub (huggingface_hub's telemetry, from a thread) unless this is
# set before huggingface_hub is imported. A tool that trains on its user's own data sends nothing unasked, and with no
# network that thread's address lookup once crashed a whole test run of this project. An explicit
# `HF_HUB_DISABLE_TELEMETRY=0` in the environment allows it again.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# Deprecation notices and optional-kernel lines from inside the libraries, which a user of tuner cannot act on.
noise.filter_known()

# Each public name and the module that holds it, imported on first use (PEP 562): `import tuner` and `tuner --help`
# stay as quick as Python itself, and a notebook's `from tuner import compare` loads what compare needs.
_PUBLIC = {
    "Comparison": "comparison",
    "compare": "comparison",
    "Decision": "recipes.decision",
    "decide": "recipes.decision",
    "TunerError": "errors",
    "Estimate": "estimate",
    "EvalResult": "evaluator",
    "evaluate": "evaluator",
    "Index": "index",
    "build_index": "index",
    "load_recipe": "recipe_file",
    "recipe_from_dict": "recipe_file",
    "module_for": "recipes",
    "chat": "recipes.chat",
    "ExportResult": "recipes.export",
    "export": "recipes.export",
    "Predictions": "recipes.predict",
    "predict": "recipes.predict",
    "dry_run": "recipes.preflight",
    "prompt_dry_run": "recipes.preflight",
    "validate": "recipes.preflight",
    "Sweep": "recipes.sweep",
    "run_seeds": "recipes.sweep",
    "sweep": "recipes.sweep",
    "RunResult": "runs",
    "Recipe": "schema",
}

if TYPE_CHECKING:
    from .runs import RunResult
    from .schema import Recipe

__all__ = [
    "Comparison",
    "Decision",
    "Estimate",
    "EvalResult",
    "ExportResult",
    "Index",
    "Predictions",
    "Recipe",
    "RunResult",
    "Sweep",
    "TunerError",
    "build_index",
    "chat",
    "compare",
    "decide",
    "dry_run",
    "evaluate",
    "export",
    "load_recipe",
    "predict",
    "prompt_dry_run",
    "recipe_from_dict",
    "run",
    "run_seeds",
    "sweep",
    "validate",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tuner' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


def run(recipe: Recipe) -> RunResult:
    """Run a recipe with the module of its `method` (sft, dpo, kto, reward, grpo, fewshot or rag); a recipe with
    `seeds` runs with `run_seeds`, which returns one result per seed."""
    from .errors import TunerError
    from .recipes import module_for

    if recipe.seeds:
        raise TunerError(
            f"{recipe.source}: key `seeds` asks for one run per seed: call tuner.run_seeds(recipe), "
            f"which returns a result per seed, or remove `seeds` to run once with `seed`."
        )
    return module_for(recipe.method).run(recipe)
