"""The embedding map: a 2-D projection of a run's embeddings, computed once and kept in the run folder.

The projection is the first two principal components of the L2-normalised embeddings (the cosine
geometry the neighbours use; numpy only, deterministic, seconds for 100,000 galaxies). It is written
atomically beside the embeddings as ``<emb>.map.parquet`` (``id``, ``x``, ``y``, the variance each
axis explains and a stamp of the embeddings file in its metadata) and recomputed when the embeddings
change. The page draws at most :data:`MAP_POINTS` galaxies (a seeded random sample of larger runs),
coloured by one of :func:`colourings`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

MAP_POINTS = 20_000
META_KEY = b"galmo_map"
CATEGORIES = 12  # categorical colourings keep the commonest 11 values, the rest are "other"


def map_path(emb_file: Path) -> Path:
    return emb_file.with_name(emb_file.name.removesuffix(".parquet") + ".map.parquet")


def embedding_map(emb_file: Path) -> tuple[pd.DataFrame, dict]:
    """(id, x, y (and the catalog's label_name) of every galaxy of the embeddings ``emb_file``, the map's
    metadata); read from the cache
    beside it when it is there and made from the same embeddings, else computed and written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from galmo.core.io import atomic_path
    from galmo.methods.embeddings.index import _stamp
    from galmo.methods.embeddings.store import read_embeddings

    path, stamp = map_path(emb_file), _stamp(emb_file)
    if path.is_file():
        try:
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
            if meta.get("stamp") == stamp:
                return table.to_pandas(), meta
        except (OSError, ValueError, pa.ArrowException):
            pass  # a foreign or broken file: made again
    emb = read_embeddings(emb_file)
    xy, explained = pca_2d(emb.X)
    df = pd.DataFrame({"id": emb.ids.astype(str), "x": xy[:, 0], "y": xy[:, 1]})
    if "label_name" in emb.table.columns:  # the catalog's class, when the source had one
        df["label_name"] = emb.table["label_name"].astype("string").to_numpy()
    meta = {"method": "pca", "explained": explained, "n": len(df), "stamp": stamp}
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata({META_KEY: json.dumps(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return df, meta


def pca_2d(X: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """(N, 2) float32 coordinates on the first two principal axes of the L2-normalised rows of ``X``, the
    share of the variance each explains; the sign of each axis fixed (largest loading positive)."""
    from galmo.methods.embeddings.index import l2_normalise

    Z = l2_normalise(np.asarray(X, np.float64))
    Z -= Z.mean(0)
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    axes = vt[:2] * np.sign(vt[:2][np.arange(min(2, len(vt))), np.abs(vt[:2]).argmax(1)])[:, None]
    xy = Z @ axes.T
    if xy.shape[1] < 2:  # one-dimensional embeddings
        xy = np.c_[xy, np.zeros(len(xy))]
    var = s ** 2
    explained = (var[:2] / var.sum()).tolist() if var.sum() > 0 else [0.0, 0.0]
    return xy.astype(np.float32), [float(v) for v in explained]


def sample(n: int, limit: int = MAP_POINTS, seed: int = 0) -> np.ndarray:
    """Positions of the points drawn: all of them, or a seeded random ``limit`` of them (sorted)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


COLOURINGS = (  # (key, table of a run, its column, categorical)
    ("group", "groups", "group", True), ("predicted", "predictions", "pred_name", True),
    ("confidence", "predictions", "confidence", False), ("outlier", "outliers", "anomaly_score", False))


def colourings(runs: dict, labels: pd.Series | None, ids: pd.Index) -> dict[str, tuple[str, pd.Series, bool]]:
    """key → (name, one value per galaxy of ``ids`` (NaN when unknown), categorical) of every colouring
    the explorer can give: the catalog ``labels``, and the groups, predicted classes, confidences and
    outlier scores of every run that knows some of the galaxies."""
    out = {}
    if labels is not None and labels.notna().any():
        out["label"] = ("catalog label", labels.reset_index(drop=True), True)
    for key, attr, col, categorical in COLOURINGS:
        for run in runs.values():
            table = getattr(run, attr)
            if table is None or col not in table.df.columns:
                continue
            pos = table.index.get_indexer(ids)
            if (pos >= 0).any():
                values = table.df[col].iloc[np.maximum(pos, 0)].reset_index(drop=True)
                if categorical:  # kept as they are (no 2 → 2.0 where some are unknown)
                    values = values.astype(object).map(lambda g: "unclassified" if key == "group" and g == -1 else g)
                values = values.where(pd.Series(pos >= 0))
                out[f"{key}:{run.name}"] = (f"{key} ({run.name})", values, categorical)
    return out


def colour_values(values: pd.Series, categorical: bool) -> dict:
    """A colouring of the points from one value per point: numeric (``kind`` 'numeric', the values, their
    range) or categorical (``kind`` 'category', each point's category index, the category names; the
    commonest first, the rest as 'other'; missing values are -1)."""
    if not categorical:
        v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        finite = v[np.isfinite(v)]
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        return {"kind": "numeric", "values": [round(float(x), 5) if np.isfinite(x) else None for x in v],
                "range": [lo, hi]}
    text = values.map(lambda x: x if pd.isna(x) else str(x)).astype("string")
    top = text.value_counts().index[:CATEGORIES - 1].tolist()
    codes = pd.Categorical(text.where(text.isin(top) | text.isna(), "other"), categories=top + ["other"]).codes
    names = top + (["other"] if (codes == len(top)).any() else [])
    return {"kind": "category", "values": codes.tolist(), "categories": [str(c) for c in names]}
