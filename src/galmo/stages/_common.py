"""Input checks shared by the stages."""

from __future__ import annotations

import numpy as np
from sklearn.exceptions import NotFittedError

from galmo.core.errors import GalmoError


class StageInputError(GalmoError, ValueError):
    """Bad input to a stage: a :class:`GalmoError` for galmo's users (one message, exit 2) and a
    ``ValueError`` for scikit-learn, whose estimator contract asks for one."""


class StageNotFitted(GalmoError, NotFittedError):
    """A stage used before ``fit``: a GalmoError and scikit-learn's ``NotFittedError``."""


def check_images(X, who: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise StageInputError(f"{who} expects images shaped (N, C, H, W), got {X.shape}")
    if not np.isfinite(X).all():
        X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
    return X


def check_fitted(est, attributes) -> None:
    """:func:`sklearn.utils.validation.check_is_fitted` with a galmo message."""
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(est, attributes)
    except NotFittedError:
        raise StageNotFitted(f"this {type(est).__name__} is not fitted yet: call fit first") from None


def check_features(est, X, *, reset: bool, what: str = "features", dtype=(np.float64, np.float32),
                   min_samples: int = 1) -> np.ndarray:
    """``X`` as a finite 2-D float array through scikit-learn's ``validate_data`` (which also records
    or checks ``n_features_in_``); its ValueError becomes a :class:`StageInputError` naming the stage."""
    from sklearn.utils.validation import validate_data

    name = type(est).__name__
    shape = getattr(X, "shape", None)
    try:
        return validate_data(est, X, reset=reset, dtype=list(dtype), ensure_min_samples=min_samples)
    except ValueError as e:
        fitted = getattr(est, "n_features_in_", None)
        where = f"was fitted on {fitted}-d {what}" if not reset and fitted is not None else f"needs 2-D {what} (N, D)"
        raise StageInputError(f"{name} {where}, got shape {shape}: {e}") from None
