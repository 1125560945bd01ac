"""The comparison table as text: its cells (hours, counts, intervals, latency with retrieval's share) and the
Markdown `tuner compare` prints and writes, with the notes and the reproducibility section under it."""

from __future__ import annotations

from typing import Any

from .verdict import lines as verdict_lines
from .verdict import missing as _missing


def _fmt_hours(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    return f"0 {unit}-h" if value == 0 else f"{value:.3g} {unit}-h"


def _fmt_count(value: int | None) -> str:
    if value is None:
        return ""
    if value == 0:
        return "0"
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value:,}"


def display_rows(comparison) -> tuple[list[str], list[list[str]]]:
    """The table as text cells: header and rows, as Markdown and the terminal show it."""
    table = comparison.table
    header = ["run", "method", "model"]
    # A change column only for tasks the baseline was scored on.
    deltas = {task: table[f"{task}_delta"].notna().any() for task in comparison.tasks}
    seeded = several_seeds(comparison)
    f1 = {task: f"{task}_macro_f1" in table and table[f"{task}_macro_f1"].notna().any() for task in comparison.tasks}
    also = {task: any(_also(row, task) for row in table.to_dict("records")) for task in comparison.tasks}
    for task in comparison.tasks:
        header += (
            [f"{task} {metric_name(comparison, task)} [95% CI] (rows)"]
            + ([f"{task} macro-F1"] if f1[task] else [])
            + ([f"{task} other metrics"] if also[task] else [])
            + ([f"{task} across seeds"] if seeded else [])
            + ([f"Δ {task} vs baseline"] if deltas[task] else [])
        )
    retrieval = table["retrieval_ms"].notna().any()
    grounded = "groundedness" in table and table["groundedness"].notna().any()
    header += ["grounded (answer found, not used)"] if grounded else []
    header += ["train hours"] + (["index hours"] if retrieval else []) + ["eval hours"]
    header += [
        "ms/example (retrieval)" if retrieval else "ms/example",
        "prompt tokens",
        "peak memory",
        "trainable params",
    ]
    break_even = "break_even_requests" in table and table["break_even_requests"].notna().any()
    if break_even:
        header.append("break-even (requests)")
    if "cost" in table:
        header += ["cost", "cost / 1k requests"]
    header.append("notes")
    lines = []
    for row in table.to_dict(orient="records"):
        cells = [
            row["run"] + (" (baseline)" if row["run"] == comparison.baseline else ""),
            _text(row["method"]),
            _text(row["model"]),
        ]
        for task in comparison.tasks:
            accuracy = row[f"{task}_accuracy"]
            cells.append(
                ""
                if _missing(accuracy)
                else f"{accuracy:.3f} [{row[f'{task}_ci_low']:.3f}, {row[f'{task}_ci_high']:.3f}] "
                f"({int(row[f'{task}_rows'])})"
            )
            if f1[task]:
                cells.append("" if _missing(row[f"{task}_macro_f1"]) else f"{row[f'{task}_macro_f1']:.3f}")
            if also[task]:
                cells.append(_also(row, task))
            if seeded:
                cells.append(_spread(row, task))
            if deltas[task]:
                cells.append(_delta(row, task))
        if grounded:
            cells.append(
                ""
                if _missing(row["groundedness"])
                else f"{row['groundedness']:.3f} ({_number(row['answer_found_not_used_rate'])})"
            )
        cells.append(_fmt_hours(None if _missing(row["train_hours"]) else row["train_hours"], row["hours_unit"]))
        if retrieval:
            cells.append(_fmt_hours(None if _missing(row["index_hours"]) else row["index_hours"], row["hours_unit"]))
        latency = "" if _missing(row["latency_ms"]) else f"{row['latency_ms']:.1f}"
        if retrieval and not _missing(row["retrieval_ms"]):
            latency += f" ({row['retrieval_ms']:.1f})"
        cells += [
            _fmt_hours(None if _missing(row["eval_hours"]) else row["eval_hours"], row["hours_unit"]),
            latency,
            "" if _missing(row["prompt_tokens"]) else f"{row['prompt_tokens']:.0f}",
            "" if _missing(row["peak_memory_mb"]) else f"{row['peak_memory_mb']:,.0f} MB {row['memory_kind']}",
            _fmt_count(None if _missing(row["trainable_parameters"]) else int(row["trainable_parameters"])),
        ]
        if break_even:
            cells.append(
                ""
                if _missing(row["break_even_requests"])
                else f"{int(row['break_even_requests']):,} vs {row['break_even_against']}"
            )
        if "cost" in table:
            cells += [
                "" if _missing(row["cost"]) else f"{row['cost']:.4g}",
                "" if _missing(row["cost_per_1k_requests"]) else f"{row['cost_per_1k_requests']:.4g}",
            ]
        cells.append(_text(row["notes"]))
        lines.append(cells)
    return header, lines


def several_seeds(comparison) -> bool:
    """Whether any row of the table merges runs of several seeds."""
    return "seeds" in comparison.table and any(len(seeds or ()) > 1 for seeds in comparison.table["seeds"])


def _spread(row: dict[str, Any], task: str) -> str:
    """How far a row's accuracy moves with the seed: min-max over its seeds, and the standard deviation from three."""
    seeds = list(row.get("seeds") or [])
    if _missing(row.get(f"{task}_accuracy")):
        return ""
    if len(seeds) <= 1:
        return f"1 seed ({seeds[0]})" if seeds and seeds[0] is not None else "1 run"
    if _missing(row.get(f"{task}_spread_low")):
        return f"{len(seeds)} seeds"
    text = f"{len(seeds)} seeds: {row[f'{task}_spread_low']:.3f}-{row[f'{task}_spread_high']:.3f}"
    return text + ("" if _missing(row.get(f"{task}_std")) else f", sd {row[f'{task}_std']:.3f}")


def seed_lines(comparison) -> list[str]:
    """Each seed's accuracy with its own eval interval, for rows of several seeds."""
    lines = []
    for row in comparison.table.to_dict(orient="records"):
        seeds = list(row.get("seeds") or [])
        if len(seeds) <= 1:
            continue
        for task in comparison.tasks:
            if _missing(row[f"{task}_accuracy"]):
                continue
            scores = zip(seeds, row[f"{task}_seed_accuracy"], row[f"{task}_seed_ci"])
            lines.append(
                f"- {row['run']} ({task}): "
                + "; ".join(
                    f"seed {seed} {accuracy:.3f} [{low:.3f}, {high:.3f}]"
                    for seed, accuracy, (low, high) in scores
                    if not _missing(accuracy)
                )
            )
    return lines


def _delta(row: dict[str, Any], task: str) -> str:
    """The change against the group's baseline, with its paired 95% interval when there is one; `n.s.` when it is
    not beyond noise (the exact test's p is 0.05 or more, or the interval covers zero)."""
    delta = row[f"{task}_delta"]
    if _missing(delta):
        return ""
    text = f"{100 * delta:+.1f} pt"
    group = row.get(f"{task}_group")
    if not _missing(group) and group > 1 and row.get(f"{task}_group_baseline") == row["run"]:
        return f"{text} (baseline of group {int(group)})"
    low, high = row[f"{task}_delta_ci_low"], row[f"{task}_delta_ci_high"]
    if _missing(low):
        return text
    return f"{text} [{100 * low:+.1f}, {100 * high:+.1f}]" + ("" if row[f"{task}_delta_distinguishable"] else " n.s.")


def verdict(comparison) -> list[str]:
    """The table in plain words, per task and group of runs scored on the same rows (`verdict.lines`): the most
    accurate run or the tie at the top, the runs beyond noise of the baseline, the fastest per request, break-even,
    a warning when the eval rows are too few to separate the runs, and the recommendation."""
    rows = comparison.table.to_dict(orient="records")
    found = []
    for task in comparison.tasks:
        found += verdict_lines(
            rows, task, comparison.groups.get(task, []), comparison.requests_per_month, comparison.prices
        )
    return found


def metric_name(comparison, task: str) -> str:
    """The name of the score a task's column shows: `accuracy`, or a free-form metric (`contains`, `token_f1`...)
    when every run of the task was scored by it; `score` when runs differ."""
    names = {name for name in comparison.table.get(f"{task}_metric", []) if not _missing(name)}
    return names.pop().replace("_", " ") if len(names) == 1 else "score"


def _also(row: dict[str, Any], task: str) -> str:
    """A free-form run's other metrics and the share of its replies cut at `eval.max_new_tokens`."""
    found = row.get(f"{task}_other_metrics")
    text = ", ".join(f"{name} {value:.3f}" for name, value in (found or {}).items()) if isinstance(found, dict) else ""
    cut = row.get(f"{task}_truncated_share")
    return text + (f"; {100 * cut:.0f}% cut at max tokens" if not _missing(cut) and cut else "")


def _number(value: Any) -> str:
    return "" if _missing(value) else f"{value:.3f}"


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def notes(comparison, header: list[str]) -> list[str]:
    """The paragraphs that explain the table (units, seeds, break-even, index hours), in the order Markdown prints
    them around the verdict; the report shows the same ones."""
    found = [
        f"Hours are {comparison.units}-hours: wall time x processes. Intervals are 95%: Wilson's for a score; for "
        f"Δ, the change against the baseline on the same rows and prompts, Newcombe's paired interval, and n.s. "
        f"unless a paired exact test (McNemar's for right/wrong rows, sign flips for graded scores) gives "
        f"p < 0.05 and the interval excludes zero; runs scored on other rows or prompts are compared within "
        f"their own group (notes say which)."
    ]
    if several_seeds(comparison):
        found.append(
            "\n".join(
                [
                    "Rows of several seeds (runs differing only by seed) show the mean over seeds; its "
                    "interval and Δ's are widened to a bootstrap over eval rows and seeds together, and Δ's test "
                    "reads each row's mean over seeds. Each seed alone:",
                    *seed_lines(comparison),
                ]
            )
        )
    if "break-even (requests)" in header:
        found.append(
            "Break-even: the requests after which a run's one-off hours (training, indexing) are paid back "
            "by its faster requests against the most accurate prompt-side run on the same rows (few-shot or "
            "retrieval, whose prompts are longer), at the ms/example measured here, only where the two "
            "latencies' 95% intervals (bootstrap over the rows) do not overlap; cost / 1k requests is that "
            "latency priced."
        )
    table = comparison.table
    if "price_per_request" in table and table["price_per_request"].notna().any():
        found.append(
            "A served run (`model.endpoint`: a hosted API or a serving engine) is priced per token: its cost / 1k "
            "requests is the tokens its requests used at the recipe's prices, its ms/example the server's wall time "
            "per row at the recipe's concurrency (each request's p50 and p95 are in its metrics.json, `served`); a "
            "tuned run's break-even against it is in money, at the device price given."
        )
    if "index hours" in header:
        found.append(
            "Index hours: building the retrieval index (a one-off, like training; a reused index counts its "
            "build). ms/example is a request's latency, retrieval included; in brackets, retrieval's share. "
            "Prompt tokens: the length of each request's prompt, passages included."
        )
    return found


def markdown(comparison) -> str:
    """The table as Markdown, with the notes and what differs between the runs."""
    header, lines = display_rows(comparison)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in lines]
    paragraphs = notes(comparison, header)
    # The verdict follows the units and the seeds (when there are several), before break-even and index hours.
    before = 1 + several_seeds(comparison)
    for paragraph in paragraphs[:before]:
        out += ["", paragraph]
    if comparison.tasks:
        out.append("")
        out.extend(verdict(comparison))
    for paragraph in paragraphs[before:]:
        out += ["", paragraph]
    same, differs = comparison.differences["same"], comparison.differences["differs"]
    if same:
        out.append("")
        out.append("Same in every run: " + "; ".join(f"{key} {value}" for key, value in same.items()) + ".")
    out.append("")
    if differs:
        out.append("Differs between runs beyond the method:")
        for key, by_value in differs.items():
            out.append(f"- {key}: " + "; ".join(f"{value} ({', '.join(names)})" for value, names in by_value.items()))
    else:
        out.append("Nothing else differs between the runs (seed, precision, versions, hardware, code, model file).")
    if comparison.problems:
        out.append("")
        out.append("Problems: " + "; ".join(comparison.problems) + ".")
    return "\n".join(out) + "\n"
