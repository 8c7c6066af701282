"""Mean, spread and Student's t quantile for the verdict rule (the quantile from `scipy.stats.t`)."""

from __future__ import annotations

import math


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std 0 for a single value."""
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


def t_quantile(p: float, df: float) -> float:
    """The `p` quantile of Student's t (p > 0.5): the t with P(T <= t) = p."""
    if not 0.5 < p < 1.0:
        raise ValueError(f"p must lie in (0.5, 1), got {p}")
    from scipy.stats import t as student_t

    return float(student_t.ppf(p, df))
