"""Seed groups: runs of one recipe that differ only by seed, found among compared runs and merged into one row of the
comparison (mean accuracy, the spread across seeds, each seed's own interval), so a table shows how much a result
moves with training noise and not only with the eval rows."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from .intervals import score_interval

SEED_FOLDER = re.compile(r"seed-\d+(-\d+)?$")
# Recipe keys a seed run sets or that only say where and how it ran; runs differing in nothing else are one group.
PER_RUN_KEYS = ("seed", "seeds", "output_dir", "resume")
# Columns averaged over a group's seeds (a seed's hours are the cost of one run); peak memory is the largest.
MEANS = (
    "train_hours",
    "index_hours",
    "eval_hours",
    "latency_ms",
    "retrieval_ms",
    "prompt_tokens",
    "trainable_parameters",
)


def without_seed_folder(path: str | None) -> str | None:
    """A run path with a trailing `seed-<n>` folder dropped: the seed runs of `runs/sft/seed-0`, `.../seed-1` all
    name `runs/sft`, so a DPO run on each SFT seed still groups."""
    if not path:
        return path
    given = Path(path)
    return str(given.parent) if SEED_FOLDER.match(given.name) else str(given)


def group_key(recipe: dict[str, Any] | None, metrics: dict[str, Any] | None, scored: bool = True) -> str | None:
    """What a run is, apart from its seed: its resolved recipe without the per-run keys (and few-shot's own seed, which
    a seed run sets), its base adapter's run without the seed folder, the adapter it scored, and the rows it was
    scored on (their fingerprint: seeds scored on other rows, or on other in-memory data, which recipe.yaml does
    not hold, are never averaged; `scored` False leaves them out, to find such runs). None for a run without a
    readable recipe.yaml or metrics.json: it is never grouped."""
    if not recipe or not metrics:
        return None
    what = {key: copy.deepcopy(value) for key, value in recipe.items() if key not in PER_RUN_KEYS}
    if isinstance(what.get("fewshot"), dict):
        what["fewshot"].pop("seed", None)
    if isinstance(what.get("model"), dict):
        what["model"]["adapter"] = without_seed_folder(what["model"].get("adapter"))
    rows = [(metrics.get(key) or {}).get("rows_fingerprint") for key in ("eval", "eval_preference")] if scored else []
    return json.dumps([what, without_seed_folder(metrics.get("adapter")), rows], sort_keys=True, default=str)


def seed_of(recipe: dict[str, Any] | None, manifest: dict[str, Any] | None) -> int | None:
    """The seed a run ran with: its recipe's, else its manifest's."""
    for source in (recipe, manifest):
        if isinstance(source, dict) and isinstance(source.get("seed"), int):
            return source["seed"]
    return None


def groups(keys: list[str | None], seeds: list[int | None], paths: list[Path]) -> list[list[int]]:
    """Indices of runs grouped by key, in order of each group's first run. The `seed-<n>` folders of one parent are
    grouped first (as `--seeds` wrote them); other runs then join a group of their key that lacks their seed. A
    second run of a seed a group has is a repeat, shown as its own row."""
    found: list[list[int]] = []

    def place(index: int, fits) -> None:
        home = next(
            (
                group
                for group in found
                if keys[index] is not None
                and seeds[index] is not None
                and keys[group[0]] == keys[index]
                and seeds[index] not in [seeds[i] for i in group]
                and fits(group)
            ),
            None,
        )
        if home is None:
            found.append([index])
        else:
            home.append(index)

    in_seed_folders = [i for i, path in enumerate(paths) if SEED_FOLDER.match(path.name)]
    for index in in_seed_folders:
        place(index, lambda group, index=index: all(paths[i].parent == paths[index].parent for i in group))
    for index in (i for i in range(len(keys)) if i not in in_seed_folders):
        place(index, lambda group: True)
    for group in found:
        group.sort(key=lambda i: seeds[i])
    return sorted(found, key=min)


def group_name(paths: list[Path]) -> tuple[str, Path]:
    """A group's name and folder: the shared parent of `seed-<n>` folders (`tuner sft --seeds` writes them so), else
    the runs' names joined."""
    parents = {path.parent for path in paths}
    if len(parents) == 1 and all(SEED_FOLDER.match(path.name) for path in paths):
        parent = parents.pop()
        return parent.name, parent
    return " + ".join(path.name for path in paths), paths[0]


def merge(
    rows: list[dict[str, Any]],
    seeds: list[int | None],
    tasks: list[str],
    outcomes: dict[str, list[list[bool]] | None],
    name: str,
    path: Path,
) -> dict[str, Any]:
    """One comparison row for a group's runs (rows in seed order): per task the mean accuracy, the spread across seeds
    (`_spread_low`, `_spread_high`, `_std` from three seeds), each seed's accuracy and interval, and an interval of
    the mean (Wilson's, widened to the bootstrap over rows and seeds) when every seed's predictions are there (else
    the widest of the seeds'); hours, latency and prompt tokens averaged (latency's interval spanning the seeds'),
    peak memory the largest."""
    import numpy as np

    merged = dict(rows[0])
    merged.update(
        {
            "run": name,
            "path": str(path),
            "seeds": list(seeds),
            "run_paths": [row["path"] for row in rows],
            "notes": list(dict.fromkeys(note for row in rows for note in row["notes"])),
        }
    )
    for task in tasks:
        accuracies = [row[f"{task}_accuracy"] for row in rows]
        merged[f"{task}_seed_accuracy"] = accuracies
        merged[f"{task}_seed_ci"] = [[row[f"{task}_ci_low"], row[f"{task}_ci_high"]] for row in rows]
        merged.update({f"{task}_spread_low": None, f"{task}_spread_high": None, f"{task}_std": None})
        if len(rows) == 1 or any(value is None for value in accuracies):
            continue
        merged[f"{task}_accuracy"] = round(float(np.mean(accuracies)), 4)
        merged[f"{task}_spread_low"], merged[f"{task}_spread_high"] = min(accuracies), max(accuracies)
        if len(rows) >= 3:
            merged[f"{task}_std"] = round(float(np.std(accuracies, ddof=1)), 4)
        if outcomes.get(task) is not None:
            merged[f"{task}_ci_low"], merged[f"{task}_ci_high"] = score_interval(outcomes[task])
        else:
            merged[f"{task}_ci_low"] = min(row[f"{task}_ci_low"] for row in rows)
            merged[f"{task}_ci_high"] = max(row[f"{task}_ci_high"] for row in rows)
            merged["notes"].append(f"{task}: a seed's predictions are missing, so the interval is the widest seed's")
    for column in (*MEANS, *(f"{task}_macro_f1" for task in tasks)):
        values = [row.get(column) for row in rows]
        if len(rows) > 1 and all(value is not None for value in values):
            merged[column] = float(np.mean(values))
    lows, highs = ([row.get(key) for row in rows] for key in ("latency_ci_low", "latency_ci_high"))
    if len(rows) > 1 and all(value is not None for value in lows + highs):
        merged["latency_ci_low"], merged["latency_ci_high"] = min(lows), max(highs)  # each seed's noise covered
    memory = [row["peak_memory_mb"] for row in rows if row.get("peak_memory_mb") is not None]
    merged["peak_memory_mb"] = max(memory) if memory else None
    return merged
