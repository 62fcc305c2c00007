"""Outlier scores: IsolationForest and LOF averaged over a parameter grid, each score rank-normalised
to (0, 1] before averaging (higher = more anomalous)."""

from __future__ import annotations

import numpy as np

from galmo.core.errors import GalmoError
from galmo.methods.embeddings.threads import single_threaded_blas


def rank_normalise(s: np.ndarray) -> np.ndarray:
    """Ranks scaled to (0, 1] (ties averaged): comparable across detectors."""
    from scipy.stats import rankdata

    return (rankdata(s) / len(s)).astype(np.float64)


@single_threaded_blas
def outlier_scores(X: np.ndarray, seed: int = 0, if_estimators=(100, 200), if_samples=(128, 256, 512),
                   lof_neighbors=(10, 20, 40), standardise: bool = True, return_parts: bool = False):
    """Anomaly score per row (higher = more anomalous): IsolationForest over ``if_estimators`` ×
    ``if_samples`` and LOF over ``lof_neighbors``, each rank-normalised, then averaged (the two
    families weighted equally)."""
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor

    X = np.asarray(X, np.float64)
    n = len(X)
    if n < 5:
        raise GalmoError(f"outlier scores need at least 5 galaxies, got {n}")
    if standardise:
        X = (X - X.mean(0)) / np.maximum(X.std(0), 1e-12)
    iso = []
    for ne in if_estimators:
        for ms in if_samples:
            m = IsolationForest(n_estimators=ne, max_samples=min(ms, n), random_state=seed, n_jobs=1).fit(X)
            iso.append(rank_normalise(-m.score_samples(X)))
    lof = []
    for nn in lof_neighbors:
        m = LocalOutlierFactor(n_neighbors=min(nn, n - 1)).fit(X)
        lof.append(rank_normalise(-m.negative_outlier_factor_))
    parts = {"isolation_forest": np.mean(iso, 0), "lof": np.mean(lof, 0)}
    score = 0.5 * (parts["isolation_forest"] + parts["lof"])
    return (score, parts) if return_parts else score


def anomaly_auroc(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    """AUROC of ``scores`` against the catalog's ``is_anomaly`` flags (injected anomalies)."""
    from sklearn.metrics import roc_auc_score

    a = np.asarray(is_anomaly).astype(bool)
    if a.all() or not a.any():
        raise GalmoError("AUROC needs both anomalous and normal galaxies (is_anomaly column)")
    return float(roc_auc_score(a, scores))


def injected_metrics(scores: np.ndarray, is_anomaly=None) -> dict:
    """The evaluation part of the outlier metrics: ``auroc_injected`` when the galaxies are flagged
    both ways (``is_anomaly`` True for some, False for others), else ``auroc_injected: None`` and
    ``auroc_note`` saying why not. Scoring never needs the truth; only this evaluation does.

    Rows whose flag is missing (NaN/None, e.g. ids without a truth row) are left out of the AUROC."""
    if is_anomaly is None:
        return {"auroc_injected": None, "auroc_note": "not evaluated: the catalog has no is_anomaly column"}
    import pandas as pd

    flags = pd.Series(np.asarray(is_anomaly, dtype=object))
    known = flags.notna().to_numpy()
    a = flags[known].astype(bool).to_numpy()
    n_anom, n_norm = int(a.sum()), int((~a).sum())
    out = {"n_anomalous": n_anom, "n_normal": n_norm}
    if n_anom and n_norm:
        return {**out, "auroc_injected": anomaly_auroc(np.asarray(scores)[known], a)}
    which = "anomalous" if not n_anom else "normal"
    return {**out, "auroc_injected": None,
            "auroc_note": f"not evaluated: no galaxy is flagged {which} (is_anomaly); the AUROC needs both "
                          f"anomalous and normal galaxies"}
