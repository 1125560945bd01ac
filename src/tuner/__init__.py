"""tuner: few-shot, retrieval, SFT and DPO recipes on one loader, adapter builder and evaluator.

    from tuner import load_recipe, run
    result = run(load_recipe("recipes/quickstart/sft.yaml", ["train.max_steps=5"]))   # or tuner.recipes.sft.run
    result.run_dir, result.metrics

    from tuner import evaluate          # score any model or adapter on canonical rows
    from tuner import dry_run           # parameters and peak memory of a training recipe, before it runs
    from tuner import compare           # one table of runs
    from tuner import build_index       # a retrieval index of a corpus: index.search(question, k)

Where each part lives: ARCHITECTURE.md.
"""

from .comparison import Comparison, compare
from .errors import TunerError
from .estimate import Estimate
from .evaluator import EvalResult, evaluate
from .index import Index, build_index
from .recipe_file import load_recipe, recipe_from_dict
from .recipes import module_for
from .recipes.preflight import dry_run, validate
from .runs import RunResult
from .schema import Recipe

__all__ = ["Comparison", "Estimate", "EvalResult", "Index", "Recipe", "RunResult", "TunerError", "build_index",
           "compare", "dry_run", "evaluate", "load_recipe", "recipe_from_dict", "run", "validate"]
__version__ = "0.1.0"


def run(recipe: Recipe) -> RunResult:
    """Run a recipe with the module of its `method` (sft, dpo, fewshot or rag)."""
    return module_for(recipe.method).run(recipe)
