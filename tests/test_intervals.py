"""Intervals and exact tests at small n and at the edges (review M2): Wilson for one score, Newcombe and an exact
McNemar / sign-flip test for two runs on the same rows, the same rules across seeds."""

from __future__ import annotations

import pytest

from tuner.intervals import (
    newcombe_interval,
    paired_comparison,
    score_interval,
    sign_flip_p,
    smallest_detectable_difference,
    wilson_interval,
)


def test_a_perfect_score_on_20_rows_has_a_lower_end_below_one():
    low, high = score_interval([True] * 20)
    assert low == pytest.approx(0.8389, abs=1e-4)
    assert high == 1.0
    assert score_interval([False] * 10)[1] > 0.2  # 0 of 10 is not certainty either


def test_wilson_matches_its_closed_form():
    # 45 of 50: Wilson's 95% interval, as statsmodels' proportion_confint(method="wilson") gives it.
    assert wilson_interval(0.9, 50) == pytest.approx([0.7864, 0.9565], abs=1e-4)


def test_four_discordant_rows_all_one_way_are_not_beyond_noise():
    found = paired_comparison([True] * 50, [True] * 46 + [False] * 4)
    assert found["p"] == pytest.approx(0.125)  # exact McNemar: 2 * 0.5**4
    assert not found["beyond_noise"]
    assert found["ci95"][0] <= 0 < found["ci95"][1]
    five = paired_comparison([True] * 50, [True] * 45 + [False] * 5)
    assert five["p"] == pytest.approx(0.0625) and not five["beyond_noise"]


def test_six_discordant_rows_all_one_way_are_beyond_noise():
    found = paired_comparison([True] * 50, [True] * 44 + [False] * 6)
    assert found["p"] == pytest.approx(0.03125)
    assert found["beyond_noise"] and found["ci95"][0] > 0
    assert smallest_detectable_difference(50) == pytest.approx(0.12)


def test_identical_runs_differ_by_nothing():
    outcomes = [True, False] * 20
    found = paired_comparison(outcomes, outcomes)
    assert found["difference"] == 0 and found["p"] == 1.0 and not found["beyond_noise"]
    low, high = found["ci95"]
    assert low < 0 < high  # an interval, not a point: 40 rows cannot rule out a few points either way


def test_graded_scores_use_the_sign_flip_test():
    better = [0.9, 0.8, 1.0, 0.7, 0.9, 0.8, 0.95, 0.85, 0.9, 0.75] * 3
    worse = [value - 0.3 for value in better]
    assert sign_flip_p(better, worse) < 0.001
    assert paired_comparison(better, worse)["beyond_noise"]
    assert sign_flip_p(better, better) == 1.0
    low, high = newcombe_interval(better, worse)
    assert low < 0.3 < high


def test_seeds_widen_the_interval_where_they_spread():
    one = score_interval([True] * 18 + [False] * 2)
    seeds = score_interval([[True] * 18 + [False] * 2, [True] * 10 + [False] * 10])
    assert seeds[0] < one[0]
    same = paired_comparison([[True] * 50, [True] * 50], [[True] * 46 + [False] * 4] * 2)
    assert not same["beyond_noise"]
