"""eUML stage 4: PCA with the number of components chosen from the data."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from galmo.core.errors import GalmoError
from galmo.stages._common import check_features, check_fitted


class AutoPCA(TransformerMixin, BaseEstimator):
    """PCA whose number of components is chosen from the data, not asked for.

    ``method="variance"``: the fewest components explaining ``variance`` of the total;
    ``method="elbow"``: the largest gap in the eigenvalue spectrum (argmax of λᵢ/λᵢ₊₁ over the first
    ``max_components``). Always between ``min_components`` and ``max_components``. ``standardize``
    scales every feature to unit variance first; ``whiten`` gives unit-variance components.
    Chosen: ``n_components_``; spectrum: ``explained_variance_ratio_`` (all components fitted).
    """

    def __init__(self, method: str = "variance", variance: float = 0.9, min_components: int = 2,
                 max_components: int = 64, standardize: bool = False, whiten: bool = False, random_state: int = 0):
        self.method = method
        self.variance = variance
        self.min_components = min_components
        self.max_components = max_components
        self.standardize = standardize
        self.whiten = whiten
        self.random_state = random_state

    def fit(self, X, y=None):
        from sklearn.decomposition import PCA

        X = check_features(self, X, reset=True, dtype=(np.float64,), min_samples=2)
        if self.method not in ("variance", "elbow"):
            raise GalmoError(f"AutoPCA method must be 'variance' or 'elbow', got {self.method!r}")
        self.mean_ = X.mean(0)
        self.scale_ = X.std(0) if self.standardize else np.ones(X.shape[1])
        self.scale_[self.scale_ == 0] = 1.0
        Z = (X - self.mean_) / self.scale_
        full = PCA(n_components=min(Z.shape), random_state=self.random_state).fit(Z)
        ev = full.explained_variance_
        ratio = full.explained_variance_ratio_
        hi = max(1, min(self.max_components, len(ev)))
        lo = max(1, min(self.min_components, hi))
        if self.method == "variance":
            k = int(np.searchsorted(np.cumsum(ratio), self.variance) + 1)
        else:
            m = min(hi, len(ev) - 1)
            gaps = ev[:m] / np.maximum(ev[1:m + 1], 1e-12)
            k = int(np.argmax(gaps[lo - 1:]) + lo) if m >= lo else lo
        self.n_components_ = int(np.clip(k, lo, hi))
        self.explained_variance_ratio_ = ratio
        self.explained_variance_kept_ = float(ratio[:self.n_components_].sum())
        self.components_ = full.components_[:self.n_components_]
        self.explained_variance_ = ev[:self.n_components_]
        return self

    def transform(self, X):
        check_fitted(self, "components_")
        Z = (check_features(self, X, reset=False, dtype=(np.float64,)) - self.mean_) / self.scale_
        P = Z @ self.components_.T
        if self.whiten:
            P /= np.sqrt(np.maximum(self.explained_variance_, 1e-12))
        return P.astype(np.float32)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # coordinates are always float32
        return tags
