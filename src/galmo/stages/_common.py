"""Input checks shared by the image stages."""

from __future__ import annotations

import numpy as np

from galmo.core.errors import GalmoError


def check_images(X, who: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise GalmoError(f"{who} expects images shaped (N, C, H, W), got {X.shape}")
    if not np.isfinite(X).all():
        X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
    return X
