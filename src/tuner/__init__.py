"""tuner: few-shot, SFT and DPO recipes on one loader, adapter builder and evaluator.

    from tuner import load_recipe, run
    result = run(load_recipe("recipes/quickstart/sft.yaml", ["train.max_steps=5"]))   # or tuner.recipes.sft.run
    result.run_dir, result.metrics

    from tuner import evaluate          # score any model or adapter on canonical rows
    from tuner import dry_run           # parameters and peak memory of a training recipe, before it runs
"""

from .config import Recipe, load_recipe, recipe_from_dict
from .errors import TunerError
from .estimate import Estimate, dry_run
from .evaluate import EvalResult, evaluate
from .runs import RunResult

__all__ = ["Estimate", "EvalResult", "dry_run", "Recipe", "RunResult", "TunerError", "evaluate", "load_recipe", "recipe_from_dict", "run"]
__version__ = "0.1.0"


def run(recipe: Recipe) -> RunResult:
    """Run a recipe with the module of its `method` (sft, dpo or fewshot)."""
    from .recipes import module_for

    return module_for(recipe.method).run(recipe)

