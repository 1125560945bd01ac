"""The comparison plot: accuracy against one-off cost (training or indexing hours) and against latency per request,
one point per run with its 95% interval; a sweep's learning curve: accuracy against the swept value, with the
spread over seeds and the prompt baselines as horizontal lines; and a classification's confusion heat map."""

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
    _panel(
        cost,
        points,
        task,
        _one_off,
        f"one-off {units}-hours (training + indexing)",
        "Accuracy against one-off cost, one point per run",
    )
    timed = [row for row in points if row.get("latency_ms") is not None]
    _panel(
        latency,
        timed,
        task,
        lambda row: row["latency_ms"],
        "ms per request (retrieval included)",
        "Accuracy against latency per request",
    )
    cost.legend(fontsize=8, loc="best")
    return figure


def learning_curve(
    points: list[tuple[tuple[tuple[str, Any], ...], dict[str, Any]]], baselines: list[dict[str, Any]], task: str | None
):
    """A matplotlib Figure: `task` accuracy (mean over seeds; bars span the seeds' min-max, or the eval interval for
    one seed) against the first swept key, one line per setting of the other keys, each baseline a horizontal line
    with its interval shaded. `points`: ((key, value), ...) with the comparison row scored there."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5))
    axes = figure.subplots()
    if task is None or not points:
        axes.text(0.5, 0.5, "no run has a score to plot", ha="center", va="center", transform=axes.transAxes)
        return figure
    key = points[0][0][0][0]
    series: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for point, row in points:
        series.setdefault(", ".join(f"{k}={v}" for k, v in point[1:]), []).append((point[0][1], row))
    for name, curve in series.items():
        xs = [value for value, _ in curve]
        means = [row[f"{task}_accuracy"] for _, row in curve]
        lows = [
            row[f"{task}_spread_low"] if row.get(f"{task}_spread_low") is not None else row[f"{task}_ci_low"]
            for _, row in curve
        ]
        highs = [
            row[f"{task}_spread_high"] if row.get(f"{task}_spread_high") is not None else row[f"{task}_ci_high"]
            for _, row in curve
        ]
        seeds = max(len(row.get("seeds") or [None]) for _, row in curve)
        label = f"{curve[0][1]['method']}{f' ({name})' if name else ''}, " + (
            f"mean of {seeds} seeds (bars: min-max)" if seeds > 1 else "one seed (bars: 95% eval interval)"
        )
        axes.errorbar(
            xs,
            means,
            yerr=[[m - lo for m, lo in zip(means, lows)], [hi - m for m, hi in zip(means, highs)]],
            fmt="o-",
            capsize=4,
            label=label,
        )
    for number, row in enumerate(baselines):
        colour = f"C{(number + len(series)) % 10}"
        axes.axhline(
            row[f"{task}_accuracy"],
            color=colour,
            linestyle="--",
            label=f"{row['method']} ({row[f'{task}_accuracy']:.3f}; band: 95% interval)",
        )
        axes.axhspan(row[f"{task}_ci_low"], row[f"{task}_ci_high"], color=colour, alpha=0.12)
    values = sorted({point[0][1] for point, _ in points}, key=str)
    if all(isinstance(value, int | float) and not isinstance(value, bool) and value > 0 for value in values):
        # Row counts and learning rates grow by factors: equal steps on a log axis.
        values = sorted(values)
        axes.set_xscale("log")
        axes.set_xticks(values, [str(value) for value in values])
        axes.minorticks_off()
    axes.set_xlabel(key)
    axes.set_ylabel(f"{task} {points[0][1].get(f'{task}_metric') or 'accuracy'}")  # recall@3 for retrieval alone
    axes.set_ylim(0, 1.05)
    axes.set_title(f"Accuracy against {key}", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return figure


def confusion_heatmap(labels: list[str], matrix: list[list[int]], title: str):
    """Gold (rows) against predicted (columns) counts as a heat map, each cell's count written in it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 2.5 + 0.45 * len(labels)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(title)
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                axes.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if count > top / 2 else "black",
                )
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    return figure
