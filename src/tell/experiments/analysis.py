"""Numbers the report derives from the results table: S-curve fits and token-efficiency."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def logistic(x, lo, hi, k, x0):
    return lo + (hi - lo) / (1.0 + np.exp(-k * (x - x0)))


@dataclass
class SCurve:
    lo: float
    hi: float          # plateau
    k: float           # steepness per decade of general tokens
    x0: float          # midpoint, log10(general tokens)
    rmse: float

    @property
    def midpoint_tokens(self) -> float:
        return 10 ** self.x0


def fit_scurve(general_tokens: Sequence[float], values: Sequence[float]) -> SCurve | None:
    """Fit value = lo + (hi - lo) / (1 + exp(-k (log10 g - x0))) over the points with g > 0, as a *rising*
    curve (hi >= lo, k >= 0): a falling or humped series gets a poor fit, which its RMSE shows.
    None when there are fewer than 4 distinct points or the fit does not converge."""
    from scipy.optimize import curve_fit

    pts = [(math.log10(g), v) for g, v in zip(general_tokens, values) if g and g > 0 and v is not None]
    if len({x for x, _ in pts}) < 4 or max(v for _, v in pts) - min(v for _, v in pts) < 1e-9:
        return None  # too few budgets, or a flat line: no S-curve to speak of
    x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    span = max(y.max() - y.min(), 1e-9)
    rising = lambda x, lo, d, k, x0: logistic(x, lo, lo + d, k, x0)  # d = plateau - floor >= 0
    p0 = [y.min(), span, 2.0, float(np.median(x))]
    bounds = ([y.min() - span, 0.0, 0.0, x.min() - 3], [y.max(), 2 * span, 50.0, x.max() + 3])
    try:
        (lo, d, k, x0), _ = curve_fit(rising, x, y, p0=p0, bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    rmse = float(np.sqrt(np.mean((rising(x, lo, d, k, x0) - y) ** 2)))
    return SCurve(float(lo), float(lo + d), float(k), float(x0), rmse=rmse)


def interpolate_tokens(curve_tokens: Sequence[float], curve_values: Sequence[float], target: float) -> float | None:
    """The task tokens at which a curve (metric vs task tokens, interpolated linearly in log10 tokens)
    first reaches `target`. The curve is made monotone (running maximum) first. None if it never does;
    the smallest point's tokens if it is already there."""
    pts = sorted((t, v) for t, v in zip(curve_tokens, curve_values) if t and t > 0 and v is not None)
    if not pts:
        return None
    best, mono = -math.inf, []
    for t, v in pts:
        best = max(best, v)
        mono.append((t, best))
    if target <= mono[0][1]:
        return float(mono[0][0])
    for (t1, v1), (t2, v2) in zip(mono, mono[1:]):
        if v1 < target <= v2:
            f = (target - v1) / (v2 - v1)
            return float(10 ** (math.log10(t1) + f * (math.log10(t2) - math.log10(t1))))
    return None


def token_efficiency(sft: Sequence[tuple[float, float]], tell: Sequence[tuple[float, float, float | None, float | None]]
                     ) -> list[dict]:
    """For each tell point (task tokens, value, ci_low, ci_high), the SFT task tokens that reach the same
    score (`sft` = [(task tokens, value)]), the ratio sft/tell, and the interval from the tell CI."""
    st, sv = [p[0] for p in sft], [p[1] for p in sft]
    first = min(sft)[1] if sft else None
    out = []
    for t, v, lo, hi in tell:
        eq = interpolate_tokens(st, sv, v)
        eq_lo = interpolate_tokens(st, sv, lo) if lo is not None else None
        eq_hi = interpolate_tokens(st, sv, hi) if hi is not None else None
        out.append({"tell_task_tokens": t, "value": v, "sft_equivalent_tokens": eq,
                    "ratio": eq / t if eq else None,
                    "ratio_ci": [eq_lo / t if eq_lo else None, eq_hi / t if eq_hi else None],
                    "beyond_sft_curve": eq is None, "at_or_below_sft_start": first is not None and v <= first})
    return out
