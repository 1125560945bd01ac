"""tuner: few-shot, SFT and DPO recipes on one loader, adapter builder and evaluator.

    from tuner import load_recipe
    from tuner.recipes import sft
    result = sft.run(load_recipe("recipes/quickstart/sft.yaml", ["train.max_steps=5"]))
    result.run_dir, result.metrics
"""

from .config import Recipe, load_recipe, recipe_from_dict
from .errors import TunerError
from .runs import RunResult

__all__ = ["Recipe", "RunResult", "TunerError", "load_recipe", "recipe_from_dict", "run"]
__version__ = "0.1.0"


def run(recipe: Recipe) -> RunResult:
    """Run a recipe with the module of its `method`."""
    from .cli import recipe_module

    return recipe_module(recipe.method).run(recipe)
