"""tuner: few-shot, retrieval, SFT and DPO recipes on one loader, adapter builder and evaluator.

    from tuner import load_recipe, run
    result = run(load_recipe("recipes/quickstart/sft.yaml", ["train.max_steps=5"]))   # or tuner.recipes.sft.run
    result.run_dir, result.metrics

    from tuner import evaluate          # score any model or adapter on canonical rows
    from tuner import dry_run           # parameters and peak memory of a training recipe, before it runs
    from tuner import compare           # one table of runs
    from tuner import build_index       # a retrieval index of a corpus: index.search(question, k)
    from tuner import run_seeds, sweep  # a recipe over seeds, and over a grid of values with its learning curve
    from tuner import export            # a run as a merged model, a GGUF file or its adapter, checked against the run
    from tuner import predict, chat     # a run's model on a file of rows, or in a conversation

Where each part lives: ARCHITECTURE.md.
"""

from .comparison import Comparison, compare
from .errors import TunerError
from .estimate import Estimate
from .evaluator import EvalResult, evaluate
from .index import Index, build_index
from .recipe_file import load_recipe, recipe_from_dict
from .recipes import module_for
from .recipes.chat import chat
from .recipes.export import ExportResult, export
from .recipes.predict import Predictions, predict
from .recipes.preflight import dry_run, validate
from .recipes.sweep import Sweep, run_seeds, sweep
from .runs import RunResult
from .schema import Recipe

__all__ = ["Comparison", "Estimate", "EvalResult", "ExportResult", "Index", "Predictions", "Recipe", "RunResult",
           "Sweep", "TunerError", "build_index", "chat", "compare", "dry_run", "evaluate", "export", "load_recipe",
           "predict", "recipe_from_dict", "run", "run_seeds", "sweep", "validate"]
__version__ = "0.1.0"


def run(recipe: Recipe) -> RunResult:
    """Run a recipe with the module of its `method` (sft, dpo, fewshot or rag); a recipe with `seeds` runs with
    `run_seeds`, which returns one result per seed."""
    if recipe.seeds:
        raise TunerError(f"{recipe.source}: key `seeds` asks for one run per seed: call tuner.run_seeds(recipe), "
                         f"which returns a result per seed, or remove `seeds` to run once with `seed`.")
    return module_for(recipe.method).run(recipe)
