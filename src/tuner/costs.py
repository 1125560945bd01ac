"""What each run of a comparison costs: one-off (training plus indexing) and per request, in device-hours and, given
a price, in money; and after how many requests a tuned model's one-off cost is paid back by its cheaper requests
against a prompt-side method (few-shot examples or retrieval, whose prompts are longer). A run that continued or
used another run's adapter counts that run's training too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .defaults import METHOD_NAMES
from .seeds import SEED_FOLDER

# ms per request to device-hours per request.
MS_PER_HOUR = 3_600_000


def one_off_hours(row: dict[str, Any]) -> float:
    """Training plus index-building device-hours (a row's SFT stage included)."""
    return (row.get("train_hours") or 0.0) + (row.get("index_hours") or 0.0)


def price_of(row: dict[str, Any], gpu_price: float | None, cpu_price: float | None) -> float | None:
    return gpu_price if row["hours_unit"] == "GPU" else cpu_price


def is_served(row: dict[str, Any]) -> bool:
    """A run scored through a served model (`model.endpoint`), priced per token rather than per device-hour."""
    return row.get("price_per_request") is not None


def run_cost(row: dict[str, Any], gpu_price: float | None, cpu_price: float | None) -> float | None:
    """(training + indexing + evaluation hours) x the price of an hour of the run's device; a served run's scoring
    at its price per token (its indexing, if any, at the device's price)."""
    if is_served(row):
        index = (row.get("index_hours") or 0.0) * (price_of(row, gpu_price, cpu_price) or 0.0)
        return round(row["price_per_request"] * (row.get("scored_rows") or 0) + index, 6)
    price = price_of(row, gpu_price, cpu_price)
    if price is None or row["train_hours"] is None:
        return None
    return round((one_off_hours(row) + row["eval_hours"]) * price, 4)


def cost_per_1k_requests(row: dict[str, Any], gpu_price: float | None, cpu_price: float | None) -> float | None:
    """1,000 requests at the run's measured ms per example (batched scoring on one device) x the hourly price; a
    served run's at its measured tokens per request x its price per token."""
    if is_served(row):
        return round(1000 * row["price_per_request"], 6)
    price = price_of(row, gpu_price, cpu_price)
    if price is None or row.get("latency_ms") is None:
        return None
    return round(1000 * row["latency_ms"] / MS_PER_HOUR * price, 6)


def is_prompt_side(metrics: dict[str, Any]) -> bool:
    """Few-shot examples or retrieval for the base model: no training, a longer prompt on every request; and any
    served model (a hosted API): no training, a price on every request."""
    return (
        bool((metrics.get("eval") or {}).get("served"))
        or metrics.get("method") == "fewshot"
        and (metrics.get("k") or 0) > 0
        or metrics.get("method") == "rag"
        and not metrics.get("adapter_run")
    )


def break_even(tuned: dict[str, Any], prompt_side: dict[str, Any], price: float | None = None) -> float | None:
    """Requests after which `tuned`'s extra one-off hours are paid back by its faster requests against
    `prompt_side` (same device kind, so the price cancels out); None when it is not faster beyond the noise of both
    latencies (their intervals overlap, `latency_differs`) or costs no more. Against a served model priced per token,
    in money: `tuned`'s one-off hours at `price` (its device's, per hour) over what each request saves (the served
    price less `tuned`'s ms per request at `price`); None without a price."""
    if tuned.get("latency_ms") is None or prompt_side.get("latency_ms") is None or is_served(tuned):
        return None
    if is_served(prompt_side):
        if price is None:
            return None
        saved = prompt_side["price_per_request"] - tuned["latency_ms"] / MS_PER_HOUR * price
        extra = (one_off_hours(tuned) - one_off_hours(prompt_side)) * price
        return round(extra / saved) if saved > 0 and extra > 0 else None
    saved = (prompt_side["latency_ms"] - tuned["latency_ms"]) / MS_PER_HOUR
    extra = one_off_hours(tuned) - one_off_hours(prompt_side)
    if saved <= 0 or extra <= 0 or tuned["hours_unit"] != prompt_side["hours_unit"]:
        return None
    return round(extra / saved) if latency_differs(tuned, prompt_side) else None


def latency_differs(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two runs' ms per request differ beyond their measured noise: their 95% intervals (bootstrap over the
    rows' latencies) do not overlap. Without both intervals, it is taken as measured."""
    bounds = [first.get(key) for key in ("latency_ci_low", "latency_ci_high")]
    bounds += [second.get(key) for key in ("latency_ci_low", "latency_ci_high")]
    if any(bound is None or bound != bound for bound in bounds):
        return True
    return bounds[1] < bounds[2] or bounds[3] < bounds[0]


def add_break_even(
    rows: list[dict[str, Any]],
    prompt_side: list[bool],
    gpu_price: float | None = None,
    cpu_price: float | None = None,
) -> None:
    """For each run with a one-off cost, its break-even number of requests against the most accurate prompt-side
    run scored on the same rows (its task's group, `verdict.group`): `break_even_requests`, `break_even_against`;
    against a served model, in money at the run's device price (none given: no break-even)."""
    for row in rows:
        row["break_even_requests"], row["break_even_against"] = None, None
        task = row.get("task")
        # Retrieval scored alone serves no answer: there is no request to pay an index back on.
        if task in (None, "retrieval") or one_off_hours(row) <= 0 or row.get(f"{task}_group") is None:
            continue
        candidates = [
            other
            for other, side in zip(rows, prompt_side)
            if side
            and other is not row
            and other.get(f"{task}_group") == row[f"{task}_group"]
            and other.get(f"{task}_accuracy") is not None
        ]
        if not candidates:
            continue
        against = max(candidates, key=lambda other: other[f"{task}_accuracy"])
        requests = break_even(row, against, price_of(row, gpu_price, cpu_price))
        if requests is not None:
            row["break_even_requests"], row["break_even_against"] = requests, against["run"]


def phase_hours(phases: dict[str, Any], names) -> tuple[float, str]:
    """Device-hours of the named phases of a run, and their unit (GPU when any ran on one, else CPU)."""
    hours, unit = 0.0, "CPU"
    for name in names:
        record = phases.get(name) or {}
        if "gpu_hours" in record:
            hours, unit = hours + record["gpu_hours"], "GPU"
        else:
            hours += record.get("cpu_hours", 0.0)
    return hours, unit


def _upstream_folder(run: Path, upstream: str) -> Path:
    """A run folder named in a manifest: as written when absolute; a relative one was relative to where that run
    was started, so it is looked for under the run folder's own ancestors first, then the current folder."""
    given = Path(upstream)
    if given.is_absolute():
        return given
    return next((base / given for base in run.resolve().parents if (base / given / "metrics.json").is_file()), given)


def upstream_train_hours(run: Path, manifest: dict[str, Any], notes: list[str], depth: int = 0) -> float:
    """Training hours of the run whose adapter this run continued (DPO on SFT), retrieved for (SFT+RAG) or scored
    (`tuner eval --adapter`), and of the runs before it: the cost of reaching that model includes them."""
    named = manifest.get("continued_from") or manifest.get("adapter_run")
    if not named or depth > 8:
        return 0.0
    upstream = _upstream_folder(run, named)
    try:
        metrics = json.loads((Path(upstream) / "metrics.json").read_text(encoding="utf-8"))
        phases = metrics["phases"]
    except (OSError, ValueError, KeyError, TypeError):
        notes.append(f"train hours exclude the training of {upstream} (its metrics.json is unreadable)")
        return 0.0
    stage = METHOD_NAMES.get(metrics.get("method"), str(metrics.get("method")))
    name = Path(upstream).name
    notes.append(
        f"train hours include the {stage} stage "
        f"({f'{Path(upstream).parent.name}/{name}' if SEED_FOLDER.match(name) else name})"
    )
    try:
        earlier = json.loads((Path(upstream) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = {}
    return phase_hours(phases, ["train"])[0] + upstream_train_hours(upstream, earlier, notes, depth + 1)
