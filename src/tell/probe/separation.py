"""How far apart two groups of hidden states are: silhouette (cosine), centroid cosine distance, and a
cross-validated linear probe, each with a 95% percentile bootstrap interval (examples resampled within each group).

A bootstrap resample holds copies of some examples. Scored naively, a copy is its twin's nearest neighbour at
distance 0 (the silhouette rises) and copies land on both sides of a cross-validation split (the probe is tested on
examples it was trained on), so the interval sat above the point value (0.1: `silhouette 0.419 [0.425, 0.642]` with
5 examples). Here copies count as one example seen several times: an example's copies are not its neighbours in the
silhouette (each copy weighs on the other examples' distances), and a probe fold holds all copies of an example or
none (`StratifiedGroupKFold`). With no copies (the point value) both are the usual scores.
"""

from __future__ import annotations

import numpy as np


def _cosine_distances(x: np.ndarray) -> np.ndarray:
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - unit @ unit.T, 0.0, 2.0)


def weighted_silhouette(dist: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Mean silhouette of examples with `w[i]` copies each (0: left out), from their distance matrix and labels. An
    example's own copies are not its neighbours; an example with no other example in its group scores 0 (as
    scikit-learn scores a point alone in its cluster). With every weight 1 it is `sklearn.metrics.silhouette_score`."""
    w = np.asarray(w, dtype=np.float64)
    same = (y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)
    other = y[:, None] != y[None, :]
    a_den, b_den = same @ w, other @ w
    a = np.divide((dist * same) @ w, a_den, out=np.zeros_like(a_den), where=a_den > 0)
    b = np.divide((dist * other) @ w, b_den, out=np.zeros_like(b_den), where=b_den > 0)
    top = np.maximum(a, b)
    s = np.divide(b - a, top, out=np.zeros_like(top), where=(a_den > 0) & (top > 0))
    return float((w * s).sum() / w.sum())


def _probe_accuracy(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> float:
    """Cross-validated accuracy of a linear probe; all copies of an example sit in one fold. NaN when a group has
    fewer than two distinct examples (no split can test it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    distinct = min(len(np.unique(groups[y == c])) for c in (0, 1))
    if distinct < 2:
        return float("nan")
    k = min(folds, distinct)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    cv = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, x, y, groups=groups, cv=cv).mean())


def _metrics(x: np.ndarray, y: np.ndarray, dist: np.ndarray, idx: np.ndarray, folds: int, seed: int) -> dict:
    """The three metrics of the examples `idx` (indices into x, with repeats for a resample's copies)."""
    w = np.bincount(idx, minlength=len(y))
    ca, cb = (np.average(x, axis=0, weights=w * (y == c)) for c in (1, 0))
    cos = float(ca @ cb / (np.linalg.norm(ca) * np.linalg.norm(cb) + 1e-12))
    return {"silhouette": weighted_silhouette(dist, y, w), "centroid_cosine_distance": 1.0 - cos,
            "probe_accuracy": _probe_accuracy(x[idx], y[idx], idx, folds, seed)}


def separation(a, b, *, bootstrap: int = 200, folds: int = 5, seed: int = 0) -> dict[str, dict]:
    """Separation of group `a` from group `b` (arrays of shape [n, d]); each metric with a 95% interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x = np.concatenate([a, b])
    y = np.array([1] * len(a) + [0] * len(b))
    dist = _cosine_distances(x)
    full = _metrics(x, y, dist, np.arange(len(y)), folds, seed)
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in full}
    for _ in range(bootstrap):
        idx = np.concatenate([rng.integers(0, len(a), len(a)), len(a) + rng.integers(0, len(b), len(b))])
        for k, v in _metrics(x, y, dist, idx, folds, seed).items():
            samples[k].append(v)
    out = {}
    for k, v in full.items():
        s = np.array(samples[k])
        s = s[~np.isnan(s)]
        out[k] = {"value": v, "ci95": [float(np.quantile(s, 0.025)), float(np.quantile(s, 0.975))] if len(s)
                  else [None, None]}
    return out
