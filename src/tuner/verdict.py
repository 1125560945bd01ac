"""The verdict of a comparison: what the table's numbers support, and nothing more.

Runs are grouped per task by what they were scored on (the same eval rows and prompt rendering); each group is compared
within itself against its own baseline, never across. Within a group: each run's change against the baseline with its
paired interval and exact test; the most accurate run and the runs within noise of it (a tie); whether the eval rows
are too few to separate runs at all; latency differences only where they are beyond their own noise; and the run to
deploy at a stated request volume and price. `comparison.py` puts these numbers into the table's rows; `lines` turns
them into the words under the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .costs import MS_PER_HOUR, is_served, latency_differs, one_off_hours, price_of
from .intervals import FEWEST_DISCORDANT, paired_comparison, smallest_detectable_difference

# Below this, a difference of a few points cannot be told from noise on the eval rows: the verdict says so.
SMALL_DIFFERENCE = 0.05


def missing(value: Any) -> bool:
    """Whether a table cell holds no value (None, or NaN as pandas writes an empty cell)."""
    return value is None or (isinstance(value, float) and value != value)


def group(
    rows: list[dict[str, Any]],
    task: str,
    identities: list[dict[str, Any] | None],
    baseline: int | None,
    mismatch: Callable[[dict[str, Any], dict[str, Any]], str | None],
) -> list[list[int]]:
    """The rows scored on `task`, in groups that can be compared (`mismatch` finds nothing between a member and the
    group's first run): the baseline's group first, then in table order; each group's reference (its baseline) first
    in it. Each row gets `{task}_group` (1, 2, ...) and `{task}_group_baseline` (its reference's name)."""
    found: list[list[int]] = []
    order = [i for i in range(len(rows)) if identities[i] is not None]
    if baseline is not None and baseline in order:
        order.remove(baseline)
        order.insert(0, baseline)
    for index in order:
        home = next((g for g in found if mismatch(identities[index], identities[g[0]]) is None), None)
        if home is None:
            found.append([index])
        else:
            home.append(index)
    for number, members in enumerate(found, start=1):
        for index in members:
            rows[index][f"{task}_group"] = number
            rows[index][f"{task}_group_baseline"] = rows[members[0]]["run"]
        if number > 1:
            what = mismatch(identities[members[0]], identities[found[0][0]])
            within = f", compared within its group against {rows[members[0]]['run']}" if len(members) > 1 else ""
            for index in members:
                rows[index]["notes"].append(f"{task}: {what} than {rows[found[0][0]]['run']}, not compared{within}")
    return found


def judge(rows: list[dict[str, Any]], task: str, members: list[int], outcomes: list[Any]) -> None:
    """Within one group (its reference first): each run's change against the reference, with its interval, exact
    test and whether it is beyond noise; the most accurate run (`{task}_best`) and each run's tie with it
    (`{task}_tied_with_best`: not beyond noise of it by the same test; None without both runs' predictions)."""
    reference = members[0]
    if len(members) == 1 and rows[reference].get(f"{task}_group") != 1:
        rows[reference][f"{task}_best"] = rows[reference][f"{task}_tied_with_best"] = True
        return  # alone on its rows: nothing to compare it with
    for index in members:
        rows[index][f"{task}_delta"] = round(rows[index][f"{task}_accuracy"] - rows[reference][f"{task}_accuracy"], 4)
        if index != reference:
            _paired(rows[index], task, "delta", outcomes[index], outcomes[reference])
    best = max(members, key=lambda i: rows[i][f"{task}_accuracy"])
    for index in members:
        rows[index][f"{task}_best"] = index == best
        tie = None
        if index == best:
            tie = True
        elif _comparable(outcomes[index], outcomes[best]):
            tie = not paired_comparison(outcomes[index], outcomes[best])["beyond_noise"]
        elif rows[index][f"{task}_accuracy"] == rows[best][f"{task}_accuracy"]:
            tie = True
        rows[index][f"{task}_tied_with_best"] = tie


def _comparable(outcomes: Any, reference: Any) -> bool:
    """Both runs' per-row outcomes are known and on the same number of rows (a paired test needs row pairs)."""
    return outcomes is not None and reference is not None and len(outcomes[0]) == len(reference[0])


def _paired(row: dict[str, Any], task: str, what: str, outcomes: Any, reference: Any) -> None:
    if not _comparable(outcomes, reference):
        return
    found = paired_comparison(outcomes, reference)
    row.update(
        {
            f"{task}_{what}_ci_low": found["ci95"][0],
            f"{task}_{what}_ci_high": found["ci95"][1],
            f"{task}_{what}_p": found["p"],
            f"{task}_{what}_distinguishable": found["beyond_noise"],
        }
    )


def monthly_hours(row: dict[str, Any], requests: int) -> float | None:
    """A run's device-hours for its first month at `requests` requests: its one-off hours plus the requests at its
    ms per request."""
    if missing(row.get("latency_ms")):
        return None
    return one_off_hours(row) + requests * row["latency_ms"] / MS_PER_HOUR


def recommend(
    rows: list[dict[str, Any]],
    task: str,
    members: list[int],
    requests: int | None,
    prices: tuple[float | None, float | None],
) -> dict[str, Any] | None:
    """Among the runs within noise of the most accurate one, the cheapest: at `requests` a month, by first-month
    device-hours (priced when `prices`, GPU and CPU per hour, name the run's device); without a volume, by one-off
    hours, then ms per request. A run with more one-off hours is chosen over one with fewer only when its requests are
    faster beyond latency noise (`costs.latency_differs`): a saving inside the noise is not one. None when a tie with
    the best cannot be decided (predictions missing)."""
    tied = [i for i in members if rows[i].get(f"{task}_tied_with_best")]
    if not tied or any(rows[i].get(f"{task}_tied_with_best") is None for i in members):
        return None

    def cost(index: int) -> tuple[float, float]:
        row = rows[index]
        if requests is not None and is_served(row):  # priced per token: money, beside local runs priced per hour
            return (requests * row["price_per_request"], 0.0)
        if requests is not None and monthly_hours(row, requests) is not None:
            price = price_of(row, *prices)
            return (monthly_hours(row, requests) * (price if price is not None else 1.0), 0.0)
        return (one_off_hours(row), row.get("latency_ms") or 0.0)

    chosen = None
    for index in sorted(tied, key=lambda i: (one_off_hours(rows[i]), cost(i))):
        if chosen is None or (cost(index) < cost(chosen) and latency_differs(rows[index], rows[chosen])):
            chosen = index
    within_noise = [i for i in tied if cost(i) < cost(chosen)]  # cheaper on paper, by latency inside its noise
    return {"run": chosen, "tied": tied, "requests": requests, "prices": prices, "within_noise": within_noise}


def _names(rows: list[dict[str, Any]], indices: list[int]) -> str:
    return ", ".join(rows[i]["run"] for i in indices)


def lines(
    rows: list[dict[str, Any]],
    task: str,
    groups: list[list[int]],
    requests: int | None = None,
    prices: tuple[float | None, float | None] = (None, None),
) -> list[str]:
    """The verdict of each group of `task` as lines: the most accurate run or the tie at the top, the runs beyond
    noise of the baseline, the fastest per request (ties within latency noise named), break-even, a warning when the
    eval rows are too few, and the recommendation."""
    out = []
    for number, members in enumerate(groups, start=1):
        if len(members) < 2:
            continue
        label = task if len(groups) == 1 else f"{task}, group {number}: baseline {rows[members[0]]['run']}"
        out.append(f"Verdict ({label}): " + "; ".join(_words(rows, task, members)) + ".")
        warning = _too_few(rows, task, members)
        if warning:
            out.append(f"Eval rows ({label}): {warning}")
        advice = recommend(rows, task, members, requests, prices)
        if advice is not None:
            out.append(f"Recommendation ({label}): {_advice(rows, task, advice)}")
    return out


def _words(rows: list[dict[str, Any]], task: str, members: list[int]) -> list[str]:
    best = next(i for i in members if rows[i].get(f"{task}_best"))
    accuracy = rows[best][f"{task}_accuracy"]
    equal = [i for i in members if rows[i][f"{task}_accuracy"] == accuracy]
    if len(equal) > 1:
        words = [f"most accurate: a tie at {accuracy:.3f} between {_names(rows, equal)}"]
    else:
        words = [f"most accurate: {rows[best]['run']} ({rows[best]['method']}, {accuracy:.3f})"]
    tied = [i for i in members if rows[i].get(f"{task}_tied_with_best") and i not in equal]
    if tied:
        words.append(f"within noise of it: {_names(rows, tied)}")
    paired = [i for i in members[1:] if not missing(rows[i].get(f"{task}_delta_distinguishable"))]
    if paired:
        better = [i for i in paired if rows[i][f"{task}_delta_distinguishable"] and rows[i][f"{task}_delta"] > 0]
        same = [i for i in paired if not rows[i][f"{task}_delta_distinguishable"]]
        worse = [i for i in paired if rows[i][f"{task}_delta_distinguishable"] and rows[i][f"{task}_delta"] < 0]
        words.append(f"better than the baseline beyond noise: {_names(rows, better) or 'none'}")
        if same:
            words.append(f"not distinguishable from it: {_names(rows, same)}")
        if worse:
            words.append(f"worse: {_names(rows, worse)}")
    timed = [i for i in members if not missing(rows[i].get("latency_ms"))]
    if timed:
        fastest = min(timed, key=lambda i: rows[i]["latency_ms"])
        close = [i for i in timed if i != fastest and not latency_differs(rows[i], rows[fastest])]
        text = f"fastest per request: {rows[fastest]['run']} ({rows[fastest]['latency_ms']:.1f} ms)"
        words.append(text + (f", within latency noise of {_names(rows, close)}" if close else ""))
    for index in members:  # a run's break-even is against runs of its own task (`costs.add_break_even`)
        if rows[index].get("task") == task and not missing(rows[index].get("break_even_requests")):
            words.append(
                f"{rows[index]['run']} repays its one-off cost against {rows[index]['break_even_against']} after "
                f"{int(rows[index]['break_even_requests']):,} requests"
            )
    return words


def _too_few(rows: list[dict[str, Any]], task: str, members: list[int]) -> str | None:
    """A warning when runs tie and the eval rows could not have told apart a difference of a few points."""
    counts = [rows[i][f"{task}_rows"] for i in members if not missing(rows[i].get(f"{task}_rows"))]
    ties = sum(bool(rows[i].get(f"{task}_tied_with_best")) for i in members)
    if not counts or ties < 2:
        return None
    smallest = smallest_detectable_difference(int(min(counts)))
    if smallest <= SMALL_DIFFERENCE:
        return None
    return (
        f"{int(min(counts))} rows cannot tell apart runs closer than {100 * smallest:.0f} points (the exact test "
        f"needs {FEWEST_DISCORDANT} rows answered differently, all one way); runs tied here may still differ: "
        f"score more rows to separate them."
    )


def _advice(rows: list[dict[str, Any]], task: str, advice: dict[str, Any]) -> str:
    chosen, tied, requests = advice["run"], advice["tied"], advice["requests"]
    row = rows[chosen]
    others = [i for i in tied if i != chosen]
    why = (
        f"no run is more accurate beyond noise (tied with it: {_names(rows, others)})"
        if others
        else "the most accurate beyond noise of every other run"
    )
    if requests is None:
        cost = (
            "and it needs no one-off hours"
            if one_off_hours(row) == 0
            else f"and its one-off cost is the lowest of those ({one_off_hours(row):.3g} {row['hours_unit']}-h)"
            if others
            else f"at {one_off_hours(row):.3g} {row['hours_unit']}-h one-off"
        )
        return f"{row['run']} ({row['method']}): {why}, {cost}; `--requests-per-month` weighs serving too."
    hours = monthly_hours(row, requests)
    price = price_of(row, *advice["prices"])
    spent = f"{hours * price:.4g} per month" if price is not None else f"{hours:.3g} {row['hours_unit']}-h a month"
    if is_served(row):
        spent = f"{requests * row['price_per_request']:.4g} per month at its token prices"
    cheapest = "the cheapest beyond latency noise" if advice.get("within_noise") else "the cheapest"
    text = f"{row['run']} ({row['method']}): {why}, and at {requests:,} requests a month {cheapest} ({spent}"
    text += ", first month, one-off hours included)."
    if advice.get("within_noise"):
        text += (
            f" {_names(rows, advice['within_noise'])}: less on paper, by a latency within the noise of "
            f"{row['run']}'s, and one-off hours that may never be paid back."
        )
    for index in others:
        if rows[index].get("break_even_against") == row["run"] and not missing(rows[index]["break_even_requests"]):
            text += (
                f" Above {int(rows[index]['break_even_requests']):,} requests {rows[index]['run']} is cheaper "
                f"(its one-off hours paid back)."
            )
    return text
