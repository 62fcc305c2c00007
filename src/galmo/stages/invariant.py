"""The invariant projection: directions along which galaxies differ and their observations do not."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from galmo.core.errors import GalmoError
from galmo.stages._common import check_images


class InvariantProjection(TransformerMixin, BaseEstimator):
    """Linear reduction that keeps the feature directions along which *galaxies* differ and drops
    those along which *observations of one galaxy* differ.

    ``fit(X, views=V)``: ``X`` (N, D) features of N galaxies, ``V`` (M, N, D) features of M augmented
    copies of the same galaxies (:meth:`galmo.nn.augment.AugmentConfig.observing`: rotation, shift, zoom,
    seeing, depth, gain). With every feature standardised, S_b is the covariance of the per-galaxy
    means and S_w the pooled covariance of each copy about its galaxy's mean; the components are the
    leading generalised eigenvectors of S_b v = λ (S_w + ``reg``·I) v (scipy ``eigh``) — linear
    discriminant analysis with each galaxy as its own class, or the linear form of learning from
    augmented views. They are scaled so that v'(S_w + reg·I)v = 1 and the variance between galaxies
    is λ, so a component matters in proportion to its signal-to-nuisance ratio (``ratio_``). At most
    N − 1 components are kept (S_b of N galaxies has no more), and none with λ ≈ 0. PCA ranks
    directions by variance, which the nuisances (noise, size, brightness) share with morphology;
    this ranks them by how reproducible they are.
    """

    def __init__(self, n_components: int = 60, reg: float = 0.1, standardize: bool = True):
        self.n_components = n_components
        self.reg = reg
        self.standardize = standardize

    def fit(self, X, y=None, views=None):
        from scipy.linalg import eigh

        X = np.asarray(X, dtype=np.float64)
        if views is None:
            raise GalmoError("InvariantProjection.fit needs views=: features of augmented copies of the galaxies, "
                             "shaped (M, N, D)")
        V = np.asarray(views, dtype=np.float64)
        if V.ndim == 2:
            V = V[None]
        if X.ndim != 2 or V.ndim != 3 or V.shape[1:] != X.shape or len(X) < 3:
            raise GalmoError(f"InvariantProjection needs features (N ≥ 3, D) and views (M, N, D), "
                             f"got {X.shape} and {V.shape}")
        if not (np.isfinite(X).all() and np.isfinite(V).all()):
            raise GalmoError("InvariantProjection: features or views are not finite")
        if not self.reg > 0 or int(self.n_components) < 1:
            raise GalmoError(f"InvariantProjection needs reg > 0 and n_components ≥ 1, got {self.reg}, "
                             f"{self.n_components}")
        A = np.concatenate([X[None], V])  # (M + 1, N, D)
        flat = A.reshape(-1, X.shape[1])
        self.mean_ = flat.mean(0)
        self.scale_ = flat.std(0) if self.standardize else np.ones(X.shape[1])
        self.scale_[self.scale_ == 0] = 1.0
        Z = (A - self.mean_) / self.scale_
        mu = Z.mean(0)
        dev = (Z - mu[None]).reshape(-1, X.shape[1])
        s_w = dev.T @ dev / len(dev)
        s_b = np.cov(mu.T)
        lam, vec = eigh(s_b, s_w + self.reg * np.eye(len(s_w)))
        order = np.argsort(lam)[::-1]
        # S_b of N galaxies has rank ≤ N − 1: beyond that the "components" would be pure view-to-view noise
        keep = min(int(self.n_components), X.shape[1], len(X) - 1, int((lam > 1e-9 * max(lam.max(), 1e-300)).sum()))
        order = order[:max(1, keep)]
        self.components_ = vec[:, order].T  # (d, D); v' (S_w + reg I) v = 1
        self.ratio_ = lam[order]
        self.n_components_ = len(order)
        self.n_views_ = V.shape[0]
        self.n_fit_ = len(X)
        # transform as one affine map in float32: X @ W - offset (chunked, no float64 copy of X)
        self.weights_ = (self.components_ / self.scale_[None, :]).T.astype(np.float32)  # (D, d)
        self.offset_ = (self.mean_ / self.scale_) @ self.components_.T
        return self

    def transform(self, X):
        from galmo.stages._common import check_fitted

        check_fitted(self, "weights_")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.mean_):
            raise GalmoError(f"InvariantProjection was fitted on {len(self.mean_)}-d features, got shape {X.shape}")
        out = np.empty((len(X), self.n_components_), dtype=np.float32)
        for s in range(0, len(X), 65536):
            out[s:s + 65536] = np.asarray(X[s:s + 65536], dtype=np.float32) @ self.weights_ - self.offset_
        return out


def augmented_features(X: np.ndarray, featurize, views: int, generator) -> np.ndarray:
    """(views, N, D): ``featurize`` (images → features) of ``views`` copies of images ``X`` (N, C, H, W)
    in [0, 1], each augmented by :meth:`galmo.nn.augment.AugmentConfig.observing` with the torch
    ``generator``."""
    import torch

    from galmo.nn.augment import AugmentConfig, augment

    base = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    return np.stack([np.asarray(featurize(augment(base, generator, AugmentConfig.observing()).clamp(0, 1).numpy()))
                     for _ in range(int(views))])


def features_and_views(featurize, X: np.ndarray, views: int, max_fit: int, batch_size: int = 512, seed: int = 0,
                       progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N, D), views (views, n, D), their rows (n,)) of images ``X`` in blocks of ``batch_size``.

    Each image is drawn for the views with probability ``max_fit`` / N (``default_rng([seed, 1])``,
    one draw per block); the drawn images are augmented and featurized in batches of at least
    ``batch_size`` (torch generator seeded with ``seed``): the same draws, in the same order, as
    when a source is streamed in blocks of ``batch_size``, so the result does not depend on
    whether the images are held in memory.
    """
    import torch

    rng, gen = np.random.default_rng([seed, 1]), torch.Generator().manual_seed(int(seed))
    frac = min(1.0, max_fit / max(1, len(X)))
    feats, index, buf, V = [], [], [], []
    bar = _bar(progress, len(X), "features + views")
    for s in range(0, len(X), batch_size):
        Z = X[s:s + batch_size]
        pick = np.flatnonzero(rng.random(len(Z)) < frac)
        if len(pick):
            index.append(s + pick)
            buf.append(np.asarray(Z[pick], dtype=np.float32))
            if sum(len(b) for b in buf) >= batch_size:  # views encoded in full batches
                V.append(augmented_features(np.concatenate(buf), featurize, views, gen))
                buf.clear()
        feats.append(np.asarray(featurize(Z), dtype=np.float32))
        if bar is not None:
            bar.update(len(Z))
    if buf:
        V.append(augmented_features(np.concatenate(buf), featurize, views, gen))
    if bar is not None:
        bar.close()
    if not index:
        raise GalmoError("no galaxies were drawn for the augmented views (views_max_fit far below the sample size)")
    return np.concatenate(feats), np.concatenate(V, axis=1), np.concatenate(index)


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)


class InvariantFeatures(TransformerMixin, BaseEstimator):
    """Images → invariant coordinates, as one Pipeline step: ``featurizer`` (the stages that turn
    images into features, e.g. ``Pipeline([PolarUnwrap, Encoder])``), then an
    :class:`InvariantProjection` fitted on the features of ``views`` augmented copies of about
    ``max_fit`` of the images (:func:`features_and_views`: a seeded random draw, blocks of
    ``batch_size``). ``fit`` featurizes every image once (``fit_transform`` returns the result)."""

    def __init__(self, featurizer, views: int = 16, max_fit: int = 3000, n_components: int = 60, reg: float = 0.1,
                 batch_size: int = 512, random_state: int = 0, progress: bool = False):
        self.featurizer = featurizer
        self.views = views
        self.max_fit = max_fit
        self.n_components = n_components
        self.reg = reg
        self.batch_size = batch_size
        self.random_state = random_state
        self.progress = progress

    def fit(self, X, y=None):
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None):
        from sklearn.base import clone

        X = check_images(X, "InvariantFeatures")
        if self.views < 1:
            raise GalmoError(f"InvariantFeatures needs at least 1 view per galaxy, got {self.views}")
        self.featurizer_ = clone(self.featurizer).fit(X)
        F, V, idx = features_and_views(self.featurizer_.transform, X, self.views, self.max_fit, self.batch_size,
                                       int(self.random_state or 0), self.progress)
        self.view_index_ = idx
        self.projection_ = InvariantProjection(n_components=self.n_components, reg=self.reg).fit(F[idx], views=V)
        return self.projection_.transform(F)

    def transform(self, X):
        from galmo.stages._common import check_fitted

        check_fitted(self, "projection_")
        X = check_images(X, "InvariantFeatures")
        return np.concatenate([self.projection_.transform(self.featurizer_.transform(X[s:s + self.batch_size]))
                               for s in range(0, len(X), self.batch_size)])
