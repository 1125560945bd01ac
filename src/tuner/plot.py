"""The comparison plot: accuracy against one-off cost (training or indexing hours) and against latency per request,
one point per run with its 95% interval."""

from __future__ import annotations

from typing import Any


def _panel(axes, points: list[dict[str, Any]], task: str, x_of, xlabel: str, title: str) -> None:
    labels = [row["method"] for row in points]
    for row in points:
        accuracy = row[f"{task}_accuracy"]
        low, high = row[f"{task}_ci_low"], row[f"{task}_ci_high"]
        label = row["method"] if labels.count(row["method"]) == 1 else f"{row['method']} [{row['run']}]"
        x = x_of(row)
        axes.errorbar([x], [accuracy], yerr=[[accuracy - low], [high - accuracy]], fmt="o", capsize=4, label=label)
        axes.annotate(label, (x, accuracy), textcoords="offset points", xytext=(6, 4), fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(f"{task} accuracy (95% CI)")
    axes.set_ylim(0, 1.05)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)


def _one_off(row: dict[str, Any]) -> float:
    return (row.get("train_hours") or 0.0) + (row.get("index_hours") or 0.0)


def accuracy_vs_training(rows: list[dict[str, Any]], task: str | None, units: str):
    """A matplotlib Figure of `task` accuracy (with interval bars), left against one-off device-hours (training,
    plus indexing for retrieval), right against ms per request (retrieval included), labelled by method. Built
    without pyplot, so no window opens and no global figure state is touched."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 4.8))
    cost, latency = figure.subplots(1, 2)
    points = [row for row in rows if task and row.get(f"{task}_accuracy") is not None]
    if not points:
        for axes in (cost, latency):
            axes.text(0.5, 0.5, "no run has a score to plot", ha="center", va="center", transform=axes.transAxes)
        return figure
    _panel(cost, points, task, _one_off, f"one-off {units}-hours (training + indexing)",
           "Accuracy against one-off cost, one point per run")
    timed = [row for row in points if row.get("latency_ms") is not None]
    _panel(latency, timed, task, lambda row: row["latency_ms"], "ms per request (retrieval included)",
           "Accuracy against latency per request")
    cost.legend(fontsize=8, loc="lower right")
    return figure
