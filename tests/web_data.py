"""A synthetic run folder with many galaxies (predictions + groups) for the explorer's scale test and
``benchmarks/bench_web.py``."""

from __future__ import annotations

import numpy as np
import pandas as pd


def large_run(folder, n: int = 100_000, k: int = 10, seed: int = 0):
    """``folder`` with ``predictions.parquet`` (k classes) and ``cluster_catalog.parquet`` for n galaxies
    ``gal0`` … ``gal{n-1}``; returns the folder."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.5), n).astype(np.float32)
    ids = np.char.add("gal", np.arange(n).astype(str))
    preds = pd.DataFrame({"id": ids, **{f"prob_{j}": p[:, j] for j in range(k)}, "pred_label": p.argmax(1),
                          "confidence": p.max(1), "entropy": -(p * np.log(p + 1e-12)).sum(1)})
    preds["pred_name"] = np.char.add("class", preds["pred_label"].astype(str).to_numpy().astype(str))
    preds.to_parquet(folder / "predictions.parquet", index=False)
    pd.DataFrame({"id": ids, "group": rng.integers(0, 10, n), "agreement": rng.integers(1, 4, n)}).to_parquet(
        folder / "cluster_catalog.parquet", index=False)
    return folder


URLS = ("/run/{name}/predictions?order=margin&page=1500", "/run/{name}/predictions?order=entropy&page=2000",
        "/run/{name}/groups", "/run/{name}/groups/4?page=150", "/run/{name}/queue", "/galaxy/gal54321",
        "/search?q=gal9999")
