"""Confidence intervals for a difference of seed means (issue 15: a Δ column says whether it is significant).

Welch's t interval (Welch, "The generalization of Student's problem when several different population variances
are involved", Biometrika 1947), which does not assume the two methods' seed-to-seed variances are equal: for
samples ``a`` (n_a seeds) and ``b`` (n_b seeds) with sample variances s_a², s_b² (ddof 1),

    Δ = mean(a) − mean(b),   se² = s_a²/n_a + s_b²/n_b,
    ν = se⁴ / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1))   (Welch–Satterthwaite),
    Δ ± t_{(1+c)/2, ν} · se   at confidence c.

With fewer than two values on either side there is no variance to estimate, and the interval is absent
(``None``), never zero-width. When both samples have zero variance (every seed scored the same), se = 0 and ν is
0/0: the interval collapses to the point Δ, significant exactly when Δ ≠ 0. When only one has zero variance the
formula applies unchanged (ν = n − 1 of the other side).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Interval:
    """``delta`` = mean(a) − mean(b) with its interval [``low``, ``high``] at ``confidence``; ``df``: Welch's
    degrees of freedom (``None`` in the degenerate zero-variance case)."""

    delta: float
    low: float
    high: float
    confidence: float
    df: float | None

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0 or self.high < 0

    def format(self, digits: int = 1) -> str:
        """``"+3.2 [+1.1, +5.3]"``: signed, ``digits`` decimals (no ``-0.0``)."""
        return f"{_signed(self.delta, digits)} [{_signed(self.low, digits)}, {_signed(self.high, digits)}]"

    def __str__(self) -> str:
        return self.format()


def _signed(value: float, digits: int) -> str:
    text = f"{value:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text


def welch_interval(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> Interval | None:
    """Welch's t interval for mean(a) − mean(b) over seeds; ``None`` when either side has fewer than two values.
    NaN values (missing runs) are left out before counting."""
    xs = [float(v) for v in a if not math.isnan(float(v))]
    ys = [float(v) for v in b if not math.isnan(float(v))]
    if len(xs) < 2 or len(ys) < 2:
        _check_confidence(confidence)
        return None
    return welch_from_summary(_mean(xs), math.sqrt(_variance(xs)), len(xs), _mean(ys), math.sqrt(_variance(ys)),
                              len(ys), confidence)


def welch_from_summary(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int,
                       confidence: float = 0.95) -> Interval | None:
    """The same interval from each side's mean, sample std (ddof 1) and count, as a report's CSV holds them
    (``mean``, ``std``, ``n``); ``None`` when either count is under two."""
    _check_confidence(confidence)
    if n_a < 2 or n_b < 2:
        return None
    delta = mean_a - mean_b
    va, vb = std_a * std_a / n_a, std_b * std_b / n_b
    se2 = va + vb
    if se2 == 0.0:
        return Interval(delta, delta, delta, confidence, None)
    df = se2 * se2 / (va * va / (n_a - 1) + vb * vb / (n_b - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * math.sqrt(se2)
    return Interval(delta, delta - half, delta + half, confidence, df)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), not {confidence}")


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _variance(values: list[float]) -> float:
    mean = _mean(values)
    return math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
