"""The recipe modules, one per command, each exposing `run(recipe) -> RunResult` and reading top to bottom.

`MODULES` maps a method to its module's name; the module is imported when that method runs, so `tuner --help` and
`tuner validate` import neither torch nor TRL.
"""

import importlib

MODULES = {
    "sft": "tuner.recipes.sft",
    "dpo": "tuner.recipes.dpo",
    "kto": "tuner.recipes.kto",
    "reward": "tuner.recipes.reward",
    "grpo": "tuner.recipes.grpo",
    "fewshot": "tuner.recipes.fewshot",
    "rag": "tuner.recipes.rag",
}


def module_for(method: str):
    """The recipe module that runs `method` (sft, dpo, kto, reward, grpo, fewshot or rag)."""
    return importlib.import_module(MODULES[method])
