"""`tuner decide`: from a folder of a team's data to the trade-off table, in one command, within a budget.

    from tuner import decide
    done = decide(["examples/data/tickets"], budget="2h", requests_per_month=100_000)
    done.comparison.table, done.recommendation, done.write()

It reads the data with tuner's loader and says what it found, plans the arms the data supports (`arms.py`), writes
each as a recipe in `<out>/recipes/` (an edited one there is used as it stands), costs each by its dry run and the
speed of the runs before it, runs them cheapest first into `<out>/runs/<arm>` (training arms once per seed), skips
and names an arm that would not fit the budget left, keeps finished runs when run again, and ends with `tuner
compare`'s table, plot and report, the learning curve of SFT against the best prompt, and the recommendation with
its assumptions and what would change it (`<out>/decision.md`).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..arms import DEFAULT_MODEL, Arm, plan_arms
from ..comparison import Comparison, compare
from ..data.inventory import Inventory, inventory
from ..data.splits import load_data
from ..errors import TunerError
from ..files import write_json, write_text
from ..hardware import device_kind
from ..models import load_config_and_tokenizer
from ..plot import learning_curve
from ..recipe_file import load_recipe
from ..table import verdict
from . import module_for
from .preflight import dry_run, prompt_dry_run
from .sweep import finished_run, parse_seeds, pass_lines, plan

# BM25 finding the answer's document for at least this share of questions leaves hybrid retrieval out.
RECALL_ENOUGH = 0.9
# Before any run has timed this machine: useful FLOP/s of a forward pass (2 CPU cores in fp32; one GPU in bf16),
# and the seconds a run spends loading before its first row. The first runs replace both by measurement.
PRIOR_FLOPS = {"cpu": 8.0e10, "cuda": 1.0e14, "mps": 2.0e12}
LOAD_SECONDS = 20.0
# A training token costs a forward and a backward pass (about 3 forwards); DPO and KTO add the reference's forward.
TRAIN_FACTOR = {"sft": 3.0, "dpo": 4.0, "kto": 4.0}
BUDGET_UNITS = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0, "gpu-h": 3600.0, "cpu-h": 3600.0}


def parse_budget(text: str | None) -> float | None:
    """`--budget 2h` / `90m` / `0.5gpu-h` as seconds of device time (None: no budget)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z-]*)\s*", text.lower())
    if not match or match.group(2) not in BUDGET_UNITS or float(match.group(1)) <= 0:
        raise TunerError(
            f"--budget {text}: expected an amount of device time, such as 2h, 90m, 600s or 0.5gpu-h (GPU-hours; "
            f"cpu-h on a CPU)."
        )
    return float(match.group(1)) * BUDGET_UNITS[match.group(2)]


@dataclass
class Step:
    """One planned run: its arm, seed, recipe, the estimated seconds and what happened (ran, kept, skipped)."""

    arm: Arm
    seed: int | None
    recipe: Any
    estimate: float
    status: str = "planned"
    seconds: float = 0.0
    why: str = ""
    work: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    """What `decide` returns: the inventory it `found`, the `steps` it planned (with what happened to each), the
    `comparison` of the runs, the learning-curve `curve` and `passes` lines, the `recommendation` lines, and the
    output `folder`."""

    found: Inventory
    steps: list[Step]
    comparison: Comparison | None
    curve: Any
    passes: list[str]
    recommendation: list[str]
    folder: Path
    assumptions: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """decision.md: what was found, the plan with what ran, the table and verdict, the decision."""
        lines = ["# tuner decide", "", "## Data found", ""] + [f"- {line}" for line in self.found.lines()]
        lines += ["", "## Arms", "", "| arm | seed | method | why | estimate | status |"]
        lines.append("| --- | --- | --- | --- | ---: | --- |")
        for step in self.steps:
            took = f" ({_duration(step.seconds)})" if step.status == "ran" else ""
            lines.append(
                f"| {step.arm.name} | {'' if step.seed is None else step.seed} | {step.arm.method} | {step.arm.why} | "
                f"{_duration(step.estimate)} | {step.status}{took}{': ' + step.why if step.why else ''} |"
            )
        lines += ["", "## Decision", ""] + [f"- {line}" for line in self.recommendation + self.assumptions]
        if self.passes:
            lines += ["", "## Learning curve", ""] + [f"- {line}" for line in self.passes]
        if self.comparison is not None:
            lines += ["", "## Comparison", "", self.comparison.markdown()]
        return "\n".join(lines) + "\n"

    def write(self) -> dict[str, Path]:
        """decision.md and decision.json in the output folder, the comparison (table, plot, report) and the
        learning curve in `<out>/comparison`."""
        paths = self.comparison.write(self.folder / "comparison") if self.comparison is not None else {}
        if self.curve is not None and paths:
            paths["curve"] = paths["md"].parent / "learning_curve.png"
            self.curve.savefig(paths["curve"], dpi=130, bbox_inches="tight")
        paths["decision"] = self.folder / "decision.md"
        write_text(paths["decision"], self.markdown())
        paths["json"] = self.folder / "decision.json"
        write_json(
            paths["json"],
            {
                "found": self.found.lines(),
                "steps": [
                    {
                        "arm": step.arm.name,
                        "seed": step.seed,
                        "method": step.arm.method,
                        "recipe": str(self.folder / "recipes" / f"{step.arm.name}.yaml"),
                        "run_dir": step.recipe.output_dir,
                        "estimate_seconds": round(step.estimate, 1),
                        "seconds": round(step.seconds, 1),
                        "status": step.status,
                        "why": step.why,
                    }
                    for step in self.steps
                ],
                "recommendation": self.recommendation,
                "assumptions": self.assumptions,
                "learning_curve": self.passes,
            },
        )
        return paths


def decide(
    data: list[str | Path],
    eval: str | Path | None = None,
    corpus: str | Path | None = None,
    model: str = DEFAULT_MODEL,
    budget: str | float | None = None,
    seeds: list[int] | str | None = None,
    out: str | Path = "runs/decide",
    requests_per_month: int | None = None,
    price_per_gpu_hour: float | None = None,
    price_per_cpu_hour: float | None = None,
    system_prompt: str | None = None,
    prompt_template: str | None = None,
    overrides: tuple[str, ...] = (),
    train_overrides: tuple[str, ...] = (),
    plan_only: bool = False,
) -> Decision:
    """Plan, cost and run the arms `data` supports, cheapest first within `budget` (device time: "2h", "90m",
    "0.5gpu-h", or seconds), then compare them. `seeds` for the training arms (default: as many of 0, 1, 2 as the
    budget allows, one without a budget); `overrides` (`--set`) go to every arm, `train_overrides` to the training
    arms; `plan_only` writes the recipes and estimates and runs nothing."""
    seconds = budget if isinstance(budget, (int, float)) or budget is None else parse_budget(budget)
    folder = Path(out)
    own = {"recipes", "runs", "comparison", "decision.md", "decision.json"}
    if folder.is_dir() and any(entry.name not in own for entry in folder.iterdir()):
        raise TunerError(
            f"--out {folder}: the folder holds files tuner decide did not write "
            f"({', '.join(sorted(e.name for e in folder.iterdir() if e.name not in own)[:5])}); give a new folder "
            f"or one an earlier `tuner decide` wrote (its finished runs are kept)."
        )
    found = inventory(data, eval, corpus)
    arms = plan_arms(found, model, system_prompt, prompt_template)
    print("tuner decide found:\n" + "\n".join(f"  {line}" for line in found.lines()))
    recipes = {arm.name: _recipe(arm, folder, overrides, train_overrides) for arm in arms}
    clock = Clock(device_kind())
    steps, dropped = _costed(arms, recipes, clock)
    wanted = parse_seeds(seeds) if isinstance(seeds, str) else seeds
    chosen = wanted or _seeds_within(steps, seconds)
    steps = [_seeded(step, seed) for seed in chosen for step in steps if step.arm.trains or seed == chosen[0]]
    left, taken = seconds, []
    # Cheapest first by the estimates as they stand after each run (the runs before it time this machine), one
    # seed round after another, so the first seed of every arm runs before the spread of any.
    for seed in chosen:
        waiting = [step for step in steps if step.seed in (seed, None) and step.status == "planned"]
        waiting = [step for step in waiting if step.seed is not None or seed == chosen[0]]
        while waiting:
            step = min(waiting, key=clock.estimate)
            waiting.remove(step)
            left = _take(step, clock, left, plan_only)
            taken.append(step)
    steps = taken + [step for step in steps if step not in taken] + dropped  # in the order they were taken
    if plan_only:
        return Decision(found, steps, None, None, [], ["plan only: nothing ran"], folder)
    finished = [name for name in recipes if any(s.arm.name == name and s.status in ("ran", "kept") for s in steps)]
    if not finished:
        cheapest = min(
            (step for step in steps if step.status == "skipped"), key=lambda step: step.estimate, default=None
        )
        named = (
            f" (the cheapest, {cheapest.arm.name}, is estimated at {_duration(cheapest.estimate)})" if cheapest else ""
        )
        raise TunerError(
            f"no arm ran, so there is nothing to compare{named}. Give a larger --budget, or see the plan with "
            f"--plan-only; the recipes are in {folder / 'recipes'}."
        )
    comparison = compare(
        [str(folder / "runs" / name) for name in finished],
        price_per_gpu_hour=price_per_gpu_hour,
        price_per_cpu_hour=price_per_cpu_hour,
        requests_per_month=requests_per_month,
    )
    curve, passes = _learning_curve(comparison, steps, folder)
    decision = Decision(found, steps, comparison, curve, passes, _recommendation(comparison, steps), folder)
    decision.assumptions = _assumptions(comparison, requests_per_month, price_per_gpu_hour, price_per_cpu_hour)
    return decision


def _take(step: Step, clock: Clock, left: float | None, plan_only: bool) -> float | None:
    """Keep the step's finished run, or skip it (over the budget left), or run it; returns the budget left."""
    step.estimate = clock.estimate(step)
    done = finished_run(step.recipe)
    if done is not None:
        step.status, step.why = "kept", f"finished run in {done.run_dir}"
        return left
    if plan_only:
        return left
    if left is not None and step.estimate > left:
        step.status = "skipped"
        step.why = f"estimated {_duration(step.estimate)}, {_duration(max(left, 0))} of the budget left"
        print(f"tuner decide: {step.arm.name} skipped: {step.why}")
        return left
    print(f"tuner decide: running {step.arm.name}" + (f" (seed {step.seed})" if step.seed is not None else ""))
    started = time.perf_counter()
    result = module_for(step.recipe.method).run(step.recipe)
    step.seconds = time.perf_counter() - started
    step.status = "ran"
    clock.learn(step, result.metrics)
    return None if left is None else left - step.seconds


def _recipe(arm: Arm, folder: Path, overrides, train_overrides):
    """The arm's recipe file in `<out>/recipes/` (written once: an edited file is used as it stands), loaded with
    the overrides and its run folder."""
    path = folder / "recipes" / f"{arm.name}.yaml"
    planned = f"# tuner {arm.method} {path}\n# Planned by tuner decide: {arm.why}.\n"
    planned += yaml.safe_dump(arm.document, sort_keys=False)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, planned)
    elif path.read_text(encoding="utf-8") != planned:
        print(f"tuner decide: using {path} as edited (delete it to plan the arm afresh)")
    sets = [*overrides, *(train_overrides if arm.trains else ()), f"output_dir={folder / 'runs' / arm.name}"]
    return load_recipe(path, sets)


class Clock:
    """Seconds a run will take, from its dry run's tokens: scored tokens at the rate the prompt runs measured, trained
    tokens at the rate the training runs measured (from the scoring rate until one has), a training run's scoring
    corrected by what the last one took, plus the time a run spends loading; a prior from the device until then."""

    def __init__(self, device: str):
        self.rate: float | None = None  # seconds per scored token, per billion parameters
        self.train_rate: float | None = None  # seconds per trained token (x TRAIN_FACTOR), per billion parameters
        self.scoring_ratio = 1.0  # a training run's measured scoring time over its estimate (its tokens are rough)
        self.load = LOAD_SECONDS
        self.device = device

    def _scoring_rate(self) -> float:
        return self.rate if self.rate is not None else 2e9 / PRIOR_FLOPS.get(self.device, PRIOR_FLOPS["cpu"])

    def estimate(self, step: Step) -> float:
        work = step.work
        billions = work["parameters"] / 1e9
        scoring = work["eval_tokens"] * self._scoring_rate() * billions
        if not work["train_tokens"]:
            return self.load + scoring
        trained = work["train_tokens"] * TRAIN_FACTOR.get(step.recipe.method, 3.0)
        return self.load + scoring * self.scoring_ratio + trained * (self.train_rate or self._scoring_rate()) * billions

    def learn(self, step: Step, metrics: dict[str, Any]) -> None:
        """Rates from a finished run: a prompt run's scoring, a training run's training and its scoring's ratio."""
        phases = metrics.get("phases") or {}
        work = step.work
        billions = work["parameters"] / 1e9
        scored = (phases.get("eval") or {}).get("wall_seconds")
        if scored and work["eval_tokens"]:
            if work["train_tokens"]:
                self.scoring_ratio = scored / (work["eval_tokens"] * self._scoring_rate() * billions)
            else:
                self.rate = scored / work["eval_tokens"] / billions
        trained = (phases.get("train") or {}).get("wall_seconds")
        if trained and work["train_tokens"]:
            self.train_rate = trained / (work["train_tokens"] * TRAIN_FACTOR.get(step.recipe.method, 3.0)) / billions
        spent = sum((phases.get(name) or {}).get("wall_seconds") or 0 for name in ("data", "train", "eval"))
        if step.seconds > spent:
            self.load = step.seconds - spent


def _costed(arms: list[Arm], recipes: dict[str, Any], clock: Clock) -> tuple[list[Step], list[Step]]:
    """Each arm's dry run: its prompt tokens (and retrieval's recall, which keeps hybrid retrieval in or out),
    its training tokens and whether it fits in memory. Arms that cannot run are returned apart, with why."""
    steps, dropped = [], []
    recall = None
    for arm in arms:
        recipe = recipes[arm.name]
        step = Step(arm, None, recipe, 0.0)
        if arm.name == "rag-hybrid" and recall is not None and recall >= RECALL_ENOUGH:
            step.status = "left out"
            step.why = f"BM25 finds the answer's document for {recall:.0%} of questions (recall@{recipe.rag.k})"
            dropped.append(step)
            continue
        try:
            step.work = _work(recipe)
        except TunerError as error:
            step.status, step.why = "cannot run", str(error).splitlines()[0]
            dropped.append(step)
            continue
        if arm.name == "rag-bm25":
            recall = step.work.get("recall")
        if step.work.get("fits") is False:
            step.status = "does not fit"
            step.why = f"its dry run estimates {step.work['peak_mb']:,.0f} MB, more than this machine has"
            dropped.append(step)
            continue
        step.estimate = clock.estimate(step)
        steps.append(step)
    return steps, dropped


def _work(recipe) -> dict[str, Any]:
    """What a run computes, from its dry run: eval tokens (prompts and answers over the eval rows), training tokens
    (rows seen x tokens a row), parameters, and for training whether it fits, for retrieval the recall."""
    answer_tokens = 8 if recipe.eval.task == "choice" else recipe.eval.max_new_tokens * 4  # decoding reads it all
    with contextlib.redirect_stdout(io.StringIO()):  # the run prints these notices when it reads the same rows
        if recipe.method in ("fewshot", "rag"):
            preview = prompt_dry_run(recipe)
            found = preview.get("retrieval") or {}
            return {
                "parameters": float(_parameters(recipe)),
                "eval_tokens": float(preview["eval_rows"] * (preview["mean_prompt_tokens"] + answer_tokens)),
                "train_tokens": 0.0,
                "fits": None,
                "peak_mb": None,
                "recall": found.get(f"recall_at_{recipe.rag.k}") if recipe.rag else None,
            }
        estimate = dry_run(recipe)
        splits = load_data(recipe.data, seed=recipe.seed, source=recipe.source)
    settings = recipe.train_settings()
    batch = int(settings.get("per_device_train_batch_size", 8)) * int(settings.get("gradient_accumulation_steps", 1))
    # The estimate's batch is the longest one: its tokens a row bound the mean from above.
    per_row = estimate.batch_tokens / max(int(settings.get("per_device_train_batch_size", 8)), 1)
    seen = len(splits.train) * float(settings.get("num_train_epochs", 1) or 1)
    if int(settings.get("max_steps", -1) or -1) > 0:
        seen = min(seen, int(settings["max_steps"]) * batch)
    scored = len(splits.eval) * (2 if recipe.method in ("dpo", "kto") else 1)  # pairs scored beside the task
    return {
        "parameters": float(estimate.total_parameters),
        "eval_tokens": float(scored * (per_row + answer_tokens)),
        "train_tokens": float(seen * per_row),
        "fits": estimate.fits,
        "peak_mb": estimate.peak_mb,
        "recall": None,
    }


def _parameters(recipe) -> float:
    """A prompt run's parameter count from the model's config (no weights): embeddings and each layer's matrices."""
    config, _ = load_config_and_tokenizer(recipe.model, recipe.source)
    hidden = getattr(config, "hidden_size", 1024)
    layers = getattr(config, "num_hidden_layers", 12)
    inner = getattr(config, "intermediate_size", 4 * hidden)
    return config.vocab_size * hidden + layers * (4 * hidden * hidden + 3 * hidden * inner)


def _seeds_within(steps: list[Step], budget: float | None) -> list[int]:
    """As many of seeds 0, 1, 2 as the budget allows for the training arms (one without a budget)."""
    if budget is None:
        return [0]
    once = sum(step.estimate for step in steps if not step.arm.trains)
    trained = sum(step.estimate for step in steps if step.arm.trains)
    return next(([0, 1, 2][:n] for n in (3, 2) if once + n * trained <= budget), [0])


def _seeded(step: Step, seed: int) -> Step:
    """The step at `seed`: a training arm's run folder `<arm>/seed-<n>`; a prompt arm runs once."""
    if not step.arm.trains:
        return step
    recipe = plan(step.recipe, None, [seed])[0]
    return Step(step.arm, seed, recipe, step.estimate, work=step.work)


def _learning_curve(comparison: Comparison, steps: list[Step], folder: Path):
    """SFT's accuracy against its train rows beside the prompt arms, and the lines that say whether and where it
    passes the best of them; an extrapolation where no size run passes it."""
    task = comparison.tasks[0] if comparison.tasks else None
    rows = comparison.table.to_dict(orient="records")
    by_path = {str(Path(row["path"]).resolve()): row for row in rows}
    sizes = sorted({(s.arm.rows, s.arm.name) for s in steps if s.arm.rows and s.status in ("ran", "kept")})
    points = [
        ((("data.max_train_samples", size),), by_path[str((folder / "runs" / name).resolve())])
        for size, name in sizes
        if str((folder / "runs" / name).resolve()) in by_path
    ]
    prompt_names = {s.arm.name for s in steps if s.arm.method in ("fewshot", "rag") and s.status in ("ran", "kept")}
    baselines = [by_path[p] for p in (str((folder / "runs" / n).resolve()) for n in prompt_names) if p in by_path]
    if task is None or len(points) < 2 or not baselines:
        return None, []
    lines = pass_lines(points, baselines, task)
    best = max(baselines, key=lambda row: row[f"{task}_accuracy"])
    accuracies = [(size, row[f"{task}_accuracy"]) for ((_, size),), row in points]
    if all(accuracy <= best[f"{task}_accuracy"] for _, accuracy in accuracies):
        lines.append(_extrapolated(accuracies, best[f"{task}_accuracy"], best["method"]))
    return learning_curve(points, baselines, task), lines


def _extrapolated(accuracies: list[tuple[int, float]], target: float, name: str) -> str:
    """Where a straight line through accuracy against log train rows reaches `target` (a rough guide)."""
    xs = [math.log(size) for size, _ in accuracies]
    ys = [accuracy for _, accuracy in accuracies]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0
    if slope <= 0:
        return (
            f"SFT's accuracy did not rise with its train rows: more labelled rows of this kind are unlikely to "
            f"pass {name}."
        )
    exponent = mean_x + (target - mean_y) / slope
    largest = max(size for size, _ in accuracies)
    if exponent > math.log(100 * largest):  # a line that flat says only "not soon"
        return (
            f"more labelled rows are unlikely to pass {name} ({target:.3f}) soon: a straight line through accuracy "
            f"against log rows of the {len(xs)} sizes run reaches it beyond 100 times the {largest:,} rows run."
        )
    needed = math.exp(exponent)
    return (
        f"more labelled rows would likely pass {name} ({target:.3f}) at about {needed:,.0f} rows (a straight line "
        f"through accuracy against log rows of the {len(xs)} sizes run; a rough guide, not a measurement)."
    )


def _recommendation(comparison: Comparison, steps: list[Step]) -> list[str]:
    lines = [line for line in verdict(comparison) if line.startswith(("Recommendation", "Verdict"))]
    skipped = [s for s in steps if s.status in ("skipped", "does not fit", "cannot run")]
    if skipped:
        named = "; ".join(f"{s.arm.name}{'' if s.seed is None else f' seed {s.seed}'} ({s.why})" for s in skipped)
        lines.append(f"Not run, so not in the table: {named}.")
    return lines


def _assumptions(comparison: Comparison, requests: int | None, gpu_price: float | None, cpu_price: float | None):
    said = []
    if requests is None:
        said.append(
            "No request volume given: the recommendation weighs accuracy and one-off hours; --requests-per-month "
            "(with --price-per-gpu-hour or --price-per-cpu-hour) weighs serving cost too."
        )
    else:
        prices = ", ".join(
            f"{price} per {unit}-hour" for price, unit in ((gpu_price, "GPU"), (cpu_price, "CPU")) if price is not None
        )
        said.append(f"At {requests:,} requests a month{', ' + prices if prices else ''}, on this machine's latency.")
    said.append(f"Figures are this machine's ({comparison.units}); another machine or precision moves them.")
    return said


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
