"""Means with 95% t-intervals over seeds, paired differences, and a correlation with its interval.

The t quantiles for 1-30 degrees of freedom come from a table (scipy's ``t.ppf(0.975, df)`` to 6
decimals, checked by a test), so a report is the same bytes with or without scipy; beyond 30,
scipy when installed, else the normal quantile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

T_975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
         2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
         2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
"""The 97.5% quantile of Student's t with 1, 2, ..., 30 degrees of freedom."""

Z_975 = 1.959964


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` >= 1 degrees of freedom."""
    if df <= len(T_975):
        return T_975[df - 1]
    try:  # optional: only for more than 31 seeds
        from scipy.stats import t
    except ImportError:
        return Z_975
    return float(t.ppf(0.975, df))


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its 95% t-interval (``half`` is NaN for fewer than 2 values)."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        """The interval's lower bound."""
        return self.mean - self.half

    @property
    def high(self) -> float:
        """The interval's upper bound."""
        return self.mean + self.half

    def above(self) -> bool:
        """Whether the whole interval lies above 0 (never for fewer than 2 values)."""
        return self.n >= 2 and self.low > 0

    def below(self) -> bool:
        """Whether the whole interval lies below 0 (never for fewer than 2 values)."""
        return self.n >= 2 and self.high < 0


def interval(values: Sequence[float]) -> Interval:
    """Mean and 95% t-interval of ``values`` (NaN mean for none)."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, 0)
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, math.nan, 1)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, t_quantile(n - 1) * sd / math.sqrt(n), n)


def paired(a: dict[int, float], b: dict[int, float]) -> Interval:
    """The interval of ``a[s] - b[s]`` over the seeds ``s`` both have."""
    return interval([a[s] - b[s] for s in sorted(a.keys() & b.keys())])


def correlation(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Pearson's r and its 95% interval (Fisher's z; NaN bounds for fewer than 4 points)."""
    n = len(x)
    if n < 3:
        return math.nan, math.nan, math.nan
    mx, my = math.fsum(x) / n, math.fsum(y) / n
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = math.fsum((a - mx) ** 2 for a in x), math.fsum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return math.nan, math.nan, math.nan
    r = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
    if n < 4 or abs(r) == 1:
        return r, math.nan, math.nan
    z, se = math.atanh(r), 1 / math.sqrt(n - 3)
    return r, math.tanh(z - Z_975 * se), math.tanh(z + Z_975 * se)
