"""Seed statistics for the efficacy tables: mean ± std, paired differences and a paired t-test.

The p-value is two-sided, from Student's t distribution with n - 1 degrees of freedom. scipy is used
when it is installed (`scipy.stats.t.sf`); otherwise the same value comes from the regularised
incomplete beta function, `P(|T| > t) = I_x(df / 2, 1 / 2)` with `x = df / (df + t^2)`, evaluated by
its continued fraction (modified Lentz). The two agree to about 1e-12 (tests/benchmarks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std 0 for a single value."""
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


@dataclass(frozen=True)
class Paired:
    """`a - b` over seeds: mean, std, how many seeds went up / down, and the paired t-test's p-value."""

    mean: float
    std: float
    up: int
    down: int
    n: int
    p: float  # nan with fewer than 2 seeds

    def favours(self, higher_is_better: bool) -> int:
        """Seeds whose difference goes the way that is better for `a`."""
        return self.up if higher_is_better else self.down


def paired(a: list[float], b: list[float]) -> Paired:
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples need the same non-zero length, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b, strict=True)]
    m, s = mean_std(d)
    return Paired(mean=m, std=s, up=sum(x > 0 for x in d), down=sum(x < 0 for x in d), n=len(d),
                  p=paired_t_pvalue(d))


def paired_t_pvalue(d: list[float]) -> float:
    """Two-sided p-value of H0: mean(d) = 0. With zero spread: 1 if every d is 0, else 0; nan below 2 values."""
    n = len(d)
    if n < 2:
        return math.nan
    m, s = mean_std(d)
    if s == 0.0:
        return 1.0 if m == 0.0 else 0.0
    return t_two_sided(m / (s / math.sqrt(n)), n - 1)


def t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    try:
        from scipy.stats import t as student_t
    except ImportError:
        return t_two_sided_no_scipy(t, df)
    return float(2.0 * student_t.sf(abs(t), df))


def t_two_sided_no_scipy(t: float, df: float) -> float:
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float, eps: float = 1e-15, max_iter: int = 500) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")
