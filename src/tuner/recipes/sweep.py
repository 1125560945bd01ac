"""Sweeps: one recipe run once per seed (`--seeds`) and per point of a grid of recipe values (`tuner sweep --grid`),
each into its own folder, a finished run of the same recipe kept when the sweep runs again; then the comparison of
them all and the learning curve: accuracy against the swept value, with the seed spread and prompt baselines.

    from tuner import load_recipe, run_seeds, sweep
    results = run_seeds(load_recipe("recipes/quickstart/sft.yaml"), [0, 1, 2])    # runs/quickstart-sft/seed-<n>
    done = sweep(load_recipe("recipes/quickstart/sft.yaml"), {"data.max_train_samples": [50, 100, 200]},
                 seeds=[0, 1, 2], against=["runs/quickstart/fewshot"])
    done.comparison.table, done.curve, done.write()
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..comparison import Comparison, compare, find_runs
from ..data.splits import load_data
from ..defaults import TRAINING_METHODS
from ..errors import TunerError
from ..files import write_text
from ..hardware import is_main_process
from ..plot import learning_curve
from ..recipe_file import apply_overrides, recipe_from_dict
from ..runs import RunResult, resumable
from ..schema import Recipe
from ..secrets import redact_data
from . import module_for
from .workers import run_on_workers

# Keys that say where and how a run went, not what it is: a finished run differing only in these is the same run.
WHERE_KEYS = ("output_dir", "resume", "seeds")


def parse_grid(texts: list[str] | tuple[str, ...]) -> dict[str, list[Any]]:
    """`--grid KEY.PATH=V1,V2,...` options as {key path: [values]} (each value read as YAML, as --set reads it)."""
    grid: dict[str, list[Any]] = {}
    for text in texts:
        key, _, raw = text.partition("=")
        values = [yaml.safe_load(value) for value in raw.split(",") if value.strip()]
        if not key.strip() or not values:
            raise TunerError(
                f"--grid {text}: expected KEY.PATH=VALUE,VALUE,... with at least one value, for example "
                f"--grid data.max_train_samples=50,100,200."
            )
        if key.strip() in grid or key.strip() in ("seed", "output_dir"):
            why = "swept twice" if key.strip() in grid else "set by the sweep"
            raise TunerError(f"--grid {text}: key {key.strip()} is {why}; give each key once (seeds with --seeds).")
        grid[key.strip()] = values
    return grid


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 0,1,2` as [0, 1, 2]."""
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise TunerError(
            f"--seeds {text}: expected whole numbers separated by commas, for example --seeds 0,1,2."
        ) from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise TunerError(f"--seeds {text}: expected distinct whole numbers of 0 or more, for example --seeds 0,1,2.")
    return seeds


def _point_folder(point: tuple[tuple[str, Any], ...]) -> str:
    return ",".join(f"{key}={value}" for key, value in point).replace("/", "_")


def _points(grid: dict[str, list[Any]]) -> list[tuple[tuple[str, Any], ...]]:
    """Every combination of the grid's values, as ((key, value), ...) in the grid's key order; one empty point
    without a grid."""
    return list(itertools.product(*[[(key, value) for value in values] for key, values in grid.items()]))


def plan(recipe: Recipe, grid: dict[str, list[Any]] | None = None, seeds: list[int] | None = None) -> list[Recipe]:
    """The recipes of a sweep, validated before anything runs: one per point of `grid` (every combination of its
    values) and per seed (`seeds`, else the recipe's `seeds`), in
    `<output_dir>[/<key>=<value>,...][/seed-<n>]`. A seed run sets `seed` and `fewshot.seed`; a `model.adapter`
    run folder holding `seed-<n>` folders gives each seed its own (DPO on SFT, seed by seed). With `resume: auto`,
    each run resumes where its folder holds an interrupted one with a checkpoint and starts anew elsewhere."""
    seeds = seeds if seeds is not None else recipe.seeds
    # The recipe as written (defaults left out), so it validates again as the user's recipe did.
    document = recipe.model_dump(mode="json", exclude_unset=True)
    points = _points(grid or {})
    planned = []
    for point in points:
        folder = Path(recipe.output_dir) / _point_folder(point) if point else Path(recipe.output_dir)
        at_point = apply_overrides(document, [f"{key}={json.dumps(value)}" for key, value in point])
        for seed in seeds if seeds else [None]:
            one = {**at_point, "seeds": None, "output_dir": str(folder)}
            if seed is not None:
                one.update(seed=seed, output_dir=str(folder / f"seed-{seed}"))
                one["fewshot"] = {**one.get("fewshot", {}), "seed": seed}
                adapter = one["model"].get("adapter")
                if adapter and (Path(adapter) / f"seed-{seed}").is_dir():
                    one["model"] = {**one["model"], "adapter": str(Path(adapter) / f"seed-{seed}")}
            if one.get("resume") == "auto" and not resumable(one["output_dir"]):
                one["resume"] = None  # a seed or point that never started (or finished) starts, as a new run
            where = f"{recipe.source} ({one['output_dir']})" if point or seed is not None else recipe.source
            planned.append(recipe_from_dict(one, source=where))
    return planned


def _what(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key not in WHERE_KEYS}


def finished_run(recipe: Recipe) -> RunResult | None:
    """The finished run of this same recipe (output folder and resume aside) in `recipe.output_dir`, or in the
    `output_dir-N` a run went to when that folder was taken; else None, and the run goes to a new folder."""
    given = Path(recipe.output_dir)
    taken = sorted(given.parent.glob(f"{given.name}-*"), key=lambda p: p.name) if given.parent.is_dir() else []
    for folder in [given] + [path for path in taken if path.name[len(given.name) + 1 :].isdigit()]:
        done = _finished_in(folder, recipe)
        if done is not None:
            return done
    return None


def _finished_in(folder: Path, recipe: Recipe) -> RunResult | None:
    try:
        written = yaml.safe_load((folder / "recipe.yaml").read_text(encoding="utf-8"))
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if isinstance(written, dict) and (written.get("model") or {}).get("adapter"):
        written.pop("adapter", None)  # written before recipe.yaml left out the section `model.adapter` overrides
    planned = yaml.safe_load(yaml.safe_dump(redact_data(recipe.to_dict()), sort_keys=False))
    try:
        # Through today's schema, so a key tuner added since (at its default) does not make the same run differ.
        then = yaml.safe_load(yaml.safe_dump(redact_data(Recipe.model_validate(written).to_dict()), sort_keys=False))
    except (ValidationError, TypeError):
        return None
    if _what(then) != _what(planned) or not _same_data(recipe, manifest, folder):
        return None
    return RunResult(run_dir=folder, metrics=metrics, manifest=manifest)


def _same_data(recipe: Recipe, manifest: dict[str, Any], folder: Path) -> bool:
    """Whether the recipe's rows are still those the finished run used (their fingerprints in its manifest): a data
    file edited since, or other in-memory rows, make the same recipe another run, which runs again beside it."""
    with contextlib.redirect_stdout(io.StringIO()):  # the data's notices were said when the run read them
        report = load_data(recipe.data, seed=recipe.seed, source=recipe.source).report
    then = manifest.get("data") or {}
    # A manifest without them (written before they were recorded) cannot tell: the run is kept, as before.
    changed = [key for key in ("train_fingerprint", "eval_fingerprint") if then.get(key) not in (None, report[key])]
    if changed and is_main_process():
        print(f"tuner: {folder} ran on other rows ({', '.join(changed)} differ): this recipe runs again beside it")
    return not changed


def run_all(recipes: list[Recipe], workers: int | None = None, cluster: str | None = None) -> list[RunResult]:
    """Run each planned recipe with its method's module, here one after another, or on Ray (`workers`: a local
    cluster of that many; `cluster`: a running cluster's address); one whose folder holds its finished run is kept,
    not run. Results come back in the planned order."""
    results: list[RunResult | None] = []
    todo = []
    for recipe in recipes:
        done = finished_run(recipe)
        if done is not None and is_main_process():
            print(f"tuner: {done.run_dir} holds a finished run of this recipe; kept (delete it to run it again)")
        results.append(done)
        if done is None:
            todo.append(recipe)
    if workers is not None or cluster is not None:
        ran = iter(run_on_workers(todo, workers, cluster))
        return [done if done is not None else next(ran) for done in results]
    return [
        done if done is not None else module_for(recipe.method).run(recipe) for done, recipe in zip(results, recipes)
    ]


def run_seeds(
    recipe: Recipe, seeds: list[int] | None = None, workers: int | None = None, cluster: str | None = None
) -> list[RunResult]:
    """Run `recipe` once per seed (`seeds`, else the recipe's `seeds`) into `<output_dir>/seed-<n>/`; finished seeds
    of the same recipe are kept, interrupted ones resume when the recipe says `resume: auto` (--resume); with
    `workers` or `cluster`, the seeds run side by side on Ray (`run_on_workers`)."""
    return run_all(plan(recipe, None, seeds), workers, cluster)


@dataclass
class Sweep:
    """What `sweep` returns: the runs, their `comparison`, the learning-curve `curve` (a matplotlib Figure), the
    swept `grid`, and `passes`: per baseline, the first swept value whose mean accuracy beats it."""

    runs: list[RunResult]
    comparison: Comparison
    curve: Any
    grid: dict[str, list[Any]]
    passes: list[str]
    folder: Path

    def write(self, folder: str | Path | None = None) -> dict[str, Path]:
        """The comparison (Markdown, CSV, JSON, PNG), learning_curve.png and the pass lines in `folder` (default
        `<output_dir>/comparison`; an earlier comparison there is replaced, a folder holding anything else is kept and
        `-2`... used)."""
        paths = self.comparison.write(folder or self.folder / "comparison")
        out = paths["md"].parent
        paths["curve"] = out / "learning_curve.png"
        self.curve.savefig(paths["curve"], dpi=130, bbox_inches="tight")
        paths["passes"] = out / "learning_curve.md"
        write_text(paths["passes"], "\n".join(self.passes) + "\n")
        return paths


def sweep(
    recipe: Recipe,
    grid: dict[str, list[Any]],
    seeds: list[int] | None = None,
    against: list[str | Path] = (),
    workers: int | None = None,
    cluster: str | None = None,
) -> Sweep:
    """Run `recipe` at every point of `grid` ({key path: [values]}) and seed (training runs resume when interrupted,
    finished ones are kept), then compare them with the runs `against` (prompt baselines, drawn as horizontal lines;
    the most accurate is the baseline of every Δ) and draw the learning curve along the first key. With `workers`
    (a local Ray cluster of that many) or `cluster` (a Ray cluster's address) the runs go side by side to Ray, and
    the comparison is made when all are done."""
    if not grid:
        raise TunerError(
            "a sweep needs at least one --grid KEY.PATH=VALUE,VALUE,... (for example --grid "
            "data.max_train_samples=50,100,200)."
        )
    if against:
        find_runs(list(against))  # a wrong baseline folder is named before hours of training, not after
    resumable = {"resume": "auto"} if recipe.method in TRAINING_METHODS else {}
    planned = plan(recipe.model_copy(update=resumable), grid, seeds)
    results = run_all(planned, workers, cluster)
    against = [str(path) for path in against]
    baseline = _most_accurate(against)
    comparison = compare([str(result.run_dir) for result in results] + against, baseline=baseline)
    rows = comparison.table.to_dict(orient="records")
    task = comparison.tasks[0] if comparison.tasks else None
    points = _points(grid)
    per_point = len(planned) // len(points)
    curve_points = []
    for number, point in enumerate(points):
        folders = {str(result.run_dir) for result in results[number * per_point : (number + 1) * per_point]}
        folders |= {str(Path(folder).parent) for folder in folders}
        row = next((row for row in rows if row["path"] in folders), None)
        if row is not None:
            curve_points.append((point, row))
    wanted = {Path(path).resolve() for path in against}
    baselines = [row for row in rows if Path(row["path"]).resolve() in wanted]
    curve = learning_curve(curve_points, baselines, task)
    return Sweep(
        runs=results,
        comparison=comparison,
        curve=curve,
        grid=grid,
        passes=pass_lines(curve_points, baselines, task),
        folder=Path(recipe.output_dir),
    )


def pass_lines(
    points: list[tuple[tuple[tuple[str, Any], ...], dict[str, Any]]], baselines: list[dict[str, Any]], task: str | None
) -> list[str]:
    """For each baseline (and each setting of the other swept keys): the first value of the first swept key whose
    mean accuracy beats the baseline's, and the first whose paired Δ against the comparison's baseline is beyond
    noise, in plain words."""
    if task is None or not points:
        return []
    key = points[0][0][0][0]
    series: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for point, row in points:
        series.setdefault(_point_folder(point[1:]), []).append((point[0][1], row))
    lines = []
    for rest, curve in series.items():
        where = f" (at {rest})" if rest else ""
        for baseline in baselines:
            target = baseline[f"{task}_accuracy"]
            beats = next(((value, row) for value, row in curve if row[f"{task}_accuracy"] > target), None)
            if beats is None:
                best = max(curve, key=lambda item: item[1][f"{task}_accuracy"])
                lines.append(
                    f"{curve[0][1]['method']}{where} does not pass {baseline['method']} ({target:.3f}) at "
                    f"any {key} swept: its best is {best[1][f'{task}_accuracy']:.3f} at {key}={best[0]}."
                )
                continue
            line = (
                f"{curve[0][1]['method']}{where} passes {baseline['method']} ({target:.3f}) from {key}={beats[0]} "
                f"on the mean ({beats[1][f'{task}_accuracy']:.3f}"
            )
            line += f" over {len(beats[1]['seeds'])} seeds)" if len(beats[1].get("seeds") or []) > 1 else ")"
            if baseline[f"{task}_delta"] == 0.0:
                real = next(
                    (
                        value
                        for value, row in curve
                        if row[f"{task}_delta_distinguishable"] in (True, 1) and row[f"{task}_delta"] > 0
                    ),
                    None,
                )
                line += (
                    f"; beyond the noise of rows and seeds (paired 95% interval above zero) from {key}={real}"
                    if real is not None
                    else "; nowhere beyond the noise of rows and seeds (paired 95% interval above zero)"
                )
            lines.append(line + ".")
    return lines


def _most_accurate(against: list[str]) -> str | None:
    """The most accurate of the baseline runs (a run folder or a folder of its seeds), as the comparison names it."""
    if not against:
        return None
    table = compare(against).table
    column = next((name for name in table.columns if name.endswith("_accuracy")), None)
    if column is None or table[column].isna().all():
        return None
    return str(table.loc[table[column].idxmax(), "path"])
