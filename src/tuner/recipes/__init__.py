"""The recipe modules, one per method; each exposes `run(recipe) -> RunResult`."""
