"""Metrics shared by every method (numpy / scikit-learn): classification, coverage, calibration,
vote-fraction RMSE, clustering purity/NMI/ARI, completeness/purity. Add functions here; keep
each small, documented and tested."""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------- photometric-redshift scatter (embeddings, issue 5)
def sigma_nmad(z_true, z_pred) -> float:
    """Normalised median absolute deviation of Δz/(1+z): :func:`astropy.stats.mad_std`, i.e.
    1.482602 · median(|Δ − median(Δ)|) (1/Φ⁻¹(3/4); the hand-written 1.4826 gave 1.5e-6 less)."""
    from astropy.stats import mad_std

    z_true = np.asarray(z_true, dtype=float)
    dz = (np.asarray(z_pred, dtype=float) - z_true) / (1.0 + z_true)
    return float(mad_std(dz))


# ---------------------------------------------------------------- clustering (unsupervised, issue 3)
def contingency(groups, classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(groups × classes) count table (:func:`sklearn.metrics.cluster.contingency_matrix`), with the
    sorted group and class values of its rows and columns. Rows with a negative group or class
    (unclassified / unknown) are left out."""
    from sklearn.metrics.cluster import contingency_matrix

    g = np.asarray(groups)
    c = np.asarray(classes)
    ok = (g >= 0) & (c >= 0)
    table = contingency_matrix(g[ok], c[ok]).astype(np.int64) if ok.any() else np.zeros((0, 0), np.int64)
    return table, np.unique(g[ok]), np.unique(c[ok])


def purity(groups, classes) -> float:
    """Fraction of (classified, labelled) galaxies whose class is the majority class of their group."""
    table, _, _ = contingency(groups, classes)
    total = table.sum()
    return float(table.max(axis=1).sum() / total) if total else float("nan")


def clustering_scores(groups, classes) -> dict:
    """Purity, NMI and ARI of the galaxies with group ≥ 0 and class ≥ 0, and how many there are."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    g = np.asarray(groups)
    c = np.asarray(classes)
    ok = (g >= 0) & (c >= 0)
    if not ok.any():
        return {"n_scored": 0, "purity": float("nan"), "nmi": float("nan"), "ari": float("nan")}
    return {"n_scored": int(ok.sum()), "purity": purity(g[ok], c[ok]),
            "nmi": float(normalized_mutual_info_score(c[ok], g[ok])),
            "ari": float(adjusted_rand_score(c[ok], g[ok]))}


# ---------------------------------------------------------------- supervised classification (issue 4)
def accuracy_coverage(y_true, y_pred, confidence, coverages=None) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the ``round(c·N)`` most confident predictions, for each coverage ``c`` in (0, 1].

    Ties in confidence keep the input order (stable sort). Default coverages: 0.01, 0.02, ..., 1.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    conf = np.asarray(confidence, dtype=float)
    cov = np.linspace(0.01, 1.0, 100) if coverages is None else np.atleast_1d(np.asarray(coverages, dtype=float))
    order = np.argsort(-conf, kind="stable")
    cum = np.cumsum(y_true[order] == y_pred[order])
    n = np.clip(np.round(cov * len(conf)).astype(int), 1, len(conf))
    return cov, cum[n - 1] / n


def accuracy_at_coverage(y_true, y_pred, confidence, coverage: float) -> float:
    """Accuracy of the most confident fraction ``coverage`` of the predictions."""
    return float(accuracy_coverage(y_true, y_pred, confidence, [coverage])[1][0])


def reliability_bins(confidence, correct, n_bins: int = 15) -> dict:
    """Equal-width confidence bins (lo, hi] on [0, 1]: count, mean confidence and accuracy per bin."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        acc = np.bincount(b, weights=ok, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": acc}


def expected_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """ECE = Σ_b (n_b / N) · |accuracy_b − mean confidence_b| over equal-width confidence bins."""
    r = reliability_bins(confidence, correct, n_bins)
    nz = r["count"] > 0
    return float(np.sum(r["count"][nz] / r["count"].sum() * np.abs(r["accuracy"][nz] - r["confidence"][nz])))


def per_class_precision_recall(y_true, y_pred, n_classes: int) -> dict:
    """Per-class precision, recall, F1 and support (arrays of length ``n_classes``; 0 where undefined)."""
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=np.arange(n_classes), zero_division=0)
    return {"precision": p, "recall": r, "f1": f, "support": s}


def vote_rmse(pred, true) -> float:
    """Root mean squared error over every galaxy and every answer (the Galaxy Zoo challenge score)."""
    d = np.asarray(pred, dtype=float) - np.asarray(true, dtype=float)
    return float(np.sqrt(np.mean(d ** 2)))


def high_agreement_accuracy(pred, true, threshold: float = 0.8, min_weight: float = 0.5, schema="gz2-kaggle") -> dict:
    """Dieleman et al.'s "high agreement" check on cumulative vote fractions (N, answers of ``schema``).

    For each question, galaxies whose (true) question weight is ≥ ``min_weight`` and whose top
    conditional answer exceeds ``threshold``: is the predicted top answer the same? Returns the
    accuracy over Q1 alone, over all such (galaxy, question) pairs, and the counts.
    """
    from galmo.core.schema import get_schema

    s = get_schema(schema)
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    cp, ct, w = s.shares(pred), s.shares(true), s.question_weights(true)
    hits = n = 0
    out = {}
    for qi, (a, b) in enumerate(s.slices):
        sel = (w[:, qi] >= min_weight) & (ct[:, a:b].max(1) > threshold)
        h = int((cp[sel, a:b].argmax(1) == ct[sel, a:b].argmax(1)).sum())
        hits, n = hits + h, n + int(sel.sum())
        if qi == 0:
            out["q1_accuracy"] = h / sel.sum() if sel.any() else float("nan")
            out["q1_n"] = int(sel.sum())
    out["all_accuracy"] = hits / n if n else float("nan")
    out["all_n"] = n
    return out


def psnr(x: np.ndarray, ref: np.ndarray, data_range: float | None = None) -> float:
    """Mean PSNR (dB) of images ``x`` against ``ref`` (per image, then averaged)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    rng = data_range if data_range is not None else float(ref.max() - ref.min()) or 1.0
    mse = ((x - ref) ** 2).mean(1)
    return float(np.mean(10 * np.log10(rng ** 2 / np.maximum(mse, 1e-20))))
