"""The verdict rule, stated before any number: a corrected confidence interval against 0 and a smallest effect.

Per claim there is one primary metric and one contrast. `d_s` is the seed's paired difference, signed so
that a positive value is the direction the paper claims (for CHAIR_i: the ablated run's CHAIR_i minus the
full method's, in points). Over the n seeds the mean paired difference gets a two-sided t interval at level
1 - ALPHA / k, Bonferroni-corrected over the k claims of the benchmark; then

* **holds**: the interval lies above 0 and reaches +delta (a real effect of the claimed sign that is not
  shown to be smaller than the smallest effect of interest);
* **does not hold**: the interval lies below +delta (the effect is reversed, absent, or smaller than delta);
* **inconclusive**: otherwise (the interval holds both 0 and +delta). It comes with the number of seeds that
  would decide it if the mean and spread stayed as observed.

The two decisions cannot both apply. How many seeds went up or down is reported as description only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.efficacy.stats import mean_std, t_quantile


ALPHA = 0.05
HOLDS, NOT_HOLDS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
MAX_SEEDS = 1000


@dataclass(frozen=True)
class Decision:
    verdict: str
    n: int
    mean: float
    std: float
    lo: float
    hi: float
    level: float  # the interval's confidence level, 1 - ALPHA / k
    delta: float
    k: int
    up: int  # seeds with d > 0 (description only)
    down: int
    seeds_to_decide: int | None  # inconclusive only: the seed count that would decide at this mean and spread
    decided_as: str | None = None  # the verdict those seeds would give

    def interval(self, digits: int = 2) -> str:
        return f"[{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


def level(k: int) -> float:
    return 1.0 - ALPHA / k


def half_width(std: float, n: int, k: int) -> float:
    """Half the width of the (1 - ALPHA / k) two-sided t interval of a mean over n values."""
    if n < 2:
        return math.inf
    return t_quantile(1.0 - ALPHA / (2.0 * k), n - 1) * std / math.sqrt(n)


def interval(diffs: list[float], k: int) -> tuple[float, float, float, float]:
    """(mean, std, lo, hi): the (1 - ALPHA / k) t interval of the mean; no spread over >= 2 values: the mean itself."""
    n = len(diffs)
    mean, std = mean_std(diffs)
    h = 0.0 if (n >= 2 and std == 0.0) else half_width(std, n, k)
    return mean, std, mean - h, mean + h


def classify(lo: float, hi: float, delta: float) -> str:
    if hi < delta:
        return NOT_HOLDS
    if lo > 0.0:
        return HOLDS
    return INCONCLUSIVE


def seeds_to_decide(mean: float, std: float, delta: float, k: int, n: int) -> tuple[int | None, str | None]:
    """The smallest seed count above `n` at which the same mean and spread would give a decision."""
    if std == 0.0:
        return None, None
    for m in range(max(n + 1, 2), MAX_SEEDS + 1):
        h = half_width(std, m, k)
        verdict = classify(mean - h, mean + h, delta)
        if verdict != INCONCLUSIVE:
            return m, verdict
    return None, None


def decide(diffs: list[float], delta: float, k: int) -> Decision:
    """The rule on the per-seed paired differences `diffs` (positive = the claimed direction)."""
    if not diffs:
        raise ValueError("no paired differences to decide on")
    if delta <= 0 or k < 1:
        raise ValueError(f"delta must be > 0 and k >= 1, got delta={delta}, k={k}")
    n = len(diffs)
    mean, std, lo, hi = interval(diffs, k)
    verdict = classify(lo, hi, delta)
    more, as_ = seeds_to_decide(mean, std, delta, k, n) if verdict == INCONCLUSIVE else (None, None)
    return Decision(verdict, n, mean, std, lo, hi, level(k), delta, k, up=sum(d > 0 for d in diffs),
                    down=sum(d < 0 for d in diffs), seeds_to_decide=more, decided_as=as_)
