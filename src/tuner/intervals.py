"""95% intervals and paired tests of scores over eval rows.

Scores in [0, 1] (accuracies, graded metrics): Wilson's interval of one mean (`score_interval`), and for two runs on
the same rows Newcombe's paired interval with a sign-flip test, exact McNemar for right/wrong outcomes
(`paired_comparison`). Unbounded values (rewards, milliseconds): percentile bootstrap over rows (`bootstrap_interval`,
`paired_difference_interval`). Given one list per seed, resamples also draw seeds with replacement, so an interval
covers training noise too."""

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


# ---- scores in [0, 1]: accuracies, and graded metrics such as token F1 ----
# A percentile bootstrap collapses to [1, 1] when every row is right and calls 4 of 4 discordant rows "beyond
# noise" (an exact test gives p = 0.125); these closed forms do neither.

Z95 = 1.959964
# Two-sided exact tests need at least this many discordant rows, all one way, before p < 0.05 (2 x 0.5**6 = 0.031).
FEWEST_DISCORDANT = 6
SIGN_FLIPS = 20_000


def wilson_interval(mean: float, rows: int) -> list[float]:
    """Wilson's 95% score interval of a share `mean` of `rows` rows. For graded scores in [0, 1] (token F1, ROUGE-L)
    it is conservative: no score in [0, 1] with that mean varies more than right/wrong outcomes do."""
    import math

    if rows <= 0:
        return [float("nan"), float("nan")]
    mean = min(1.0, max(0.0, float(mean)))
    z2 = Z95 * Z95
    centre = (mean + z2 / (2 * rows)) / (1 + z2 / rows)
    half = Z95 * math.sqrt(mean * (1 - mean) / rows + z2 / (4 * rows * rows)) / (1 + z2 / rows)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _row_means(values: Any) -> Any:
    """Each row's score averaged over seeds (one list of scores, or one list per seed)."""
    import numpy as np

    return np.atleast_2d(np.asarray(values, dtype=float)).mean(axis=0)


def _hull(first: list[float], second: list[float]) -> list[float]:
    return [min(first[0], second[0]), max(first[1], second[1])]


def score_interval(values: Any) -> list[float]:
    """95% interval of a mean score in [0, 1] over rows: Wilson's; for one list of scores per seed, Wilson's on the
    mean over seeds, widened to the bootstrap over rows and seeds where the seeds spread further."""
    import numpy as np

    if not len(values) or not _rows_of(values):
        return [float("nan"), float("nan")]
    means = _row_means(values)
    interval = wilson_interval(float(means.mean()), len(means))
    if np.atleast_2d(np.asarray(values, dtype=float)).shape[0] > 1:
        interval = _hull(interval, bootstrap_interval(values))
    return interval


def _correlation(first: Any, second: Any) -> float:
    import numpy as np

    if first.std() == 0 or second.std() == 0:
        return 0.0
    return float(np.corrcoef(first, second)[0, 1])


def newcombe_interval(values: Any, baseline: Any) -> list[float]:
    """95% interval of mean(values) - mean(baseline) over the same rows: Newcombe's hybrid score interval for paired
    shares (his method 10: each side's Wilson interval, joined through the rows' correlation). Right/wrong outcomes
    give his interval exactly; graded scores in [0, 1] the same construction with their Pearson correlation. Where
    no row differs it would shrink to a point: then it is plus or minus Wilson's upper bound on the share of rows
    that could differ (0 of them seen)."""
    import math

    first, second = _row_means(values), _row_means(baseline)
    rows = len(first)
    if not (abs(first - second) > 1e-12).any():
        bound = wilson_interval(0.0, rows)[1]
        return [-bound, bound]
    p1, p2 = float(first.mean()), float(second.mean())
    (l1, u1), (l2, u2) = wilson_interval(p1, rows), wilson_interval(p2, rows)
    phi = _correlation(first, second)
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return [round(max(-1.0, p1 - p2 - below), 4), round(min(1.0, p1 - p2 + above), 4)]


def sign_flip_p(values: Any, baseline: Any, seed: int = 0) -> float:
    """Two-sided p-value of a paired sign-flip test of the rows' score differences: the share of sign assignments to
    them whose sum is at least as far from zero. For right/wrong outcomes it is the exact McNemar test (a binomial
    test of the discordant rows), computed in closed form; for graded scores, exact up to 16 differing rows, else
    from 20,000 random flips (seeded)."""
    import itertools
    import math

    import numpy as np

    differences = _row_means(values) - _row_means(baseline)
    differences = differences[np.abs(differences) > 1e-12]
    count = len(differences)
    if count == 0:
        return 1.0
    if np.all(np.isclose(np.abs(differences), 1.0)):
        wins = int((differences > 0).sum())
        fewer = min(wins, count - wins)
        tail = sum(math.comb(count, i) for i in range(fewer + 1)) / 2**count
        return round(min(1.0, 2 * tail), 6)
    observed = abs(differences.sum()) - 1e-9
    if count <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=count)))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(SIGN_FLIPS, count))
    return round(float((np.abs(signs @ differences) >= observed).mean()), 6)


def paired_comparison(values: Any, baseline: Any) -> dict[str, Any]:
    """Two runs' scores in [0, 1] on the same rows (one list each, or one list per seed): the difference of their
    means, its 95% interval (`newcombe_interval`; with several seeds, widened to the bootstrap over rows and seeds),
    the sign-flip test's p (exact McNemar for right/wrong outcomes, on each row's mean over seeds), and whether the
    difference is beyond noise: p < 0.05 and an interval that excludes zero."""
    import numpy as np

    if not len(values) or not len(baseline) or _rows_of(values) != _rows_of(baseline) or not _rows_of(values):
        raise ValueError("a paired difference needs the same rows, at least one, in both runs")
    interval = newcombe_interval(values, baseline)
    seeded = max(np.atleast_2d(np.asarray(v, dtype=float)).shape[0] for v in (values, baseline)) > 1
    if seeded:
        interval = _hull(interval, paired_difference_interval(values, baseline))
    p = sign_flip_p(values, baseline)
    difference = round(float(_row_means(values).mean() - _row_means(baseline).mean()), 4)
    return {
        "difference": difference,
        "ci95": interval,
        "p": p,
        "beyond_noise": p < 0.05 and (interval[0] > 0 or interval[1] < 0),
    }


def smallest_detectable_difference(rows: int) -> float:
    """The smallest difference in accuracy between two runs on `rows` rows that the exact paired test can call beyond
    noise: six discordant rows, all one way (a real difference needs more rows than that to be seen reliably)."""
    return round(FEWEST_DISCORDANT / rows, 4) if rows else float("nan")
