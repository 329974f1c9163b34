"""Honest statistics for fleet experiments: means with 95 % confidence intervals over seeds, the test-split
standard error of an accuracy, and whether two policies differ by more than the noise.

No scipy: Student's t quantiles come from the standard table (exact to the 3 decimals printed in every
textbook) with interpolation in 1/df between tabulated degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

# two-sided 95 % (0.975 one-sided) quantiles of Student's t by degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
_Z975 = 1.960


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1 (got {df})")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    if df > keys[-1]:
        lo_df, lo_t, hi_inv, hi_t = keys[-1], _T975[keys[-1]], 0.0, _Z975
    else:
        lo_df = max(k for k in keys if k < df)
        hi = min(k for k in keys if k > df)
        lo_t, hi_inv, hi_t = _T975[lo_df], 1.0 / hi, _T975[hi]
    lo_inv = 1.0 / lo_df
    w = (1.0 / df - hi_inv) / (lo_inv - hi_inv)  # linear in 1/df
    return hi_t + w * (lo_t - hi_t)


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95 % confidence interval of the mean), Student t over the finite values.

    One value: (value, nan), no interval can be given. No finite values: (nan, nan).
    """
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    mean = sum(xs) / n
    if n == 1:
        return mean, math.nan
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, t975(n - 1) * math.sqrt(var / n)


def paired_diff_ci95(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean and 95 % half-width of a - b over paired runs (same seeds: same data, trajectories, budget)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths (got {len(a)} and {len(b)})")
    return mean_ci95([x - y for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)])


def within_noise(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when the 95 % interval of the paired difference a - b contains 0 (or cannot be computed)."""
    d, h = paired_diff_ci95(a, b)
    return not (math.isfinite(d) and math.isfinite(h)) or abs(d) <= h


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n independent examples: sqrt(p (1 - p) / n)."""
    if n < 1 or not (0.0 <= p <= 1.0):
        return math.nan
    return math.sqrt(p * (1.0 - p) / n)


def average_accuracy_se(per_task: Mapping[str, tuple[float, int]]) -> float:
    """Standard error from the test splits of the average of per-task accuracies {task: (p, n_examples)}.

    Tasks are scored on disjoint splits, so SE = sqrt(sum_t SE_t^2) / T. Token tasks pass their number of
    sentences (conservative: tokens of one sentence are not independent).
    """
    ses = [binomial_se(p, n) for p, n in per_task.values()]
    if not ses or any(math.isnan(s) for s in ses):
        return math.nan
    return math.sqrt(sum(s * s for s in ses)) / len(ses)


def fmt_ci(mean: float, half: float, fmt: str = ".3f") -> str:
    """'m ± h', 'm' when there is no interval, 'n/a' when there is no mean."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if half is None or not math.isfinite(half):
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format(half, fmt.replace('+', ''))}"
