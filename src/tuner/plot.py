"""The comparison plot: accuracy against training hours, one point per run with its 95% interval."""

from __future__ import annotations

from typing import Any


def accuracy_vs_training(rows: list[dict[str, Any]], task: str | None, units: str):
    """A matplotlib Figure of `task` accuracy (with interval bars) against training device-hours, labelled by
    method. Built without pyplot, so no window opens and no global figure state is touched."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.8))
    axes = figure.subplots()
    points = [row for row in rows if task and row.get(f"{task}_accuracy") is not None]
    labels = [row["method"] for row in points]
    for row in points:
        accuracy = row[f"{task}_accuracy"]
        low, high = row[f"{task}_ci_low"], row[f"{task}_ci_high"]
        label = row["method"] if labels.count(row["method"]) == 1 else f"{row['method']} [{row['run']}]"
        axes.errorbar([row["train_hours"]], [accuracy], yerr=[[accuracy - low], [high - accuracy]], fmt="o",
                      capsize=4, label=label)
        axes.annotate(label, (row["train_hours"], accuracy), textcoords="offset points", xytext=(6, 4), fontsize=8)
    axes.set_xlabel(f"training {units}-hours")
    axes.set_ylabel(f"{task} accuracy (95% CI)" if task else "accuracy")
    axes.set_ylim(0, 1.05)
    axes.set_title("Accuracy against training cost, one point per run")
    axes.grid(alpha=0.3)
    if points:
        axes.legend(fontsize=8, loc="lower right")
    else:
        axes.text(0.5, 0.5, "no run has a score to plot", ha="center", va="center", transform=axes.transAxes)
    return figure
