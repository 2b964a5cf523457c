import math

import pytest

from mathtune.core.stats import linear_change_pct, mcnemar_exact, paired_bootstrap_difference, paired_counts, wilson_interval


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_mcnemar_exact_matches_binomial_by_hand():
    # b=1, c=9: p = 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_paired_counts():
    a = [True, True, False, False, False]
    b = [True, False, True, True, False]
    assert paired_counts(a, b) == {"improved": 2, "regressed": 1, "both_right": 1, "both_wrong": 1}


def test_paired_bootstrap_is_seeded_and_brackets_the_difference():
    a = [i % 2 == 0 for i in range(200)]
    b = [i % 3 != 0 for i in range(200)]
    diff, lo, hi = paired_bootstrap_difference(a, b, resamples=2000, seed=1)
    assert diff == pytest.approx(sum(b) / 200 - sum(a) / 200)
    assert lo < diff < hi
    assert (diff, lo, hi) == paired_bootstrap_difference(a, b, resamples=2000, seed=1)
    # Identical models: zero difference, zero-width interval.
    assert paired_bootstrap_difference(a, a, resamples=100) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_interval_is_narrower_than_unpaired_for_correlated_models():
    a = [i % 2 == 0 for i in range(400)]
    b = list(a)
    b[1] = b[3] = True  # two improvements, otherwise identical
    _, lo, hi = paired_bootstrap_difference(a, b, resamples=2000)
    unpaired_half_width = 1.96 * math.sqrt(2 * 0.25 / 400)
    assert hi - lo < unpaired_half_width


def test_linear_change_pct():
    assert linear_change_pct([0, 10], [2.0, 1.0]) == pytest.approx(-50.0)
    assert linear_change_pct([0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0]) == pytest.approx(0.0)
    assert linear_change_pct([5], [1.0]) is None
