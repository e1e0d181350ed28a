"""How far apart two groups of hidden states are: silhouette (cosine), centroid cosine distance, and a
cross-validated linear probe, each with a bootstrap interval (resampling within each group)."""

from __future__ import annotations

import numpy as np


def _metrics(a: np.ndarray, b: np.ndarray, folds: int, seed: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([a, b])
    y = np.array([1] * len(a) + [0] * len(b))
    ca, cb = a.mean(0), b.mean(0)
    cos = float(ca @ cb / (np.linalg.norm(ca) * np.linalg.norm(cb) + 1e-12))
    sil = float(silhouette_score(x, y, metric="cosine")) if len(set(map(tuple, x.round(8)))) > 2 else 0.0
    k = max(2, min(folds, len(a), len(b)))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    acc = float(cross_val_score(clf, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed)).mean())
    return {"silhouette": sil, "centroid_cosine_distance": 1.0 - cos, "probe_accuracy": acc}


def separation(a, b, *, bootstrap: int = 200, folds: int = 5, seed: int = 0) -> dict[str, dict]:
    """Separation of group `a` from group `b` (arrays of shape [n, d]); each metric with a 95% interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    full = _metrics(a, b, folds, seed)
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in full}
    for _ in range(bootstrap):
        ia, ib = rng.integers(0, len(a), len(a)), rng.integers(0, len(b), len(b))
        for k, v in _metrics(a[ia], b[ib], folds, seed).items():
            samples[k].append(v)
    out = {}
    for k, v in full.items():
        s = np.array(samples[k])
        out[k] = {"value": v, "ci95": [float(np.quantile(s, 0.025)), float(np.quantile(s, 0.975))] if len(s) else [None, None]}
    return out
