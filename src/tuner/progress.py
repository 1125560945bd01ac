"""Progress of tuner's long phases (scoring, reading and converting large data sets, choosing few-shot examples).

On a terminal: a bar like the training bars (tqdm: count, rate, time left). When the output is not a terminal (a log
file, a cluster job, CI): one line per phase when it ends, and, for a phase that takes over a minute, a line at every
tenth of the way (`Lines`; training's own lines come from the same class). Under `tuner --quiet` (TUNER_QUIET=1):
nothing. `RowClock` moves a bar as rows finish and gives each row its share of the time.
"""

from __future__ import annotations

import os
import sys
import time

QUIET_VARIABLE = "TUNER_QUIET"


def quiet() -> bool:
    """Whether progress is silenced (`tuner --quiet` sets TUNER_QUIET=1)."""
    return os.environ.get(QUIET_VARIABLE, "") not in ("", "0")


def interactive() -> bool:
    """Whether progress goes to a terminal, where a live bar makes sense."""
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    """`seconds` as a person reads it: 42 s, 3 min 5 s, 1 h 20 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class Lines:
    """Progress of a phase as lines in a log: one at each tenth of the way once the phase looks like lasting over a
    minute (its time so far, projected over the whole), each with the time so far and the time left. Quiet prints
    nothing; a phase that ends within the minute prints nothing here (its end line is the caller's)."""

    # A phase projected to take longer than this prints its tenths.
    long_seconds = 60.0

    def __init__(self, total: int, what: str, unit: str):
        self.total, self.what, self.unit = total, what, unit
        self.started = time.perf_counter()
        self.tenths = 0

    def restart(self) -> None:
        self.started, self.tenths = time.perf_counter(), 0

    def at(self, done: int, detail: str = "") -> str | None:
        """The line to print now that `done` of `total` are done, or None (not at a new tenth, or a short phase)."""
        if self.total <= 0 or done <= 0:
            return None
        tenths = min(10, done * 10 // self.total)
        if tenths <= self.tenths or tenths >= 10:
            return None
        seconds = time.perf_counter() - self.started
        if seconds * self.total / done < self.long_seconds:
            return None
        self.tenths = tenths
        left = seconds * (self.total - done) / done
        return (
            f"tuner: {self.what}: {done} of {self.total} {self.unit} ({10 * tenths}%), {duration(seconds)}, "
            f"about {duration(left)} left{detail}"
        )

    def update(self, done: int, detail: str = "") -> None:
        line = None if quiet() else self.at(done, detail)
        if line is not None:
            print(line, file=sys.stderr, flush=True)


class Progress:
    """Count `total` units of work (`unit`: rows, lines...) for the phase `what`; use as a context manager and call
    `update(n)` as work is done."""

    # Seconds between redraws of a bar; every update counts (tuner updates once per batch, not per row).
    redraw_seconds = 0.1

    def __init__(self, total: int, what: str, unit: str = "rows"):
        self.total, self.what, self.unit = total, what, unit
        self.done = 0
        self.started = time.perf_counter()
        self.bar = None
        self.lines = Lines(total, what, unit)
        if not quiet() and interactive():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                desc=f"tuner: {what}",
                unit=f" {unit}",
                file=sys.stderr,
                leave=True,
                dynamic_ncols=True,
                miniters=1,
                mininterval=self.redraw_seconds,
            )

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        else:
            self.lines.update(self.done)

    def restart(self) -> None:
        """Start counting again (the phase is being redone, e.g. with smaller batches)."""
        self.done, self.started = 0, time.perf_counter()
        self.lines.restart()
        if self.bar is not None:
            self.bar.reset(total=self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif not quiet():
            seconds = time.perf_counter() - self.started
            rate = f", {self.done / seconds:.1f} {self.unit}/s" if seconds > 0 else ""
            print(
                f"tuner: {self.what}: {self.done} of {self.total} {self.unit} in {seconds:.1f} s{rate}",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Phases over fewer items than this finish in moments and stay silent.
LARGE = 10_000


def bars_shown() -> bool:
    """Whether live bars are drawn (a terminal, and not quiet); for libraries that draw their own."""
    return interactive() and not quiet()


def tracked(items, total: int, what: str, unit: str = "rows", at_least: int | None = None):
    """Iterate `items`, counting them in a `Progress` when there are at least `at_least` of them (default
    `LARGE`)."""
    if total < (LARGE if at_least is None else at_least):
        yield from items
        return
    # A thousandth of the total at a time: updating for each of a million rows cost 12 s.
    step, pending = max(1, total // 1000), 0
    with Progress(total, what, unit) as progress:
        for item in items:
            yield item
            pending += 1
            if pending == step:
                progress.update(pending)
                pending = 0
        if pending:
            progress.update(pending)


class RowClock:
    """Rows as they finish: the progress bar moves, and each row is given its share of the wall time since the last
    rows finished (a batch's time split evenly over the rows it completed), so the rows' latencies add up to the
    phase's time."""

    def __init__(self, progress: Progress, rows: int):
        self.progress, self.ms = progress, [None] * rows
        self.last = time.perf_counter()

    def finished(self, rows: list[int]) -> None:
        now = time.perf_counter()
        for row in rows:
            self.ms[row] = round(1000 * (now - self.last) / len(rows), 2)
        if rows:
            self.last = now
        self.progress.update(len(rows))

    def restart(self) -> None:
        self.progress.restart()
        self.ms, self.last = [None] * len(self.ms), time.perf_counter()
