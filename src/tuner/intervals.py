"""95% intervals by bootstrap over rows: of one run's accuracy, and of the paired difference between two runs scored
on the same rows (each resample takes the same rows from both, so row difficulty cancels out)."""

from __future__ import annotations

BOOTSTRAP_SAMPLES = 1000


def bootstrap_interval(correct: list[bool], seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the mean of 0/1 outcomes."""
    import numpy as np

    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(BOOTSTRAP_SAMPLES, values.size))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def paired_difference_interval(correct: list[bool], baseline: list[bool], seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of mean(correct) - mean(baseline) over the same rows, in row order."""
    import numpy as np

    if len(correct) != len(baseline) or not correct:
        raise ValueError("a paired difference needs the same rows, at least one, in both runs")
    differences = np.asarray(correct, dtype=float) - np.asarray(baseline, dtype=float)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, differences.size, size=(BOOTSTRAP_SAMPLES, differences.size))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]
