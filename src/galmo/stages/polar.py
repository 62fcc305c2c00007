"""eUML stage 2: the adaptive, rotation-normalised polar unwrap."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from galmo.stages._common import check_images


class PolarUnwrap(TransformerMixin, BaseEstimator):
    """Adaptive, rotation-normalised polar unwrap (Fang et al. 2023; :func:`galmo.core.transforms.polar_unwrap`).

    Stateless: ``fit`` only records the input and output shapes; ``transform`` writes nothing.
    :meth:`unwrap` also returns the origin (y, x) and the reference angle chosen for each image.
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
        X = check_images(X, "PolarUnwrap")
        self.input_shape_ = X.shape[1:]
        self.output_shape_ = self.transform(X[:1]).shape[1:]
        return self

    def transform(self, X):
        return self.unwrap(X)[0]

    def unwrap(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unwrapped images, origins (N, 2) as (y, x) pixels, reference angles (N,) in radians)."""
        from galmo.core.transforms import polar_unwrap

        X = check_images(X, "PolarUnwrap")
        outs, origins, angles = [], [], []
        for s in range(0, len(X), self.batch_size):
            o, org, ang = polar_unwrap(X[s:s + self.batch_size], step=self.step, centre_frac=self.centre_frac,
                                       smooth_sigma=self.smooth_sigma, ref_annulus=tuple(self.ref_annulus),
                                       mirror=self.mirror, radial=self.radial, r_min=self.r_min,
                                       return_params=True)
            outs.append(o)
            origins.append(org)
            angles.append(ang)
        return np.concatenate(outs), np.concatenate(origins), np.concatenate(angles)
