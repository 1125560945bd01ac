"""The decision report: a comparison as one self-contained HTML page (data, styles and scripts inline; no network).

It holds the verdict and the table (compare's own cells, sortable, intervals drawn as bars, the baseline marked), the
trade-off plots (accuracy against one-off hours and against ms per request, and the learning curve when the runs form
a sweep), what differs between the runs, each run's recipe, machine, versions and, for choice tasks, confusion matrix
with per-label accuracy, and a browser of the eval rows with every run's answer side by side (filterable to the rows
where runs disagree or all fail, paged, the prompt as the model saw it one click away).

Everything is read from the `Comparison` the CLI and the notebook use (its table, cells, verdict and differences) and
from the run folders its rows name: the page computes no figure of its own.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from .confusion import confusion_matrix, per_label_accuracy
from .runs import predictions_file, read_predictions
from .secrets import redact
from .table import display_rows, notes, verdict

TEMPLATE = "report_page.html"
SPECIAL = re.compile(r"<\|[^|]*\|>|<s>|</s>|\[/?INST\]")
SWEEP_POINT = re.compile(r"^(?P<key>[\w.]+)=(?P<value>[-+]?\d*\.?\d+(e[-+]?\d+)?)$")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _question(prompt: Any) -> str:
    """The end of a rendered prompt, without chat markup: what the row asks, short enough for a table cell."""
    text = re.split(r"(?:^|\s)user\s*\n", SPECIAL.sub(" ", str(prompt)))[-1]  # the last user turn of a chat
    text = re.sub(r"\s*(assistant|model)\s*$", "", text.strip())
    text = " ".join(text.split())
    return text if len(text) <= 180 else "…" + text[-179:]


def _predictions(run_dir: Path, metrics: dict[str, Any], task: str) -> list[dict[str, Any]] | None:
    path = predictions_file(run_dir, metrics, task)
    try:
        return read_predictions(path) if path is not None else None
    except (OSError, ValueError, KeyError):
        return None


def _confusion(members: list[Path], task: str) -> dict[str, Any] | None:
    """Gold against predicted label counts over every seed's predictions, and each gold label's accuracy."""
    pairs = []
    for member in members:
        found = _predictions(member, _read(member / "metrics.json"), task) or []
        pairs += [(str(p.get("gold")), str(p.get("prediction"))) for p in found]
    if not pairs:
        return None
    labels, matrix = confusion_matrix([gold for gold, _ in pairs], [predicted for _, predicted in pairs])
    return {
        "task": task,
        "labels": labels,
        "matrix": matrix,
        "accuracy": per_label_accuracy(labels, matrix),
        "seeds": len(members),
    }


def _facts(manifest: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    hardware, versions = manifest.get("hardware") or {}, manifest.get("versions") or {}
    facts = {
        "folder": row["path"],
        "seeds": ", ".join(str(s) for s in row.get("seeds") or []) or "",
        "device": hardware.get("device_name") or hardware.get("cpu") or hardware.get("device"),
        "precision": manifest.get("precision"),
        "model": (manifest.get("model") or {}).get("name_or_path"),
        "train rows": (manifest.get("data") or {}).get("train_rows"),
        "train data fingerprint": str((manifest.get("data") or {}).get("train_fingerprint") or "")[:16],
        "eval data fingerprint": str((manifest.get("data") or {}).get("eval_fingerprint") or "")[:16],
    }
    facts.update({name: version for name, version in versions.items() if version})
    return {k: v for k, v in facts.items() if v not in (None, "")}


def _run(row: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    members = [Path(p) for p in row.get("run_paths") or [row["path"]]]
    recipe_file = members[0] / "recipe.yaml"
    recipe = recipe_file.read_text(encoding="utf-8") if recipe_file.is_file() else None
    confusion = [found for task in tasks if task == "choice" for found in [_confusion(members, task)] if found]
    return {
        "name": row["run"],
        "method": row.get("method"),
        "recipe": redact(recipe) if recipe else None,
        "facts": _facts(_read(members[0] / "manifest.json"), row),
        "confusion": confusion,
    }


def _browse(rows: list[dict[str, Any]], baseline: str | None, task: str, prompts: dict[str, int]) -> dict | None:
    """The eval rows of `task` with each run's answer (its first seed's), for every run scored on the same rows
    (same gold answers in the same order) as the reference run (the baseline, else the first scored run)."""
    scored = [
        (row, Path((row.get("run_paths") or [row["path"]])[0]))
        for row in rows
        if row.get(f"{task}_accuracy") is not None and row.get(f"{task}_accuracy") == row.get(f"{task}_accuracy")
    ]
    scored.sort(key=lambda pair: pair[0]["run"] != baseline)
    found = [(row, _predictions(folder, _read(folder / "metrics.json"), task)) for row, folder in scored]
    found = [(row, predictions) for row, predictions in found if predictions]
    if not found:
        return None
    gold = [str(p.get("gold")) for p in found[0][1]]
    runs, left_out = [], [row["run"] for row, _ in scored if row["run"] not in {r["run"] for r, _ in found}]
    for row, predictions in found:
        if [str(p.get("gold")) for p in predictions] != gold:
            left_out.append(row["run"])  # scored on other rows: not comparable row by row, said on the page
            continue
        seeds = row.get("seeds") or []
        entry = {
            "name": row["run"] + (f" (seed {seeds[0]})" if len(seeds) > 1 else ""),
            "answers": [str(p.get("prediction")) for p in predictions],
            "correct": [bool(p.get("correct")) for p in predictions],
            "prompts": [prompts.setdefault(str(p.get("prompt", "")), len(prompts)) for p in predictions],
        }
        if any("passages" in p for p in predictions):
            entry["passages"] = [[str(h.get("id")) for h in p.get("passages") or []] for p in predictions]
        if any("metrics" in p for p in predictions):  # free-form replies: each metric's score of each row
            entry["scores"] = [p.get("metrics") or {} for p in predictions]
        if any("grounded" in p for p in predictions):
            entry["grounded"] = [p.get("grounded") for p in predictions]
        runs.append(entry)
    return {
        "gold": gold,
        "questions": [_question(p.get("prompt", "")) for p in found[0][1]],
        "runs": runs,
        "leftOut": left_out,
    }


def _point(row: dict[str, Any], task: str, x: float | None) -> dict[str, Any]:
    return {
        "label": row["run"],
        "x": x,
        "y": row.get(f"{task}_accuracy"),
        "lo": row.get(f"{task}_ci_low"),
        "hi": row.get(f"{task}_ci_high"),
    }


def _plots(rows: list[dict[str, Any]], task: str | None, units: str) -> list[dict[str, Any]]:
    if task is None:
        return []
    rows = [row for row in rows if row.get(f"{task}_accuracy") is not None]
    one_off = [_point(row, task, (row.get("train_hours") or 0) + (row.get("index_hours") or 0)) for row in rows]
    plots = [
        {
            "title": f"{task} accuracy against one-off {units}-hours",
            "points": one_off,
            "xLabel": f"training + indexing {units}-hours",
            "logX": False,
        },
        {
            "title": f"{task} accuracy against latency",
            "points": [_point(r, task, r.get("latency_ms")) for r in rows],
            "xLabel": "ms per request",
            "logX": False,
        },
    ]
    swept = [(SWEEP_POINT.match(row["run"]), row) for row in rows]
    keys = {match["key"] for match, _ in swept if match}
    if len(keys) == 1:
        key = keys.pop()
        points = sorted(
            (_point(row, task, float(match["value"])) for match, row in swept if match), key=lambda point: point["x"]
        )
        lines = [
            {
                "label": row["run"],
                "y": row[f"{task}_accuracy"],
                "lo": row[f"{task}_ci_low"],
                "hi": row[f"{task}_ci_high"],
            }
            for match, row in swept
            if not match
        ]
        plots.append(
            {
                "title": f"learning curve: {task} accuracy against {key}",
                "points": points,
                "xLabel": key,
                "logX": all(p["x"] > 0 for p in points)
                and max(p["x"] for p in points) >= 8 * min(p["x"] for p in points),
                "lines": lines,
            }
        )
    return plots


def report_data(comparison) -> dict[str, Any]:
    """Everything the page shows, as one JSON-ready dict built from `comparison`."""
    header, cells = display_rows(comparison)
    rows = json.loads(comparison.table.to_json(orient="records"))
    # One base model for every run goes in the subtitle, not in a column repeating it.
    models = {line[header.index("model")] for line in cells}
    if len(models) == 1:
        at = header.index("model")
        header, cells = header[:at] + header[at + 1 :], [line[:at] + line[at + 1 :] for line in cells]
    accuracy_columns = {
        n: task for n, name in enumerate(header) for task in comparison.tasks if name.startswith(f"{task} accuracy")
    }
    prompts: dict[str, int] = {}
    browse = {
        task: found
        for task in comparison.tasks
        for found in [_browse(rows, comparison.baseline, task, prompts)]
        if found
    }
    return {
        "title": "tuner comparison: " + ", ".join(row["run"] for row in rows),
        "subtitle": f"{len(rows)} runs"
        + (f" of {next(iter(models))}" if len(models) == 1 else "")
        + f"; baseline {comparison.baseline or 'none'}; tasks "
        f"{', '.join(comparison.tasks) or 'none'}; hours are {comparison.units}-hours",
        "verdict": verdict(comparison),
        "header": header,
        "cells": cells,
        "rows": rows,
        "accuracyColumns": accuracy_columns,
        "baseline": comparison.baseline,
        "notes": notes(comparison, header),
        "plots": _plots(rows, comparison.tasks[0] if comparison.tasks else None, comparison.units),
        "differences": comparison.differences,
        "runs": [_run(row, comparison.tasks) for row in rows],
        "browse": browse,
        "prompts": sorted(prompts, key=prompts.get),
    }


def report_html(comparison) -> str:
    """The page: the template with the data inlined (`</` escaped, so no string in the data can end the script)."""
    template = resources.files("tuner").joinpath(TEMPLATE).read_text(encoding="utf-8")
    data = json.dumps(report_data(comparison), ensure_ascii=False, default=str).replace("</", "<\\/")
    return template.replace("/*DATA*/", data)
