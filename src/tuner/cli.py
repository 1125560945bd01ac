"""The `tuner` command: parses arguments, calls the Python API, turns known errors into one-paragraph messages."""

from __future__ import annotations

import sys

import click

from .errors import TunerError
from .recipes import module_for


def _load(path: str, overrides: tuple[str, ...], method: str | None = None):
    from .config import load_recipe

    recipe = load_recipe(path, overrides)
    if method is not None and recipe.method != method:
        raise TunerError(f"{path}: key `method` is {recipe.method!r}, but this is `tuner {method}`. Run "
                         f"`tuner {recipe.method} {path}` or change the recipe's method.")
    return recipe


def _fail(error: TunerError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(error.exit_code)


set_option = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                          help="Override a recipe value, e.g. --set train.max_steps=2 (repeatable).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tuner")
def cli() -> None:
    """Few-shot, SFT and DPO on your data, measured the same way."""


@cli.command()
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
def validate(recipe_path: str, overrides: tuple[str, ...]) -> None:
    """Check a recipe (keys, types, files, TRL keys, data rows) without loading any model."""
    from .data import load_data

    try:
        recipe = _load(recipe_path, overrides)
        report = load_data(recipe.data, seed=recipe.seed, source=recipe_path).report
    except TunerError as error:
        _fail(error)
    skipped = report["skipped_train_rows"]["count"] + report["skipped_eval_rows"]["count"]
    click.echo(f"{recipe_path}: ok. method {recipe.method}, model {recipe.model.name_or_path}, data "
               f"{report['format']} with {report['train_rows']} train and {report['eval_rows']} eval rows"
               f"{f' ({skipped} bad rows skipped)' if skipped else ''}, output {recipe.output_dir}")


@cli.command()
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
def sft(recipe_path: str, overrides: tuple[str, ...]) -> None:
    """Supervised fine-tuning of a LoRA/QLoRA adapter (TRL SFTTrainer)."""
    _run(recipe_path, overrides, "sft")


@cli.command()
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
def dpo(recipe_path: str, overrides: tuple[str, ...]) -> None:
    """Preference tuning (DPO) of a LoRA/QLoRA adapter (TRL DPOTrainer), new or continuing an SFT run."""
    _run(recipe_path, overrides, "dpo")


@cli.command()
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@set_option
def fewshot(recipe_path: str, overrides: tuple[str, ...]) -> None:
    """Few-shot prompt baseline: k in-context examples from the train split, no training."""
    _run(recipe_path, overrides, "fewshot")


@cli.command("eval")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@click.option("--adapter", metavar="RUN_FOLDER", help="Score the adapter of this run folder (default: the base model).")
@click.option("--output-dir", metavar="FOLDER", help="Where to write (default: the recipe's output_dir + '-eval').")
@set_option
def eval_command(recipe_path: str, adapter: str | None, output_dir: str | None, overrides: tuple[str, ...]) -> None:
    """Score a base model or a trained adapter with the recipe's `eval` section."""
    from .recipes import evaluation

    try:
        recipe = _load(recipe_path, overrides)
        if recipe.eval.task is None:
            raise TunerError(f"{recipe_path}: `eval.task` is not set; set it to choice, generate or preference.")
        result = evaluation.run(recipe, adapter=adapter, output_dir=output_dir)
    except TunerError as error:
        _fail(error)
    _report(result)


def _run(recipe_path: str, overrides: tuple[str, ...], method: str) -> None:
    try:
        recipe = _load(recipe_path, overrides, method)
        result = module_for(method).run(recipe)
    except TunerError as error:
        _fail(error)
    _report(result)


def _report(result) -> None:
    click.echo(f"\nRun folder: {result.run_dir}")
    click.echo("  holds: " + ", ".join(result.files()))
    summary = {k: result.metrics[k] for k in ("train_loss", "train_tokens", "train_tokens_per_second")
               if result.metrics.get(k) is not None}
    if summary:
        click.echo("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in summary.items()))
    for key in ("eval_preference", "eval"):
        scores = result.metrics.get(key)
        if scores:
            low, high = scores["accuracy_ci95"]
            click.echo(f"  eval ({scores['task']}): accuracy {scores['accuracy']:.4f} [95% CI {low:.4f}-{high:.4f}] "
                       f"on {scores['rows']} rows, {scores['latency_ms_per_example']} ms per example")


def main() -> None:
    cli(prog_name="tuner")
