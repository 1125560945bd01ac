"""The recipe modules, one per method; each exposes `run(recipe) -> RunResult`."""

import importlib

# method -> module; imported only when that method runs, so that `tuner --help` and `tuner validate` stay light.
MODULES = {"sft": "tuner.recipes.sft", "dpo": "tuner.recipes.dpo", "fewshot": "tuner.recipes.fewshot"}


def module_for(method: str):
    """The recipe module that runs `method` (sft, dpo or fewshot)."""
    return importlib.import_module(MODULES[method])
