"""95% intervals by bootstrap over rows: of one run's accuracy, and of the paired difference between two runs scored
on the same rows (each resample takes the same rows from both, so row difficulty cancels out). Given one list of
outcomes per seed, each resample also draws seeds with replacement, so the interval covers training noise too."""

from __future__ import annotations

from typing import Any

BOOTSTRAP_SAMPLES = 1000


def _seed_means(outcomes: Any, rows: Any, rng: Any) -> Any:
    """Per resample, the mean over seeds drawn with replacement of each seed's mean over the resampled `rows`."""
    import numpy as np

    values = np.atleast_2d(np.asarray(outcomes, dtype=float))
    per_seed = values[:, rows].mean(axis=2).T  # resamples x seeds
    if values.shape[0] == 1:
        return per_seed[:, 0]
    drawn = rng.integers(0, values.shape[0], size=per_seed.shape)
    return np.take_along_axis(per_seed, drawn, axis=1).mean(axis=1)


def _rows_of(outcomes: Any) -> int:
    import numpy as np

    return np.atleast_2d(np.asarray(outcomes, dtype=float)).shape[1]


def _percentiles(means: Any) -> list[float]:
    import numpy as np

    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def bootstrap_interval(correct: Any, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the mean of 0/1 outcomes: a list in row order, or one such list per
    seed (rows and seeds resampled)."""
    import numpy as np

    size = _rows_of(correct) if len(correct) else 0
    if size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, size, size=(BOOTSTRAP_SAMPLES, size))
    return _percentiles(_seed_means(correct, rows, rng))


def paired_difference_interval(correct: Any, baseline: Any, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of mean(correct) - mean(baseline) over the same rows, in row order: each
    a list of outcomes, or one list per seed (each resample draws the same rows for both, and seeds of each with
    replacement)."""
    import numpy as np

    if not len(correct) or not len(baseline) or _rows_of(correct) != _rows_of(baseline) or not _rows_of(correct):
        raise ValueError("a paired difference needs the same rows, at least one, in both runs")
    size = _rows_of(correct)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, size, size=(BOOTSTRAP_SAMPLES, size))
    return _percentiles(_seed_means(correct, rows, rng) - _seed_means(baseline, rows, rng))
