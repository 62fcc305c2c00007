"""A tiny synthetic Galaxy10-schema HDF5 (+ truth parquet with 37 vote fractions) for fast tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_tiny_source(path, n: int = 96, size: int = 32, n_classes: int = 3, seed: int = 0):
    """Classes: 0 round blob, 1 elongated blob (random angle), 2 ring. Votes: tree-consistent fractions
    loosely tied to the class. Returns the path."""
    import h5py

    from galmo.core.schema import QUESTION_SLICES, cumulative_from_conditional

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    imgs = np.empty((n, size, size, 3), np.uint8)
    cond = np.zeros((n, 37))
    for i, c in enumerate(labels):
        dx, dy = rng.normal(0, 1, 2)
        x, y = xx - dx, yy - dy
        t = rng.uniform(0, np.pi)
        u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
        r0 = rng.uniform(3.5, 5.0)
        if c == 0:
            f = np.exp(-(u ** 2 + v ** 2) / (2 * r0 ** 2))
        elif c == 1:
            f = np.exp(-(u ** 2 / (2 * (2.2 * r0) ** 2) + v ** 2 / (2 * (0.45 * r0) ** 2)))
        else:
            r = np.hypot(u, v)
            f = np.exp(-((r - 2 * r0) ** 2) / (2 * 1.2 ** 2)) + 0.6 * np.exp(-r ** 2 / 4)
        img = f[..., None] * np.array([1.0, 0.8, 0.6]) * rng.uniform(0.6, 0.9) + rng.normal(0, 0.04, (size, size, 3))
        imgs[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
        for a, b in QUESTION_SLICES:
            w = rng.dirichlet(np.ones(b - a))
            cond[i, a:b] = w
        q1 = {0: [0.85, 0.1, 0.05], 1: [0.2, 0.75, 0.05], 2: [0.45, 0.5, 0.05]}[c]
        cond[i, 0:3] = q1
    votes = cumulative_from_conditional(cond)
    ids = np.array([f"g{i:04d}" for i in range(n)])
    with h5py.File(path, "w") as f:
        f["images"] = imgs
        f["ans"] = labels.astype(np.uint8)
        f["ra"] = rng.uniform(0, 360, n)
        f["dec"] = rng.uniform(-10, 10, n)
        f["redshift"] = rng.uniform(0.01, 0.1, n)
        f["pxscale"] = np.full(n, 0.262)
        f["id"] = ids.astype("S")
    from galmo.core.schema import ANSWER_COLUMNS

    truth = pd.DataFrame(votes, columns=ANSWER_COLUMNS)
    truth.insert(0, "id", ids)
    truth.to_parquet(str(path).replace(".h5", ".truth.parquet"), index=False)
    return path
