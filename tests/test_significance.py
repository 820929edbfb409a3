"""Welch intervals (issue 15) against values worked out by hand: the formula written out below with ``math``,
scipy only for the t quantile, and a printed t-table value where the degrees of freedom are whole."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from kdbench.report.significance import Interval, welch_interval

T_975_DF4 = 2.776  # Student's t table, two-sided 95%, 4 degrees of freedom


def hand_welch(a: list[float], b: list[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(delta, low, high, df), Welch's interval written out term by term."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    sa2 = sum((x - ma) ** 2 for x in a) / (na - 1)
    sb2 = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se = math.sqrt(sa2 / na + sb2 / nb)
    df = (sa2 / na + sb2 / nb) ** 2 / ((sa2 / na) ** 2 / (na - 1) + (sb2 / nb) ** 2 / (nb - 1))
    q = stats.t.ppf(1 - (1 - confidence) / 2, df)
    return ma - mb, ma - mb - q * se, ma - mb + q * se, df


def test_golden_unequal_variances() -> None:
    # a: mean 5, variance 4; b: mean 2, variance 1; se² = 4/3 + 1/3 = 5/3; ν = (5/3)² / ((4/3)²/2 + (1/3)²/2) = 50/17
    a, b = [3.0, 5.0, 7.0], [1.0, 2.0, 3.0]
    interval = welch_interval(a, b)
    half = stats.t.ppf(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert interval.df == pytest.approx(50 / 17, abs=1e-12)
    assert interval.delta == pytest.approx(3.0, abs=1e-12)
    assert interval.low == pytest.approx(3.0 - half, abs=1e-9) and interval.high == pytest.approx(3.0 + half, abs=1e-9)
    assert half == pytest.approx(4.1554, abs=1e-4)  # t(0.975, 2.94) ≈ 3.2188 times √(5/3) ≈ 1.2910
    delta, low, high, df = hand_welch(a, b)
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-9)
    assert low < 0 < high and not interval.significant


def test_golden_whole_degrees_of_freedom_against_the_t_table() -> None:
    # equal sizes and variances (1 each, n = 3): ν = 2(n − 1) = 4, se = √(2/3), Δ = 1
    interval = welch_interval([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert interval.df == pytest.approx(4.0, abs=1e-12)
    se = math.sqrt(2 / 3)
    assert interval.high == pytest.approx(1.0 + T_975_DF4 * se, abs=1e-3)
    assert interval.low == pytest.approx(1.0 - T_975_DF4 * se, abs=1e-3)
    assert interval.high == pytest.approx(1.0 + stats.t.ppf(0.975, 4) * se, abs=1e-9)
    assert not interval.significant


def test_one_side_without_variance_uses_the_other_sides_degrees_of_freedom() -> None:
    # a constant: se² = 0 + 2.5/5 = 0.5, ν = 0.5² / (0.5²/4) = 4, Δ = 10 − 3 = 7
    interval = welch_interval([10.0] * 4, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert interval.df == pytest.approx(4.0, abs=1e-12)
    half = stats.t.ppf(0.975, 4) * math.sqrt(0.5)
    assert (interval.low, interval.high) == pytest.approx((7.0 - half, 7.0 + half), abs=1e-9)
    assert interval.significant


def test_both_sides_without_variance_collapse_to_the_point() -> None:
    apart = welch_interval([2.0, 2.0], [1.0, 1.0, 1.0])
    assert (apart.delta, apart.low, apart.high, apart.df) == (1.0, 1.0, 1.0, None) and apart.significant
    same = welch_interval([2.0, 2.0], [2.0, 2.0])
    assert (same.low, same.high) == (0.0, 0.0) and not same.significant


def test_fewer_than_two_values_give_no_interval() -> None:
    assert welch_interval([1.0], [1.0, 2.0]) is None
    assert welch_interval([1.0, 2.0], []) is None
    assert welch_interval([1.0, float("nan")], [1.0, 2.0]) is None


def test_missing_runs_are_left_out() -> None:
    with_nan = welch_interval([3.0, float("nan"), 5.0, 7.0], [1.0, 2.0, 3.0])
    assert with_nan == welch_interval([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])


def test_confidence_level_and_agreement_with_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(40, 2, size=int(rng.integers(2, 7))).tolist()
        b = rng.normal(38, 4, size=int(rng.integers(2, 7))).tolist()
        for confidence in (0.9, 0.95, 0.99):
            interval = welch_interval(a, b, confidence)
            delta, low, high, df = hand_welch(a, b, confidence)
            assert (interval.delta, interval.low, interval.high, interval.df) == pytest.approx(
                (delta, low, high, df), abs=1e-9)
            ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
            assert (interval.low, interval.high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    narrow, wide = welch_interval([3.0, 5.0, 7.0], [1.0, 2.0, 3.0], 0.8), welch_interval([3.0, 5.0, 7.0],
                                                                                           [1.0, 2.0, 3.0], 0.99)
    assert wide.low < narrow.low < narrow.high < wide.high
    with pytest.raises(ValueError):
        welch_interval([1.0, 2.0], [1.0, 2.0], 1.0)


def test_significance_means_the_interval_excludes_zero() -> None:
    assert Interval(3.2, 1.1, 5.3, 0.95, 4.0).significant
    assert Interval(-3.2, -5.3, -1.1, 0.95, 4.0).significant
    assert not Interval(1.0, -0.5, 2.5, 0.95, 4.0).significant
    assert not Interval(1.0, 0.0, 2.0, 0.95, 4.0).significant


def test_format() -> None:
    assert Interval(3.2, 1.1, 5.3, 0.95, 4.0).format() == "+3.2 [+1.1, +5.3]"
    assert str(Interval(-2.26, -4.0, -0.54, 0.95, 4.0)) == "-2.3 [-4.0, -0.5]"
    assert Interval(0.04, -0.04, 0.12, 0.95, 4.0).format() == "+0.0 [+0.0, +0.1]"
    assert Interval(1.234, 0.5, 2.0, 0.95, 4.0).format(digits=2) == "+1.23 [+0.50, +2.00]"
