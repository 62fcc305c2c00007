"""Metrics shared by every method (numpy / scikit-learn): classification, coverage, calibration,
vote-fraction RMSE, clustering purity/NMI/ARI, completeness/purity. Add functions here; keep
each small, documented and tested."""

from __future__ import annotations

import numpy as np  # noqa: F401


# ---------------------------------------------------------------- photometric-redshift scatter (embeddings, issue 5)
def sigma_nmad(z_true, z_pred) -> float:
    """Normalised median absolute deviation of Δz/(1+z): 1.4826 · median(|Δ − median(Δ)|)."""
    z_true = np.asarray(z_true, dtype=float)
    dz = (np.asarray(z_pred, dtype=float) - z_true) / (1.0 + z_true)
    return float(1.4826 * np.median(np.abs(dz - np.median(dz))))
