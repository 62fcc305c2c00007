"""Run folders for the explorer's tests and benchmarks: real tiny runs (a trained run with predictions,
embeddings and outliers; a cluster run) and a synthetic run with many galaxies (predictions + groups) for
the scale test and ``benchmarks/bench_web.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FAST = ["--device", "cpu", "--no-progress"]


def trained_run(tiny, run: Path, epochs: int = 2) -> Path:
    """A ``simple_cnn`` run of the source ``tiny`` with predictions of every galaxy, its embeddings (the
    run as the encoder) and an ``outliers`` sub-run."""
    from galmo.cli import main

    assert main(["train", "--data", str(tiny), "--out", str(run), "--model", "simple_cnn", "--epochs", str(epochs),
                 "--width", "4", "--batch-size", "16", "--lr", "3e-3", "--seed", "3", *FAST]) == 0
    assert main(["predict", "--run", str(run), "--data", str(tiny), "--out", str(run / "predictions.parquet"),
                 *FAST]) == 0
    assert main(["embed", "--encoder", str(run), "--data", str(tiny), "--out", str(run / "embeddings.parquet"),
                 *FAST]) == 0
    assert main(["outliers", "--emb", str(run / "embeddings.parquet"), "--out", str(run / "outliers")]) == 0
    return run


def cluster_run(tiny, out: Path, k: int = 3) -> Path:
    """A quick ``galmo cluster`` run (k groups, plain pixel features) of the source ``tiny``."""
    from galmo.cli import main

    assert main(["cluster", "--data", str(tiny), "--out", str(out), "--k", str(k), "--no-invariant", "--no-graph",
                 "--no-polar", "--features", "euml", "--image-size", "32", "--morph-per-group", "0",
                 "--no-progress"]) == 0
    return out


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
