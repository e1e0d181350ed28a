"""Uncertainty for tell's findings (GUIDE section 6, rules 4 and 7).

* `Resampler`, `estimate`, `paired`: a bootstrap over seeds AND test items, paired across cells.
* `fit_scaling`: constant vs line vs rising logistic in log10(general tokens), chosen by leave-one-out
  error, with no parameter read outside the measured range.
* `token_efficiency`: how many SFT task tokens reach a tell cell's score, with a joint bootstrap interval.

Everything here is numpy/scipy only, and every refusal to compute is either a ValueError (bad input) or a
returned dict that says why in words (too little data), so the report can print the reason as it is.

A "cell" result is `{seed: 1-D array of per-item scores}`; every seed of every cell scores the same test
items in the same order (that is what makes pairing possible).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Mapping, Sequence

import numpy as np

Scores = Mapping[int, np.ndarray]

# Resamplers hold a (resamples x items) count matrix; above this many cells (400 MB of float64) we refuse
# rather than let a report quietly eat the machine's memory.
_MAX_COUNT_CELLS = 50_000_000
# Logistic refits on bootstrap replicates are the slow part of fit_scaling (~2 ms each); only the first this
# many replicate rows are refitted (rows are already random resamples, so the first ones are a random subset).
MAX_REFITS = 200
# Steepness bound of the logistic, per decade of general tokens: 50 is a step between two measured ratios.
_K_MAX = 50.0
# Evaluation budget of the logistic's final polish (from the grid optimum a well-posed fit needs a handful).
_MAX_NFEV = 100


# --------------------------------------------------------------------------------------------------------
# Scores and the crossed bootstrap
# --------------------------------------------------------------------------------------------------------

def _check_scores(scores: Scores, name: str = "scores") -> dict[int, np.ndarray]:
    """Seed -> float64 1-D array, all the same length, all finite. Every problem is a ValueError."""
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError(f"{name}: expected a non-empty mapping seed -> per-item scores, got {type(scores).__name__}")
    out: dict[int, np.ndarray] = {}
    for k, v in scores.items():
        try:
            seed = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: seed {k!r} is not an integer") from None
        if seed in out:
            raise ValueError(f"{name}: seed {seed} appears twice")
        arr = np.asarray(v, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{name}: seed {seed} must have a non-empty 1-D array of item scores, "
                             f"got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: seed {seed} has {int(np.sum(~np.isfinite(arr)))} NaN/inf item scores; "
                             "score every item (a failed item scores 0), never leave NaN")
        out[seed] = arr
    lengths = {s: a.size for s, a in out.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{name}: seeds score different numbers of items {lengths}; every seed must score the "
                         "same test items in the same order")
    return out


class Resampler:
    """Bootstrap replicates over seeds and test items, crossed.

    Each replicate b draws, with replacement, S seeds out of the S given and ONE resample of the N item
    indices, and that same item resample is applied to every drawn seed. Items are shared by all seeds (every
    seed scores the same test set), so seed and item are crossed factors: an item that is hard is hard for
    every seed. Resampling items independently per seed would treat S x N scores as independent and shrink
    the item variance by a factor S, i.e. intervals that get narrower just by adding seeds on the same test
    set. The crossed scheme keeps the item term at ~var_item / N whatever S is; it double-counts the small
    seed x item interaction, so it errs on the wide (conservative) side.

    The seed resample is a plain percentile bootstrap, so with few seeds the seed part of the interval is
    narrow-biased (a bootstrap of n values has (n - 1) / n of the plug-in variance, and with 3 seeds only 10
    distinct seed multisets exist): this is why a verdict needs at least 3 seeds and a study 5.

    Replicates are a deterministic function of (sorted seeds, n_items, resamples, seed): two cells with the
    same seeds and test items get the very same resamples, so replicate b of one cell and replicate b of
    another are a joint draw, and differences or fits across cells can use them index by index.
    """

    def __init__(self, seeds: Sequence[int], n_items: int, resamples: int = 1000, seed: int = 0):
        seeds = tuple(sorted(int(s) for s in seeds))
        if not seeds:
            raise ValueError("Resampler needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"Resampler: duplicate seeds in {list(seeds)}")
        if int(n_items) < 1 or int(resamples) < 1:
            raise ValueError(f"Resampler needs n_items >= 1 and resamples >= 1, got {n_items} and {resamples}")
        n_items, resamples = int(n_items), int(resamples)
        if n_items * resamples > _MAX_COUNT_CELLS:
            raise ValueError(f"Resampler: {resamples} resamples x {n_items} items needs "
                             f"{n_items * resamples * 8 / 1e9:.1f} GB; use fewer resamples")
        self.seeds, self.n_items, self.resamples = seeds, n_items, resamples
        s = len(seeds)
        rng = np.random.default_rng(seed)
        seed_idx = rng.integers(0, s, size=(resamples, s))
        item_idx = rng.integers(0, n_items, size=(resamples, n_items))
        # Replicates are linear in the scores, so store how often each seed / item is drawn, not the draws:
        # a replicate is then counts_seed . X . counts_item / (S N), one matrix product for all of them.
        self._seed_counts = _row_counts(seed_idx, s)
        self._item_counts = _row_counts(item_idx, n_items)

    def _matrix(self, scores: Scores) -> np.ndarray:
        sc = _check_scores(scores)
        if set(sc) != set(self.seeds):
            missing, extra = sorted(set(self.seeds) - set(sc)), sorted(set(sc) - set(self.seeds))
            raise ValueError(f"scores' seeds {sorted(sc)} differ from the resampler's {list(self.seeds)} "
                             f"(missing {missing}, extra {extra})")
        n = next(iter(sc.values())).size
        if n != self.n_items:
            raise ValueError(f"scores have {n} items per seed, the resampler was built for {self.n_items}")
        return np.stack([sc[s] for s in self.seeds])

    def replicates(self, scores: Scores) -> np.ndarray:
        """(resamples,) array: per replicate, the mean over the drawn seeds of the mean over the drawn items."""
        x = self._matrix(scores)
        per_seed = x @ self._item_counts.T                                # (S, B): item-resampled sums
        total = np.einsum("bs,sb->b", self._seed_counts, per_seed)
        return total / (len(self.seeds) * self.n_items)

    def point(self, scores: Scores) -> float:
        """Mean over seeds of the mean over items."""
        return float(self._matrix(scores).mean(axis=1).mean())


def _row_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """For each row of indices, how many times each of 0..n-1 occurs (float64, read-only)."""
    rows = idx.shape[0]
    flat = (idx + (np.arange(rows) * n)[:, None]).ravel()
    counts = np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)
    counts.flags.writeable = False
    return counts


@functools.lru_cache(maxsize=8)
def _resampler(seeds: tuple[int, ...], n_items: int, resamples: int, seed: int) -> Resampler:
    # A report estimates many cells with the same seeds and test set: build their resamples once.
    return Resampler(seeds, n_items, resamples, seed)


def _ci(reps: np.ndarray) -> list[float]:
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return [float(lo), float(hi)]


def estimate(scores: Scores, resamples: int = 1000, seed: int = 0) -> dict:
    """One cell's score with a 95% crossed (seed x item) bootstrap interval.

    Returns {"value": mean over seeds of the mean over items, "ci95": [lo, hi] (percentile interval of the
    replicates; [None, None] only with one seed AND one item), "seeds": int, "items": int,
    "verdict_ok": seeds >= 3, "replicates": np.ndarray (resamples,)}. With a single seed the interval still
    exists but holds item noise only, hence verdict_ok. Drop "replicates" before writing JSON; keep it to
    fit curves across cells (same seeds and items -> same resamples, see Resampler).
    """
    sc = _check_scores(scores)
    n_items = next(iter(sc.values())).size
    rs = _resampler(tuple(sorted(sc)), n_items, int(resamples), int(seed))
    reps = rs.replicates(sc)
    single = len(sc) == 1 and n_items == 1
    return {"value": rs.point(sc), "ci95": [None, None] if single else _ci(reps), "seeds": len(sc),
            "items": n_items, "verdict_ok": len(sc) >= 3, "replicates": reps}


def paired(a: Scores, b: Scores, resamples: int = 1000, seed: int = 0, min_seeds: int = 3) -> dict:
    """a - b on the seeds both cells have, paired on seeds and items.

    One Resampler over the common seeds draws the same seeds and items for both cells in each replicate,
    so what the two share (hard items, a lucky seed) cancels. Returns {"diff", "ci95": [lo, hi],
    "seeds": count of common seeds, "seeds_used": [common seeds], "items", "a_value", "b_value" (each on
    the common seeds), "verdict"}: "better" when ci95 low > 0, "worse" when high < 0, else "no detectable
    difference"; with fewer than `min_seeds` common seeds "no verdict (N seeds < min_seeds)" while the
    numbers are still given. ValueError when no seed is common or the cells score different item counts.
    """
    if int(min_seeds) < 1:
        raise ValueError(f"min_seeds must be >= 1, got {min_seeds}")
    sa, sb = _check_scores(a, "a"), _check_scores(b, "b")
    common = sorted(set(sa) & set(sb))
    if not common:
        raise ValueError(f"no seed in common: a has seeds {sorted(sa)}, b has {sorted(sb)}")
    na, nb = next(iter(sa.values())).size, next(iter(sb.values())).size
    if na != nb:
        raise ValueError(f"a scores {na} items per seed and b scores {nb}; a paired comparison needs the same items")
    rs = _resampler(tuple(common), na, int(resamples), int(seed))
    # Replicates are linear in the scores, so the replicates of a - b are those of the per-item differences.
    diff_scores = {s: sa[s] - sb[s] for s in common}
    reps = rs.replicates(diff_scores)
    ci = [None, None] if len(common) == 1 and na == 1 else _ci(reps)
    if len(common) < min_seeds:
        verdict = f"no verdict ({len(common)} seeds < {min_seeds})"
    elif ci[0] is None:
        verdict = "no verdict (1 seed and 1 item: no interval)"
    else:
        verdict = "better" if ci[0] > 0 else "worse" if ci[1] < 0 else "no detectable difference"
    return {"diff": rs.point(diff_scores), "ci95": ci, "seeds": len(common), "seeds_used": common, "items": na,
            "a_value": rs.point({s: sa[s] for s in common}), "b_value": rs.point({s: sb[s] for s in common}),
            "verdict": verdict}


# --------------------------------------------------------------------------------------------------------
# Scaling fits: constant vs line vs rising logistic in log10(general tokens)
# --------------------------------------------------------------------------------------------------------

def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow for large |z|


def _logistic(x, lo, hi, k, x0):
    return lo + (hi - lo) * _sigmoid(k * (np.asarray(x, dtype=np.float64) - x0))


def _rising(x, lo, d, k, x0):
    return lo + d * _sigmoid(k * (x - x0))


def _rising_jac(x, lo, d, k, x0):
    # Analytic Jacobian: halves the cost of the hundreds of refits that intervals and LOO need.
    s = _sigmoid(k * (x - x0))
    ds = d * s * (1.0 - s)
    return np.column_stack([np.ones_like(x), s, ds * (x - x0), -ds * k])


def _logistic_box(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on (lo, d = hi - lo, k, x0). x0 may go up to one data width (at least a decade) beyond the
    data, so that a curve whose midpoint is not in the data can say so rather than be forced inside."""
    span = float(np.ptp(y)) or 1e-6 * max(1.0, abs(float(np.mean(y))))  # a flat series still gets a box
    width = max(float(np.ptp(x)), 1.0)
    lb = np.array([y.min() - span, 0.0, 0.0, x.min() - width])
    ub = np.array([y.max() + span, 3 * span, _K_MAX, x.max() + width])
    return lb, ub


def _grid_logistic(x, y, ks, x0s, dmax) -> tuple[float, np.ndarray]:
    """Best (sse, [lo, d, k, x0]) over a (k, x0) grid. For fixed k and x0 the curve is linear in lo and d,
    so those are solved exactly (d clipped to [0, dmax]): a global search in 2-D, all in one numpy pass."""
    s = _sigmoid(ks[:, None, None] * (x[None, None, :] - x0s[None, :, None]))   # (K, X0, n)
    sc = s - s.mean(axis=2, keepdims=True)
    yc = y - y.mean()
    var = np.sum(sc * sc, axis=2)
    d = np.where(var > 1e-15, np.sum(sc * yc, axis=2) / np.maximum(var, 1e-15), 0.0)
    d = np.clip(d, 0.0, dmax)
    lo = y.mean() - d * s.mean(axis=2)
    sse = np.sum((y - lo[..., None] - d[..., None] * s) ** 2, axis=2)
    i, j = np.unravel_index(np.argmin(sse), sse.shape)
    return float(sse[i, j]), np.array([lo[i, j], d[i, j], ks[i], x0s[j]])


def _fit_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Least-squares rising logistic (lo, hi, k, x0) with k >= 0 and hi >= lo.

    The fit is not convex in (k, x0), and on noise around a flat line a local solver started anywhere drifts
    towards a step and crawls (curve_fit from 5 starts took 15 s per LOO pass here). So: a global grid over
    (k, x0) with lo and d solved exactly, zoomed twice around the best cell, then curve_fit's own bounded
    solver (least_squares, "trf") polishes from there with a capped budget and is kept only if it improves.
    """
    from scipy.optimize import least_squares

    lb, ub = _logistic_box(x, y)
    ks = np.concatenate([[0.0], np.geomspace(0.05, _K_MAX, 40)])
    x0s = np.linspace(lb[3], ub[3], 81)
    sse, p = _grid_logistic(x, y, ks, x0s, ub[1])
    dk = p[2] * (ks[2] / ks[1] - 1) if p[2] > 0 else ks[1]  # one coarse step (k's grid is geometric)
    dx = x0s[1] - x0s[0]
    for _ in range(2):  # zoom to one step either side of the best cell; the odd counts keep it on the grid
        ks = np.clip(np.linspace(p[2] - dk, p[2] + dk, 21), 0.0, _K_MAX)
        x0s = np.clip(np.linspace(p[3] - dx, p[3] + dx, 41), lb[3], ub[3])
        sse, p = _grid_logistic(x, y, ks, x0s, ub[1])
        dk, dx = dk / 10, dx / 20
    p0 = np.clip(p, lb + 1e-9 * (ub - lb), ub - 1e-9 * (ub - lb))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = least_squares(lambda q: _rising(x, *q) - y, p0, jac=lambda q: _rising_jac(x, *q),
                                bounds=(lb, ub), method="trf", max_nfev=_MAX_NFEV)
        if np.all(np.isfinite(res.x)) and float(np.sum(res.fun ** 2)) < sse:
            p = res.x
    except (RuntimeError, ValueError):
        pass  # the grid optimum stands
    return np.array([p[0], p[0] + p[1], p[2], p[3]]) if np.all(np.isfinite(p)) else None


def _fit_line(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    slope, intercept = np.polyfit(x, y, 1)
    return np.array([intercept, slope])


def _fit_constant(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.array([float(np.mean(y))])


# name -> (number of parameters, fit, predict, parameter names, shape name in the report)
_MODELS = {
    "constant": (1, _fit_constant, lambda p, x: np.full(np.shape(x), p[0]), ("c",), "constant"),
    "line": (2, _fit_line, lambda p, x: p[0] + p[1] * np.asarray(x), ("intercept", "slope"), "line in log tokens"),
    "logistic": (4, _fit_logistic, lambda p, x: _logistic(x, *p), ("lo", "hi", "k", "x0"), "S-curve"),
}
# Distinct x values each model needs (the brief's rule of thumb; the logistic's is `min_points`).
_MIN_DISTINCT = {"constant": 2, "line": 4}


def _loo_rmse(name: str, x: np.ndarray, y: np.ndarray) -> float | None:
    """Refit without each point and predict it: the error a model makes on a ratio it did not see."""
    _, fit, predict, _, _ = _MODELS[name]
    errs = []
    for i in range(x.size):
        keep = np.arange(x.size) != i
        p = fit(x[keep], y[keep])
        if p is None:
            return None
        errs.append(float(predict(p, x[i:i + 1])[0]) - y[i])
    return float(np.sqrt(np.mean(np.square(errs))))


def _pick_best(models: dict) -> str:
    """Lowest LOO RMSE; near-ties (1e-6 relative) go to the model with fewer parameters."""
    order = sorted(models, key=lambda m: _MODELS[m][0])
    best_loo = min(models[m]["loo_rmse"] for m in order)
    return next(m for m in order if models[m]["loo_rmse"] <= best_loo * (1 + 1e-6) + 1e-12)


def _fit_models(x: np.ndarray, y: np.ndarray, min_points: int) -> tuple[dict, dict, dict]:
    """Fit every model the data allow. Returns (report entries, raw parameter arrays, not fitted: reasons)."""
    d = len(np.unique(x))
    need = {**_MIN_DISTINCT, "logistic": min_points}
    entries, raw, skipped = {}, {}, {}
    for name, (_, fit, predict, pnames, _) in _MODELS.items():
        if d < need[name]:
            skipped[name] = f"{d} distinct ratios; this model needs at least {need[name]}"
            continue
        p, loo = fit(x, y), None
        if p is not None:
            loo = _loo_rmse(name, x, y)
        if p is None or loo is None:
            skipped[name] = "the least-squares fit failed (non-finite parameters)"
            continue
        raw[name] = p
        entries[name] = {"params": {n: float(v) for n, v in zip(pnames, p)}, "loo_rmse": loo,
                         "rmse": float(np.sqrt(np.mean((predict(p, x) - y) ** 2)))}
    return entries, raw, skipped


def _replicate_intervals(x: np.ndarray, reps: np.ndarray, raw: dict, entries: dict) -> int:
    """Add "ci95" to each fitted model from refits on the bootstrap replicate rows; returns logistic refits."""
    xmin, xmax = float(x.min()), float(x.max())
    if "constant" in raw:
        entries["constant"]["ci95"] = {"c": _ci(reps.mean(axis=1))}
    if "line" in raw:
        slopes = np.polyfit(x, reps.T, 1)[0]  # all rows at once
        entries["line"]["ci95"] = {"slope": _ci(slopes)}
    if "logistic" not in raw:
        return 0
    fits = [f for f in (_fit_logistic(x, r) for r in reps[:MAX_REFITS]) if f is not None]
    if not fits:
        entries["logistic"]["ci95"] = None
        return 0
    arr = np.array(fits)
    ci = {n: _ci(arr[:, i]) for i, n in enumerate(("lo", "hi", "k"))}
    # A replicate whose curve does not rise has no midpoint at all: count it as lying beyond either end,
    # so it can only widen the interval. Rule 7: an end outside the measured range is not a value the
    # data can speak for, and is None.
    flat = (arr[:, 2] <= 0) | (arr[:, 1] <= arr[:, 0])
    ends = (_pct_inf(np.where(flat, -np.inf, arr[:, 3]), 2.5), _pct_inf(np.where(flat, np.inf, arr[:, 3]), 97.5))
    x0_ci = [float(v) if xmin <= v <= xmax else None for v in ends]
    ci["x0"] = x0_ci
    ci["midpoint_tokens"] = [None if v is None else float(10 ** v) for v in x0_ci]
    entries["logistic"]["ci95"] = ci
    outside = flat | (arr[:, 3] < xmin) | (arr[:, 3] > xmax)
    entries["logistic"]["replicate_midpoints_not_identified"] = float(np.mean(outside))
    return len(fits)


def _check_points(general_tokens, values, replicates) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    g = np.asarray(general_tokens, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if g.ndim != 1 or y.shape != g.shape:
        raise ValueError(f"general_tokens and values must be 1-D and the same length, got {g.shape} and {y.shape}")
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(y))):
        raise ValueError("general_tokens and values must be finite numbers (no None/NaN)")
    if replicates is None:
        return g, y, None
    r = np.asarray(replicates, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != y.size or r.shape[0] < 2:
        raise ValueError(f"replicates must be (B >= 2, {y.size}) (one column per point), got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("replicates contain NaN/inf")
    return g, y, r


def fit_scaling(general_tokens: Sequence[float], values: Sequence[float], replicates: np.ndarray | None = None,
                min_points: int = 6) -> dict:
    """Name the shape of value vs log10(general tokens) only as far as the points allow.

    Points with general tokens <= 0 (pure-task cells) have no log and are left out (`excluded_nonpositive`).
    The rising logistic (4 parameters) is fitted only with >= `min_points` distinct x values (at least 5,
    so that leave-one-out still has more points than parameters); fewer gives {"fitted": False, "reason"}.
    Otherwise constant, line and logistic are compared by leave-one-out RMSE; `best` is the lowest (near-ties
    go to the simpler model) and `shape` is "S-curve" only when the logistic is best AND its midpoint x0 lies
    within the measured x range, else the best model's shape ("line in log tokens", "constant") or "not
    identified". A logistic midpoint outside the measured range is reported as "not identified" and its x0
    as None; lo/hi are the fitted asymptotes, which the data need not have reached.

    `replicates` (B, P): joint bootstrap replicates of the P points (replicate b of every point from the same
    resample, e.g. `estimate(...)["replicates"]` of cells sharing seeds and items, stacked as columns). Each
    model is refitted per row (the logistic on the first MAX_REFITS = 200 rows only, for speed) to give
    `ci95` per model: constant {"c"}, line {"slope"}, logistic {"lo","hi","k","x0","midpoint_tokens"}, whose
    x0/midpoint ends are None where they fall outside the measured range.

    Returns plain JSON-able values: {"fitted", "reason", "shape", "shape_reason", "best", "points",
    "distinct_x", "excluded_nonpositive", "x_range_log10", "models": {name: {"params", "rmse", "loo_rmse",
    "ci95"?, (logistic) "midpoint", "midpoint_tokens"}}, "not_fitted": {name: reason}, "replicate_refits"}.
    """
    if int(min_points) < 5:
        raise ValueError(f"min_points must be >= 5 (a 4-parameter logistic fitted with one point left out "
                         f"needs 4 or more), got {min_points}")
    g, y, reps = _check_points(general_tokens, values, replicates)
    keep = g > 0
    x, y = np.log10(g[keep]), y[keep]
    reps = None if reps is None else reps[:, keep]
    d = len(np.unique(x))
    out = {"fitted": False, "reason": None, "shape": "not identified", "shape_reason": None, "best": None,
           "points": int(x.size), "distinct_x": d, "excluded_nonpositive": int(np.sum(~keep)),
           "x_range_log10": [float(x.min()), float(x.max())] if x.size else None, "models": {},
           "not_fitted": {}, "replicate_refits": None}
    if d < min_points:
        out["reason"] = (f"{d} distinct ratios (general tokens > 0); an S-curve needs at least {min_points}, "
                         "so no shape is named")
        out["shape_reason"] = out["reason"]
        return out
    entries, raw, out["not_fitted"] = _fit_models(x, y, int(min_points))
    if not entries:
        out["reason"] = "no model could be fitted: " + "; ".join(f"{k}: {v}" for k, v in out["not_fitted"].items())
        return out
    if "logistic" in entries:
        lo, hi, k, x0 = raw["logistic"]
        # A midpoint exists only for a curve that rises, and is read only inside the measured range.
        inside = k > 0 and hi > lo and float(x.min()) <= x0 <= float(x.max())
        entries["logistic"]["midpoint"] = float(10 ** x0) if inside else "not identified"
        entries["logistic"]["midpoint_tokens"] = float(10 ** x0) if inside else None
        if not inside:
            entries["logistic"]["params"]["x0"] = None
    if reps is not None:
        out["replicate_refits"] = _replicate_intervals(x, reps, raw, entries)
    best = _pick_best(entries)
    out.update(fitted=True, best=best, models=entries)
    out["shape"], out["shape_reason"] = _shape(best, entries)
    return out


def _shape(best: str, entries: dict) -> tuple[str, str]:
    loo = ", ".join(f"{m} {e['loo_rmse']:.4g}" for m, e in entries.items())
    if best == "logistic" and entries["logistic"]["midpoint"] == "not identified":
        return "not identified", (f"the logistic fits best (LOO RMSE {loo}) but has no midpoint inside the "
                                  "measured range")
    return _MODELS[best][4], f"lowest leave-one-out RMSE ({loo})"


# --------------------------------------------------------------------------------------------------------
# Token-efficiency: SFT task tokens that reach a tell cell's score
# --------------------------------------------------------------------------------------------------------

def _sft_curve(tokens, values, replicates) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Sorted distinct log10 budgets, their values and replicate columns (repeated budgets averaged)."""
    t = np.asarray(tokens, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or v.shape != t.shape or t.size == 0:
        raise ValueError(f"sft_tokens and sft_values must be 1-D, non-empty and the same length, "
                         f"got {t.shape} and {v.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(v))) or np.any(t <= 0):
        raise ValueError("sft_tokens must be finite and > 0, sft_values finite")
    uniq, inv = np.unique(t, return_inverse=True)
    avg = np.zeros((t.size, uniq.size))
    avg[np.arange(t.size), inv] = 1.0
    avg /= avg.sum(axis=0)  # column j averages the points at budget j
    if replicates is None:
        return np.log10(uniq), v @ avg, None
    r = np.asarray(replicates, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != t.size or not np.all(np.isfinite(r)):
        raise ValueError(f"sft_replicates must be a finite (B, {t.size}) array, got shape {r.shape}")
    return np.log10(uniq), v @ avg, r @ avg


def _equivalent_log_tokens(x: np.ndarray, curves: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per row, the log10 tokens where the curve (made monotone by running maximum, linear in log tokens)
    first reaches the target: -inf when the smallest budget already does, +inf when no budget does."""
    mono = np.maximum.accumulate(curves, axis=1)
    reached = mono >= targets[:, None]
    j = np.argmax(reached, axis=1)
    out = np.empty(targets.size)
    out[~reached.any(axis=1)] = np.inf
    first = reached.any(axis=1) & (j == 0)
    out[first] = -np.inf
    mid = reached.any(axis=1) & (j > 0)
    rows, jj = np.nonzero(mid)[0], j[mid]
    v1, v2 = mono[rows, jj - 1], mono[rows, jj]  # v1 < target <= v2, so v2 > v1
    f = (targets[rows] - v1) / (v2 - v1)
    out[mid] = x[jj - 1] + f * (x[jj] - x[jj - 1])
    return out


def _pct_inf(v: np.ndarray, q: float) -> float:
    """Linear-interpolated percentile that lets +-inf through (numpy gives NaN for inf - inf)."""
    s = np.sort(v)
    pos = q / 100 * (s.size - 1)
    i, f = int(math.floor(pos)), pos - math.floor(pos)
    a, b = s[i], s[min(i + 1, s.size - 1)]
    if f == 0 or a == b:
        return float(a)
    if np.isinf(a) and np.isinf(b):  # -inf .. +inf: the interval end is unbounded on its own side
        return -math.inf if q < 50 else math.inf
    if np.isinf(a):
        return float(a)
    if np.isinf(b):
        return float(b)
    return float(a + f * (b - a))


def _efficiency_interval(x, sft_reps, tell_reps, tell_tokens) -> dict:
    if sft_reps.shape[0] != tell_reps.size:
        raise ValueError(f"sft_replicates has {sft_reps.shape[0]} rows and tell_replicates {tell_reps.size}; "
                         "they must be the same joint resamples")
    lt = _equivalent_log_tokens(x, sft_reps, tell_reps)
    lo, hi = _pct_inf(lt, 2.5), _pct_inf(lt, 97.5)
    # An end past the curve is unknown on the far side (None) and bounded on the near side: a low end beyond
    # the largest budget is at least that budget, a high end below the smallest at most that one (both widen).
    lo = None if lo == -math.inf else min(lo, x[-1])
    hi = None if hi == math.inf else max(hi, x[0])
    tok = [None if v is None else float(10 ** v) for v in (lo, hi)]
    return {"sft_equivalent_ci95": tok, "ci95": [None if t is None else t / tell_tokens for t in tok],
            "replicates_beyond": float(np.mean(lt == np.inf)), "replicates_below": float(np.mean(lt == -np.inf))}


def token_efficiency(sft_tokens: Sequence[float], sft_values: Sequence[float], sft_replicates: np.ndarray | None,
                     tell_tokens: float, tell_value: float, tell_replicates: np.ndarray | None,
                     min_budgets: int = 4) -> dict:
    """How many SFT task tokens reach the tell cell's score, as a multiple of the tell cell's task tokens.

    The SFT curve (value vs log10 task tokens; repeated budgets averaged) is made monotone by its running
    maximum and interpolated linearly; `sft_equivalent_tokens` is where it first reaches `tell_value` and
    `efficiency` = sft_equivalent_tokens / tell_tokens. `bound`: None for an interpolated value; "lower"
    when tell beats every SFT budget (the equivalent is > the largest budget: both numbers are given at the
    largest budget and are lower bounds); "upper" when the smallest SFT budget already reaches tell's score
    (both numbers given at the smallest budget, upper bounds).

    Interval: with both replicate arrays, `sft_replicates` (B, K) and `tell_replicates` (B,) drawn jointly
    (row b = the same resample for every cell), each row's own SFT curve and tell value give an equivalent;
    `ci95` (efficiency) and `sft_equivalent_ci95` (tokens) are its 2.5/97.5 percentiles. A row beyond the
    whole SFT curve counts as +inf and one at or below its start as 0, so an interval end that lands there is
    None: high None = unbounded above (SFT never got there within its budgets), low None = below the smallest
    budget (in the rare case that a low end lands beyond the curve it is given as the largest budget, and a
    high end below the curve as the smallest: conservative bounds). `replicates_beyond`/`replicates_below`
    give the shares of such rows. With no replicates the
    interval keys are [None, None] and `interval` says so.

    Fewer than `min_budgets` distinct SFT budgets: {"computed": False, "reason", "budgets"}.
    """
    if int(min_budgets) < 2:
        raise ValueError(f"min_budgets must be >= 2, got {min_budgets}")
    if not (math.isfinite(tell_tokens) and tell_tokens > 0 and math.isfinite(tell_value)):
        raise ValueError(f"tell_tokens must be finite and > 0 and tell_value finite, got {tell_tokens}, {tell_value}")
    if (sft_replicates is None) != (tell_replicates is None):
        raise ValueError("give both sft_replicates and tell_replicates (joint resamples) or neither")
    x, v, reps = _sft_curve(sft_tokens, sft_values, sft_replicates)
    if x.size < min_budgets:
        return {"computed": False, "budgets": int(x.size),
                "reason": f"{x.size} distinct SFT budgets; token-efficiency needs at least {min_budgets}"}
    lt = float(_equivalent_log_tokens(x, v[None, :], np.array([float(tell_value)]))[0])
    bound = "lower" if lt == math.inf else "upper" if lt == -math.inf else None
    eq = float(10 ** (x[-1] if bound == "lower" else x[0] if bound == "upper" else lt))
    out = {"computed": True, "reason": None, "sft_equivalent_tokens": eq, "efficiency": eq / tell_tokens,
           "bound": bound, "budgets": int(x.size), "sft_range_tokens": [float(10 ** x[0]), float(10 ** x[-1])],
           "tell_tokens": float(tell_tokens), "tell_value": float(tell_value),
           "ci95": [None, None], "sft_equivalent_ci95": [None, None], "replicates_beyond": None,
           "replicates_below": None, "interval": "none: no replicates given"}
    if reps is not None:
        t_reps = np.asarray(tell_replicates, dtype=np.float64).ravel()
        if not np.all(np.isfinite(t_reps)):
            raise ValueError("tell_replicates contain NaN/inf")
        out.update(_efficiency_interval(x, reps, t_reps, float(tell_tokens)))
        out["interval"] = ("joint bootstrap percentiles; a None end is unbounded: high = beyond the largest SFT "
                           "budget, low = below the smallest")
    return out
