"""scikit-learn pipeline stages of the unsupervised method (eUML, 2024).

Each stage is an estimator: parameters in ``__init__``, learned state in attributes ending in
``_``, ``fit``/``transform``. They compose::

    from sklearn.pipeline import Pipeline
    from galmo.stages import Denoiser, PolarUnwrap, Encoder, AutoPCA
    from galmo.cluster import VotingClustering

    pipe = Pipeline([("denoise", Denoiser()), ("polar", PolarUnwrap()), ("encode", Encoder()),
                     ("pca", AutoPCA()), ("cluster", VotingClustering(20))])
    groups = pipe.fit_predict(images)          # images: float32 (N, C, H, W) in [0, 1]

Image stages take and return float32 (N, C, H, W) arrays; :class:`Encoder` returns (N, D)
features; :class:`AutoPCA` (N, n_components_).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from galmo.errors import GalmoError


def _check_images(X, who: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise GalmoError(f"{who} expects images shaped (N, C, H, W), got {X.shape}")
    if not np.isfinite(X).all():
        X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
    return X


def noise_sigma(X: np.ndarray) -> np.ndarray:
    """Per-image, per-band noise σ (N, C) from the MAD of horizontal pixel differences / √2 —
    robust to the galaxy itself, which is smooth on the scale of one pixel."""
    d = np.diff(np.asarray(X, dtype=np.float32), axis=-1).reshape(X.shape[0], X.shape[1], -1)
    mad = np.median(np.abs(d - np.median(d, axis=-1, keepdims=True)), axis=-1)
    return (1.4826 * mad / np.sqrt(2.0)).astype(np.float32)


def psnr(x: np.ndarray, ref: np.ndarray, data_range: float | None = None) -> float:
    """Mean PSNR (dB) of images ``x`` against ``ref`` (per image, then averaged)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    rng = data_range if data_range is not None else float(ref.max() - ref.min()) or 1.0
    mse = ((x - ref) ** 2).mean(1)
    return float(np.mean(10 * np.log10(rng ** 2 / np.maximum(mse, 1e-20))))


# ----------------------------------------------------------------------------------- denoiser
class DenoiseTask:
    """Noisier-to-noisy training: the input is the observed image plus extra Gaussian noise of
    ``factor`` × its own estimated noise σ, the target is the observed image. With MSE the best
    prediction is E[image | noisier image], which removes noise (no clean image needed)."""

    def __init__(self, factor: float = 1.0):
        self.factor = factor

    def _noisy(self, x, sigma, generator):
        import torch

        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return x + self.factor * sigma[:, :, None, None] * eps

    def loss(self, model, batch, generator):
        import torch.nn.functional as F

        x, sigma = batch
        y = model(self._noisy(x, sigma, generator))
        loss = F.mse_loss(y, x)
        return loss, {"mse": float(loss.detach())}

    def evaluate(self, model, loader):
        import torch
        import torch.nn.functional as F

        g = torch.Generator().manual_seed(12345)
        tot, n = 0.0, 0
        for x, sigma in loader:
            y = model(self._noisy(x, sigma, g))
            tot += float(F.mse_loss(y, x, reduction="sum"))
            n += x.numel()
        return {"val_loss": tot / max(n, 1)}


class Denoiser(TransformerMixin, BaseEstimator):
    """Convolutional autoencoder denoiser trained on the images themselves (eUML stage 1).

    Trained with the one loop :func:`galmo.train.fit` (noise injected at the input, see
    :class:`DenoiseTask`); best weights are saved as a galmo checkpoint in ``run_dir`` (a temporary
    folder when None). ``checkpoint``: a folder of a previous fit to load instead of training.
    ``latent``: an int gives eUML's dense bottleneck; None a convolutional one (default).
    """

    def __init__(self, epochs: int = 8, batch_size: int = 64, lr: float = 2e-3, widths: tuple = (32, 64),
                 kernel: int = 5, latent: int | None = None, residual: bool = False, noise_factor: float = 1.0, run_dir=None,
                 checkpoint=None, seed: int = 0, device: str = "auto", progress: bool = False):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.widths = widths
        self.kernel = kernel
        self.latent = latent
        self.residual = residual
        self.noise_factor = noise_factor
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.seed = seed
        self.device = device
        self.progress = progress

    def fit(self, X, y=None):
        import torch
        from torch.utils.data import TensorDataset

        from galmo import checkpoint as ckpt
        from galmo.device import set_threads
        from galmo.models import create
        from galmo.train import TrainConfig, fit

        set_threads()
        X = _check_images(X, "Denoiser")
        if self.checkpoint is not None:
            self.model_, self.config_ = ckpt.load_checkpoint(self.checkpoint)
            self.checkpoint_dir_ = Path(self.checkpoint)
            self.history_ = []
            return self
        n, c, h, w = X.shape
        kwargs = {"in_chans": c, "size": h, "widths": list(self.widths), "kernel": self.kernel, "latent": self.latent,
                  "residual": self.residual}
        torch.manual_seed(self.seed)
        model = create("conv_autoencoder", **kwargs)
        sigma = torch.from_numpy(np.maximum(noise_sigma(X), 1e-4))
        data = torch.from_numpy(X)
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = min(max(1, n // 10), 512) if n >= 10 else 0
        val, train = order[:n_val], order[n_val:]
        train_set = TensorDataset(data[train], sigma[train])
        val_set = TensorDataset(data[val], sigma[val]) if n_val else None
        run_dir = Path(self.run_dir) if self.run_dir else Path(tempfile.mkdtemp(prefix="galmo-denoiser-"))
        cfg = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=1e-4,
                          seed=self.seed, device=self.device, progress=self.progress)
        summary = fit(model, train_set, val_set, DenoiseTask(self.noise_factor), cfg, run_dir,
                      model_name="conv_autoencoder", model_kwargs=kwargs,
                      extra_config={"stage": "Denoiser", "noise_factor": self.noise_factor})
        self.model_ = model.cpu().eval()
        self.checkpoint_dir_ = run_dir
        self.history_ = summary["history"]
        return self

    def transform(self, X):
        import torch

        from galmo.device import resolve_device

        X = _check_images(X, "Denoiser")
        dev = resolve_device(self.device)
        model = self.model_.to(dev).eval()
        out = np.empty_like(X)
        with torch.inference_mode():
            for s in range(0, len(X), 256):
                out[s:s + 256] = model(torch.from_numpy(X[s:s + 256]).to(dev)).float().cpu().numpy()
        lo, hi = float(X.min()), float(X.max())
        return np.clip(out, lo, hi)

    def psnr_gain(self, noisy, clean) -> dict:
        """PSNR (dB) of the noisy images and of their denoised version against the clean ones."""
        noisy = _check_images(noisy, "Denoiser")
        clean = _check_images(clean, "Denoiser")
        den = self.transform(noisy)
        before, after = psnr(noisy, clean, 1.0), psnr(den, clean, 1.0)
        return {"psnr_noisy": before, "psnr_denoised": after, "psnr_gain": after - before}


# ----------------------------------------------------------------------------------- polar unwrap
class PolarUnwrap(TransformerMixin, BaseEstimator):
    """Adaptive, rotation-normalised polar unwrap (Fang et al. 2023; :func:`galmo.transforms.polar_unwrap`).

    Stateless: ``fit`` only records the output shape. ``origins_``/``angles_`` of the last
    ``transform`` are kept for inspection.
    """

    def __init__(self, step: float = 0.05, centre_frac: float = 0.125, smooth_sigma: float = 1.5,
                 ref_annulus: tuple = (0.15, 0.35), mirror: bool = True, radial: str = "linear",
                 r_min: float = 1.0, batch_size: int = 512):
        self.step = step
        self.radial = radial
        self.r_min = r_min
        self.centre_frac = centre_frac
        self.smooth_sigma = smooth_sigma
        self.ref_annulus = ref_annulus
        self.mirror = mirror
        self.batch_size = batch_size

    def fit(self, X, y=None):
        X = _check_images(X, "PolarUnwrap")
        self.input_shape_ = X.shape[1:]
        self.output_shape_ = self.transform(X[:1]).shape[1:]
        return self

    def transform(self, X):
        from galmo.transforms import polar_unwrap

        X = _check_images(X, "PolarUnwrap")
        outs, origins, angles = [], [], []
        for s in range(0, len(X), self.batch_size):
            o, org, ang = polar_unwrap(X[s:s + self.batch_size], step=self.step, centre_frac=self.centre_frac,
                                       smooth_sigma=self.smooth_sigma, ref_annulus=tuple(self.ref_annulus),
                                       mirror=self.mirror, radial=self.radial, r_min=self.r_min,
                                       return_params=True)
            outs.append(o)
            origins.append(org)
            angles.append(ang)
        self.origins_ = np.concatenate(origins)
        self.angles_ = np.concatenate(angles)
        return np.concatenate(outs)


# ----------------------------------------------------------------------------------- encoder
class Encoder(TransformerMixin, BaseEstimator):
    """Pretrained CNN features (timm via :mod:`galmo.backbones`; offline EfficientNet-Lite0 by default).

    ``weights``: "offline", a file (.safetensors or state dict), "hub" (online), or None (random —
    only for tests). ``size``: the input the images are resized to once per batch, an int (square)
    or (height, width) (default: the backbone's native size). ``layer``: None for the final features,
    the block whose feature map is pooled (:func:`galmo.backbones.intermediate`), or a sequence of
    blocks whose pooled maps are put side by side; ``pool``: "avg"
    or "meanstd" (:func:`galmo.backbones.pool_features`). Threads are set once
    (:func:`galmo.device.set_threads`).
    """

    def __init__(self, backbone: str = "tf_efficientnet_lite0", weights: str | None = "offline",
                 size=None, batch_size: int = 64, device: str = "auto", threads: int | None = None,
                 progress: bool = False, layer: int | None = None, pool: str = "avg"):
        self.backbone = backbone
        self.layer = layer
        self.pool = pool
        self.weights = weights
        self.size = size
        self.batch_size = batch_size
        self.device = device
        self.threads = threads
        self.progress = progress

    def fit(self, X=None, y=None):
        from galmo.backbones import create_backbone
        from galmo.device import set_threads

        self.threads_ = set_threads(self.threads)
        self.model_ = create_backbone(self.backbone, weights=self.weights, num_classes=0).eval()
        if self.layer is None and self.pool == "avg":
            self.n_features_ = int(self.model_.num_features)
        else:  # one small forward tells the width of the chosen map
            from galmo.backbones import encode

            self.n_features_ = int(encode(self.model_, np.zeros((1, 3, 32, 32), np.float32), size=self.size,
                                          layer=self.layer, pool=self.pool).shape[1])
        return self

    def transform(self, X):
        from galmo.backbones import encode
        from galmo.device import resolve_device

        if not hasattr(self, "model_"):
            self.fit()
        X = _check_images(X, "Encoder")
        return encode(self.model_, X, size=self.size, batch_size=self.batch_size,
                      device=resolve_device(self.device), progress=self.progress, layer=self.layer, pool=self.pool)


# ----------------------------------------------------------------------------------- PCA
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

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise GalmoError(f"AutoPCA needs (N ≥ 2, D) features, got {X.shape}")
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
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        P = Z @ self.components_.T
        if self.whiten:
            P /= np.sqrt(np.maximum(self.explained_variance_, 1e-12))
        return P.astype(np.float32)


# ----------------------------------------------------------------------------------- invariant projection
class InvariantProjection(TransformerMixin, BaseEstimator):
    """Linear reduction that keeps the feature directions along which *galaxies* differ and drops
    those along which *observations of one galaxy* differ.

    ``fit(X, views=V)``: ``X`` (N, D) features of N galaxies, ``V`` (M, N, D) features of M augmented
    copies of the same galaxies (:meth:`galmo.augment.AugmentConfig.observing`: rotation, shift, zoom,
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
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.mean_):
            raise GalmoError(f"InvariantProjection was fitted on {len(self.mean_)}-d features, got shape {X.shape}")
        out = np.empty((len(X), self.n_components_), dtype=np.float32)
        for s in range(0, len(X), 65536):
            out[s:s + 65536] = np.asarray(X[s:s + 65536], dtype=np.float32) @ self.weights_ - self.offset_
        return out


def augmented_features(X: np.ndarray, featurize, views: int, generator) -> np.ndarray:
    """(views, N, D): ``featurize`` (images → features) of ``views`` copies of images ``X`` (N, C, H, W)
    in [0, 1], each augmented by :meth:`galmo.augment.AugmentConfig.observing` with the torch
    ``generator``."""
    import torch

    from galmo.augment import AugmentConfig, augment

    base = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    return np.stack([np.asarray(featurize(augment(base, generator, AugmentConfig.observing()).clamp(0, 1).numpy()))
                     for _ in range(int(views))])


class InvariantFeatures(TransformerMixin, BaseEstimator):
    """Images → invariant coordinates, as one Pipeline step: ``featurizer`` (the stages that turn
    images into features, e.g. ``Pipeline([PolarUnwrap, Encoder])``), then an
    :class:`InvariantProjection` fitted on the features of ``views`` augmented copies of up to
    ``max_fit`` of the images (a seeded random subsample)."""

    def __init__(self, featurizer, views: int = 16, max_fit: int = 3000, n_components: int = 60, reg: float = 0.1,
                 random_state: int = 0):
        self.featurizer = featurizer
        self.views = views
        self.max_fit = max_fit
        self.n_components = n_components
        self.reg = reg
        self.random_state = random_state

    def fit(self, X, y=None):
        import torch
        from sklearn.base import clone

        X = _check_images(X, "InvariantFeatures")
        if self.views < 1:
            raise GalmoError(f"InvariantFeatures needs at least 1 view per galaxy, got {self.views}")
        sub = X
        if len(X) > self.max_fit:
            sub = X[np.sort(np.random.default_rng(self.random_state).choice(len(X), self.max_fit, replace=False))]
        self.featurizer_ = clone(self.featurizer).fit(sub)
        gen = torch.Generator().manual_seed(int(self.random_state or 0))
        V = augmented_features(sub, self.featurizer_.transform, self.views, gen)
        self.projection_ = InvariantProjection(n_components=self.n_components, reg=self.reg).fit(
            self.featurizer_.transform(sub), views=V)
        return self

    def transform(self, X):
        return self.projection_.transform(self.featurizer_.transform(_check_images(X, "InvariantFeatures")))


# ----------------------------------------------------------------------------------- graph embedding
class GraphEmbedding(TransformerMixin, BaseEstimator):
    """Laplacian-eigenmap (spectral) embedding of the k-nearest-neighbour graph of the features,
    rows scaled to unit length — an optional stage between PCA and the voting clustering.

    KMeans, Ward and Birch all look for compact, convex groups; in the PCA space of CNN features
    the groups are elongated and touch, so the three members disagree on many galaxies and the
    classified fraction swings with the seed. On the neighbour graph's eigenvectors the groups
    become compact and the members agree far more often (``docs/unsupervised.md`` has the numbers:
    more galaxies classified, more stable across seeds, at a lower purity).

    The embedding itself is scikit-learn's :class:`~sklearn.manifold.SpectralEmbedding`, fitted on
    at most ``max_fit`` galaxies (a seeded random subsample, since the eigenproblem grows with N).
    Galaxies outside the fitted set are placed at the distance-weighted mean of the embeddings of
    their ``n_neighbors`` nearest fitted galaxies (the usual out-of-sample extension of a graph
    embedding), so ``transform`` works on new data and any N.
    """

    def __init__(self, n_components: int = 10, n_neighbors: int = 10, max_fit: int = 20000,
                 normalize: bool = True, random_state: int = 0):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.max_fit = max_fit
        self.normalize = normalize
        self.random_state = random_state

    def _finish(self, E: np.ndarray) -> np.ndarray:
        E = np.asarray(E, dtype=np.float32)
        if self.normalize:
            E = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
        return E

    def _embed(self, X):
        from sklearn.manifold import SpectralEmbedding
        from sklearn.neighbors import NearestNeighbors

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or not np.isfinite(X).all():
            raise GalmoError(f"GraphEmbedding needs finite (N, D) features, got shape {X.shape}")
        need = max(self.n_components + 2, self.n_neighbors + 1)
        if len(X) < need:
            raise GalmoError(f"GraphEmbedding needs at least {need} galaxies, got {len(X)}")
        fit_pos = np.arange(len(X))
        if len(X) > self.max_fit:
            rng = np.random.default_rng(self.random_state)
            fit_pos = np.sort(rng.choice(len(X), size=self.max_fit, replace=False))
        self.fit_X_ = X[fit_pos]
        se = SpectralEmbedding(n_components=self.n_components, affinity="nearest_neighbors",
                               n_neighbors=self.n_neighbors, random_state=self.random_state)
        self.embedding_ = se.fit_transform(self.fit_X_).astype(np.float32)
        self.n_fit_ = len(fit_pos)
        self.nn_ = NearestNeighbors(n_neighbors=min(self.n_neighbors, self.n_fit_)).fit(self.fit_X_)
        return X, fit_pos

    def fit(self, X, y=None):
        self._embed(X)
        return self

    def fit_transform(self, X, y=None, **fit_params):
        X, fit_pos = self._embed(X)
        if len(fit_pos) == len(X):
            return self._finish(self.embedding_)
        return self.transform(X)

    def transform(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.fit_X_.shape[1]:
            raise GalmoError(f"GraphEmbedding was fitted on {self.fit_X_.shape[1]}-d features, got shape {X.shape}")
        out = np.empty((len(X), self.n_components), dtype=np.float32)
        for s in range(0, len(X), 65536):
            d, idx = self.nn_.kneighbors(X[s:s + 65536])
            w = 1.0 / np.maximum(d, 1e-12)
            exact = d[:, 0] <= 1e-12  # a galaxy of the fitted set keeps its own embedding
            w[exact] = 0.0
            w[exact, 0] = 1.0
            w /= w.sum(1, keepdims=True)
            out[s:s + 65536] = np.einsum("nk,nkd->nd", w, self.embedding_[idx])
        return self._finish(out)
