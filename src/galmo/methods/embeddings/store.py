"""The embeddings file: Parquet with ``id`` + ``emb_0..emb_{d-1}`` (float32 columns, readable by any
table tool) and the metadata (model, dim, ...) as JSON in the Parquet schema metadata under the key
``galmo``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import GalmoError
from galmo.core.io import atomic_path

META_KEY = b"galmo"


def write_embeddings(path, ids, emb: np.ndarray, meta: dict | None = None, extra: pd.DataFrame | None = None) -> Path:
    """Parquet: ``id``, ``emb_0..emb_{d-1}`` (float32), then ``extra`` columns; metadata in the schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb = np.asarray(emb, np.float32)
    cols = {"id": pd.Series(np.asarray(ids).astype(str))}
    df = pd.concat([pd.DataFrame(cols), pd.DataFrame(emb, columns=[f"emb_{k}" for k in range(emb.shape[1])])], axis=1)
    if extra is not None:
        df = pd.concat([df, extra.reset_index(drop=True).drop(columns=[c for c in extra.columns if c in df.columns])],
                       axis=1)
    table = pa.Table.from_pandas(df, preserve_index=False)
    m = {"dim": int(emb.shape[1]), "n": int(emb.shape[0]), **(meta or {})}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(m).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


@dataclass
class Embeddings:
    ids: np.ndarray
    X: np.ndarray
    meta: dict
    table: pd.DataFrame  # the non-embedding columns (id + extras)

    def position(self, ident: str) -> int:
        hit = np.flatnonzero(self.ids == str(ident))
        if not len(hit):
            raise GalmoError(f"id {ident!r} is not in the embeddings ({len(self.ids)} ids, "
                             f"e.g. {self.ids[:3].tolist()})")
        return int(hit[0])


def read_embeddings(path) -> Embeddings:
    """The embeddings file at ``path``; GalmoError naming it when it is missing, not Parquet, lacks
    ``id``/``emb_*`` columns, has duplicate ids or non-finite values."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise GalmoError("no such embeddings file (make one with galmo embed)", path=path)
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign file
        raise GalmoError(f"cannot read as Parquet ({type(e).__name__}: {e})", path=path) from None
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    df = table.to_pandas()
    ecols = [c for c in df.columns if c.startswith("emb_")]
    if "id" not in df.columns or not ecols:
        raise GalmoError("not an embeddings file: needs 'id' and emb_0..emb_{d-1} columns", path=path)
    ecols.sort(key=lambda c: int(c[4:]))
    ids = df["id"].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise GalmoError(f"{len(dup)} duplicate ids (e.g. {dup.iloc[0]!r}); each galaxy must appear once "
                         f"(re-run galmo embed on a source with unique ids)", path=path)
    X = df[ecols].to_numpy(np.float32)
    if not np.isfinite(X).all():
        raise GalmoError(f"{int((~np.isfinite(X)).any(1).sum())} embeddings contain NaN/Inf", path=path)
    return Embeddings(ids.to_numpy(), X, meta, df.drop(columns=ecols))
