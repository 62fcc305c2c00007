"""Linear probes on a fraction of the labels (cross-validated), and the supervised CNN trained from
scratch on the same splits (:func:`probe_splits`) as their baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import GalmoError
from galmo.methods.embeddings.threads import single_threaded_blas


def probe_splits(y: np.ndarray, fraction: float, folds: int = 5, seed: int = 0, classification: bool = True,
                 min_per_class: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train, test) splits of the labelled rows: test = one CV fold; train = ``fraction`` of
    the other folds (stratified for classes, with at least ``min_per_class`` per class)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if not 0 < fraction <= 1:
        raise GalmoError(f"--fraction must be in (0, 1], got {fraction}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    cv = (StratifiedKFold if classification else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    out = []
    for rest, test in cv.split(np.zeros(len(y)), y if classification else None):
        if fraction >= 1:
            out.append((rest, test))
            continue
        n_train = max(1, int(round(fraction * len(rest))))
        if classification:
            pick = []
            classes, counts = np.unique(y[rest], return_counts=True)
            quota = np.maximum(min_per_class, np.round(counts / counts.sum() * n_train)).astype(int)
            for c, q in zip(classes, quota):
                members = rest[y[rest] == c]
                pick.append(rng.choice(members, size=min(q, len(members)), replace=False))
            train = np.sort(np.concatenate(pick))
        else:
            train = np.sort(rng.choice(rest, size=max(5, n_train), replace=False))
        out.append((train, test))
    return out


def _probe_kind(y: np.ndarray, kind: str) -> str:
    if kind != "auto":
        return kind
    return "classification" if (y.dtype.kind in "iub" or (y.dtype.kind == "O")) and \
        len(np.unique(y)) <= 50 else "regression"


def _labelled(X: np.ndarray, y: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows with a label (classes: not -1 / missing; regression: finite), y as float for regression."""
    if kind == "classification":
        ok = (y >= 0) if y.dtype.kind in "iu" else pd.notna(y)
    else:
        y = y.astype(np.float64)
        ok = np.isfinite(y)
    return np.asarray(X)[ok], y[ok]


def _fold_score(X, y, train, test, kind: str, C: float, extra: dict) -> float:
    """One fold's test score: accuracy (classes) or σ_NMAD (regression; the RMSE goes to ``extra``)."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from galmo.core.metrics import sigma_nmad

    if kind == "classification":
        if len(np.unique(y[train])) < 2:
            return float(np.mean(y[test] == y[train][0]))
        m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000, tol=1e-3))
        m.fit(X[train], y[train])
        return float(np.mean(m.predict(X[test]) == y[test]))
    m = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
    m.fit(X[train], y[train])
    pred = m.predict(X[test])
    extra["rmse"].append(float(np.sqrt(np.mean((pred - y[test]) ** 2))))
    extra["sigma_nmad"].append(sigma_nmad(y[test], pred))
    return extra["sigma_nmad"][-1]


@single_threaded_blas
def probe(X: np.ndarray, y: np.ndarray, fraction: float = 1.0, kind: str = "auto", folds: int = 5,
          seed: int = 0, C: float = 1.0) -> dict:
    """Cross-validated linear probe on ``fraction`` of the labels.

    ``kind``: "classification" (standardised features → logistic regression, metric accuracy),
    "regression" (standardised features → RidgeCV; RMSE, and σ_NMAD of Δy/(1+y) for redshifts), or
    "auto" (integer labels with ≤ 50 values → classification). Rows with label -1 / NaN are ignored.
    """
    y = np.asarray(y)
    kind = _probe_kind(y, kind)
    X, y = _labelled(X, y, kind)
    if len(y) < 2 * folds:
        raise GalmoError(f"only {len(y)} labelled galaxies: too few for a {folds}-fold probe")
    splits = probe_splits(y, fraction, folds, seed, classification=kind == "classification")
    extra: dict[str, list] = {"sigma_nmad": [], "rmse": []}
    scores = [_fold_score(X, y, train, test, kind, C, extra) for train, test in splits]
    n_train = [len(train) for train, _ in splits]
    res = {"kind": kind, "fraction": fraction, "folds": folds, "n_labelled": int(len(y)),
           "n_train_mean": float(np.mean(n_train)), "metric": "accuracy" if kind == "classification" else "sigma_nmad",
           "mean": float(np.mean(scores)), "std": float(np.std(scores)), "per_fold": scores}
    if kind == "regression":
        res["rmse"] = float(np.mean(extra["rmse"]))
    return res


# ====================================================================== the supervised baseline
CNN_NAME = "simple_cnn"


def cnn_kwargs(in_chans: int, n_classes: int, width: int = 16) -> dict:
    """Constructor arguments of the registered ``simple_cnn`` baseline (galmo.nn.models.cnn). Width 16
    (16-32-64-128 channels, ~0.3 M parameters) keeps the 100 %-label run to minutes on 2 cores."""
    return {"in_chans": int(in_chans), "num_outputs": int(n_classes), "width": int(width)}


def cnn_epochs(n: int) -> int:
    """Epochs of the baseline on ``n`` training labels: ~60 / 150 / 300 steps of 32 images, 5 to 60 epochs."""
    steps_wanted = 300 if n >= 1000 else 150 if n >= 100 else 60
    return int(np.clip(np.ceil(steps_wanted * 32 / max(n, 1)), 5, 60))


def supervised_cnn(images: np.ndarray, y: np.ndarray, splits, run_dir, epochs_for=None, seed: int = 0,
                   max_folds: int = 2, progress: bool = False) -> dict:
    """Accuracy of ``simple_cnn`` trained from scratch (``galmo.nn.train.fit``) on each split's train rows."""
    import time

    import torch
    from torch.utils.data import TensorDataset

    from galmo.nn.infer import infer
    from galmo.nn.models import create
    from galmo.nn.tasks.classify_baseline import DihedralClassifyTask
    from galmo.nn.train import TrainConfig, fit

    kw = cnn_kwargs(int(images.shape[1]), int(y.max()) + 1)
    accs, n_train, secs = [], [], []
    for f, (train, test) in enumerate(splits[:max_folds]):
        n = len(train)
        torch.manual_seed(seed + f)
        model = create(CNN_NAME, **kw)
        tr = TensorDataset(torch.from_numpy(images[train]), torch.as_tensor(y[train], dtype=torch.long))
        cfg = TrainConfig(epochs=(epochs_for or cnn_epochs)(n), batch_size=32, lr=2e-3, seed=seed + f,
                          device="cpu", progress=progress)
        t0 = time.perf_counter()
        # no validation set: too few labels to hold any out honestly; the last-best on train loss is kept
        fit(model, tr, None, DihedralClassifyTask(), cfg, Path(run_dir) / f"cnn_fold{f}_n{n}", model_name=CNN_NAME,
            model_kwargs=kw)
        secs.append(time.perf_counter() - t0)
        logits = infer(model, images[test], batch_size=256, device="cpu")
        accs.append(int((logits.argmax(1) == y[test]).sum()) / max(len(test), 1))
        n_train.append(n)
    return {"metric": "accuracy", "mean": float(np.mean(accs)), "std": float(np.std(accs)), "per_fold": accs,
            "n_train_mean": float(np.mean(n_train)), "folds": len(accs), "seconds": float(np.sum(secs))}
