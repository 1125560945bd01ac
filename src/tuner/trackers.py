"""Experiment trackers: a run's own results (scores with their intervals, hours, latency, memory) logged to the
TensorBoard or MLflow store its training's loss went to, so a team reads tuner's figures where it reads TRL's.

Which trackers: `eval.report_to`, else the ones of `train.report_to` tuner can log to (`chosen`). Where: TensorBoard,
the event folder the training wrote (`TENSORBOARD_LOGGING_DIR`, else `<run>/checkpoints/runs/<time_host>`,
transformers' default), else `<run>/tensorboard`; MLflow, the run transformers' callback opened for the training
(found by the `output_dir` parameter it logged), else a new run named for the run folder, in the store and experiment
MLflow's own settings name (`MLFLOW_TRACKING_URI`, `MLFLOW_EXPERIMENT_NAME`). A tracker that fails does not lose the
run: its error is kept in metrics.json's `tracked` and said as a warning.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

from .secrets import redact

log = logging.getLogger(__name__)

# Tracker name (as TRL's `report_to` spells it) to the module its logging needs and the package that provides it.
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
TRACKERS = tuple(PACKAGES)
# Metrics tuner logs under this prefix, apart from the trainer's own (`train/loss`, `loss`).
PREFIX = "tuner/"


def installed(name: str) -> bool:
    """Whether the package tracker `name` logs through is importable (found without importing it)."""
    return importlib.util.find_spec(PACKAGES[name][0]) is not None


def named_in_train(recipe) -> list[str]:
    """The trackers `train.report_to` names (TRL's spelling: a name, a list, `all` or `none`); none for methods that
    do not train."""
    if "report_to" not in recipe.train_settings():
        return []
    value = recipe.train_settings()["report_to"]
    names = [value] if isinstance(value, str) else list(value or [])
    return [name for name in names if name not in ("none", None)]


def chosen(recipe) -> list[str]:
    """The trackers tuner logs this run's results to: `eval.report_to` when given, else those of `train.report_to`
    it knows (`all`: those installed)."""
    if recipe.eval.report_to is not None:
        return list(recipe.eval.report_to)
    names = named_in_train(recipe)
    if "all" in names:
        return [name for name in TRACKERS if installed(name)]
    return [name for name in TRACKERS if name in names]


def scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number in a run's metrics, nested keys joined by '/' (`eval/accuracy`, `phases/train/cpu_hours`), an
    interval's ends as `/low` and `/high` (`eval/accuracy_ci95/low`); flags, text and other lists are left out."""
    found: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(scalars(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = float(value)
        elif isinstance(value, list | tuple) and name.endswith("_ci95") and len(value) == 2:
            found[f"{name}/low"], found[f"{name}/high"] = float(value[0]), float(value[1])
    return found


def summary(metrics: dict[str, Any]) -> str:
    """The run's scores as a short Markdown table (one line per evaluation), for the tracker's text panel."""
    lines = ["| evaluation | task | accuracy | 95% interval | rows | ms/example |", "|---|---|---|---|---|---|"]
    for key, scores in sorted(metrics.items()):
        if key.startswith("eval") and isinstance(scores, dict) and "accuracy" in scores:
            interval = scores.get("accuracy_ci95")
            bounds = f"{interval[0]:.4f}-{interval[1]:.4f}" if interval else ""
            lines.append(
                f"| {key} | {scores.get('task', '')} | {scores['accuracy']:.4f} | {bounds} | {scores.get('rows', '')} "
                f"| {scores.get('latency_ms_per_example', '')} |"
            )
    return "\n".join(lines)


def tensorboard_folder(run_dir: Path) -> Path:
    """Where TensorBoard's events of this run go: `TENSORBOARD_LOGGING_DIR` (transformers reads it too), else the
    newest event folder the training wrote under `<run>/checkpoints/runs`, else `<run>/tensorboard`."""
    if os.environ.get("TENSORBOARD_LOGGING_DIR"):
        return Path(os.path.expanduser(os.environ["TENSORBOARD_LOGGING_DIR"]))
    trained = [p.parent for p in (run_dir / "checkpoints" / "runs").glob("*/events.out.tfevents.*")]
    return max(trained, key=lambda p: p.stat().st_mtime) if trained else run_dir / "tensorboard"


def _tensorboard(run_dir: Path, values: dict[str, float], text: str, step: int, params: dict[str, str]) -> str:
    from torch.utils.tensorboard import SummaryWriter

    folder = tensorboard_folder(run_dir)
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for key, value in values.items():
            writer.add_scalar(PREFIX + key, value, step)
        writer.add_text(PREFIX + "results", text, step)
        writer.add_text(PREFIX + "run", "\n".join(f"- {k}: {v}" for k, v in params.items()), step)
    finally:
        writer.close()
    return str(folder)


def _training_run(client, run_dir: Path):
    """The MLflow run transformers' callback logged this run's training into, or None."""
    checkpoints = str(run_dir / "checkpoints").replace("\\", "\\\\").replace("'", "\\'")
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(
        experiments, filter_string=f"params.output_dir = '{checkpoints}'", order_by=["attributes.start_time DESC"]
    )
    return found[0] if found else None


def _mlflow(run_dir: Path, values: dict[str, float], text: str, step: int, params: dict[str, str]) -> str:
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = _training_run(client, run_dir)
    if run is None:
        # A run of its own, under the user's active run (a notebook's) when there is one; else in the experiment
        # MLflow's environment names, looked up in this store (as transformers' callback does: the id MLflow last
        # resolved may be another store's).
        if mlflow.active_run() is None and os.environ.get("MLFLOW_EXPERIMENT_NAME"):
            mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
        with mlflow.start_run(run_name=run_dir.name, nested=mlflow.active_run() is not None) as started:
            run_id = started.info.run_id
    else:
        run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(PREFIX + key, value, now, step) for key, value in values.items()]
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    client.log_batch(
        run_id,
        params=[Param(f"tuner.{key}", value[:6000]) for key, value in params.items()],
        tags=[RunTag("tuner.results", text[:8000]), RunTag("tuner.run_dir", str(run_dir))],
    )
    return run_id


WRITERS = {"tensorboard": _tensorboard, "mlflow": _mlflow}


def _comparison_tensorboard(folder: Path, values: dict[str, float], text: str) -> str:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
    try:
        for key, value in values.items():
            writer.add_scalar(PREFIX + "comparison/" + key, value, 0)
        writer.add_text(PREFIX + "comparison", text, 0)
    finally:
        writer.close()
    return str(folder / "tensorboard")


def _comparison_mlflow(folder: Path, values: dict[str, float], text: str) -> str:
    import mlflow
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    if mlflow.active_run() is None and os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
    with mlflow.start_run(run_name=f"comparison {folder.name}", nested=mlflow.active_run() is not None) as started:
        run_id = started.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(PREFIX + "comparison/" + key, value, now, 0) for key, value in values.items()]
    client = MlflowClient()
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    # A tag holds 8,000 characters: the table's head and notes when it is longer (comparison.md has it whole).
    client.log_batch(run_id, tags=[RunTag("tuner.comparison", text[:8000]), RunTag("tuner.folder", str(folder))])
    return run_id


COMPARISON_WRITERS = {"tensorboard": _comparison_tensorboard, "mlflow": _comparison_mlflow}


def log_comparison(names: list[str], folder: Path, runs: list[dict[str, Any]], text: str) -> dict[str, Any]:
    """Log a comparison to trackers: each run's numbers (`tuner/comparison/<run>/<column>`: accuracy, its interval,
    hours, latency, cost, break-even) and the table as Markdown; TensorBoard in `<folder>/tensorboard`, MLflow as a
    run named for the comparison. Returns where each went, or its error (the comparison's files are written first)."""
    values = {}
    for run in runs:
        for key, value in run.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and value == value:  # NaN: no value
                values[f"{run['run']}/{key}"] = float(value)
    tracked: dict[str, Any] = {}
    for name in names:
        try:
            tracked[name] = COMPARISON_WRITERS[name](Path(folder), values, text)
        except Exception as error:
            cause = redact(f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}")
            log.warning("%s: the comparison is written, but logging it to %s failed: %s", folder, name, cause)
            tracked[name] = {"error": cause}
    return tracked


def log_results(run_dir: Path, metrics: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """Log a finished run's metrics to the trackers its manifest names (`manifest['trackers']`); returns where each
    went (an event folder, an MLflow run id) or the error that stopped it."""
    names = manifest.get("trackers") or []
    if not names:
        return {}
    values = scalars(metrics)
    text = summary(metrics)
    params = {
        "method": str(manifest.get("method")),
        "model": str((manifest.get("model") or {}).get("name_or_path")),
        "seed": str(manifest.get("seed")),
        "recipe_file": str(manifest.get("recipe_file")),
        "run_dir": str(run_dir),
        "precision": str(manifest.get("precision")),
    }
    params = {key: redact(value) for key, value in params.items()}
    step = int(metrics.get("train_steps") or 0)
    tracked: dict[str, Any] = {}
    for name in names:
        try:
            tracked[name] = WRITERS[name](Path(run_dir), values, text, step, params)
        except Exception as error:  # the run is finished and kept whatever the tracker does
            cause = redact(f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}")
            log.warning("%s: the run is saved, but logging its results to %s failed: %s", run_dir, name, cause)
            tracked[name] = {"error": cause}
    return tracked
