"""The comparison table as text: its cells (hours, counts, intervals, latency with retrieval's share) and the
Markdown `tuner compare` prints and writes, with the notes and the reproducibility section under it."""

from __future__ import annotations

from typing import Any


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
    for task in comparison.tasks:
        header += (
            [f"{task} accuracy [95% CI] (rows)"]
            + ([f"{task} macro-F1"] if f1[task] else [])
            + ([f"{task} across seeds"] if seeded else [])
            + ([f"Δ {task} vs baseline"] if deltas[task] else [])
        )
    retrieval = table["retrieval_ms"].notna().any()
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
            if seeded:
                cells.append(_spread(row, task))
            if deltas[task]:
                cells.append(_delta(row, task))
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
    """The change against the baseline, with its paired 95% interval when there is one; `n.s.` when that interval
    covers zero."""
    delta = row[f"{task}_delta"]
    if _missing(delta):
        return ""
    text = f"{100 * delta:+.1f} pt"
    low, high = row[f"{task}_delta_ci_low"], row[f"{task}_delta_ci_high"]
    if _missing(low):
        return text
    return f"{text} [{100 * low:+.1f}, {100 * high:+.1f}]" + ("" if row[f"{task}_delta_distinguishable"] else " n.s.")


def verdict(comparison) -> list[str]:
    """The table in plain words, per task: the most accurate run, which runs differ from the baseline beyond the
    noise of the eval rows (paired intervals), the fastest per request, and the cheapest one-off among the runs
    that beat the baseline."""
    rows = comparison.table.to_dict(orient="records")
    lines = []
    for task in comparison.tasks:
        scored = [row for row in rows if not _missing(row[f"{task}_accuracy"])]
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda row: row[f"{task}_accuracy"])
        words = [f"most accurate: {best['run']} ({best['method']}, {best[f'{task}_accuracy']:.3f})"]
        paired = [
            row
            for row in scored
            if row[f"{task}_delta_distinguishable"] is not None and not _missing(row[f"{task}_delta_distinguishable"])
        ]
        better = [row for row in paired if row[f"{task}_delta_distinguishable"] and row[f"{task}_delta"] > 0]
        if paired:
            same = [row["run"] for row in paired if not row[f"{task}_delta_distinguishable"]]
            worse = [row["run"] for row in paired if row[f"{task}_delta_distinguishable"] and row[f"{task}_delta"] < 0]
            words.append("better than the baseline beyond noise: " + (", ".join(r["run"] for r in better) or "none"))
            if same:
                words.append("not distinguishable from it: " + ", ".join(same))
            if worse:
                words.append("worse: " + ", ".join(worse))
        timed = [row for row in scored if not _missing(row["latency_ms"])]
        if timed:
            fastest = min(timed, key=lambda row: row["latency_ms"])
            words.append(f"fastest per request: {fastest['run']} ({fastest['latency_ms']:.1f} ms)")
        if better:
            cheapest = min(better, key=lambda row: (row["train_hours"] or 0) + (row.get("index_hours") or 0))
            words.append(f"cheapest one-off among those beating the baseline: {cheapest['run']}")
        repaid = [row for row in scored if not _missing(row.get("break_even_requests"))]
        for row in repaid:
            words.append(
                f"{row['run']} repays its one-off cost against {row['break_even_against']} after "
                f"{int(row['break_even_requests']):,} requests"
            )
        lines.append(f"Verdict ({task}): " + "; ".join(words) + ".")
    return lines


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def notes(comparison, header: list[str]) -> list[str]:
    """The paragraphs that explain the table (units, seeds, break-even, index hours), in the order Markdown prints
    them around the verdict; the report shows the same ones."""
    found = [
        f"Hours are {comparison.units}-hours: wall time x processes. Δ is accuracy points against the "
        f"baseline on the same rows and prompts, with its 95% interval by paired bootstrap over those rows "
        f"(n.s.: the interval covers zero, not distinguishable from the noise of the eval rows); runs scored "
        f"otherwise are flagged in notes and get none."
    ]
    if several_seeds(comparison):
        found.append(
            "\n".join(
                [
                    "Rows of several seeds (runs differing only by seed) show the mean over seeds; its "
                    "interval and Δ's are by bootstrap over eval rows and seeds together. Each seed alone:",
                    *seed_lines(comparison),
                ]
            )
        )
    if "break-even (requests)" in header:
        found.append(
            "Break-even: the requests after which a run's one-off hours (training, indexing) are paid back "
            "by its faster requests against the most accurate prompt-side run (few-shot or retrieval, whose "
            "prompts are longer), at the ms/example measured here; cost / 1k requests is that latency "
            "priced."
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
