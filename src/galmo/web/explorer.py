"""What the explorer knows across its runs: the galaxies, their images, and everything a run says about one."""

from __future__ import annotations

import threading
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.schema import ANSWER_COLUMNS
from galmo.web.runs import MORPHOLOGY, NotFound, Run, discover
from galmo.web.thumbs import Sources, ThumbCache

N_NEIGHBOURS = 10
CATALOG_SKIP = ("ref", "path", "file", "filename", "id")


class Explorer:
    """The runs of ``run_dirs`` (see :func:`galmo.web.runs.discover`), the image sources (``data`` first,
    then those the runs record) and the thumbnail cache."""

    def __init__(self, run_dirs, data=None, who=None, thumb_cache=None):
        from galmo.core.io import cache_dir

        self.runs: dict[str, Run] = discover(run_dirs)
        self.who = who
        self.sources = Sources([data] + [r.source_path for r in self.runs.values()])
        self.thumbs = ThumbCache(Path(thumb_cache) if thumb_cache else cache_dir() / "thumbs", self.sources)
        self._indexes: dict[str, tuple] = {}
        self._maps: dict[str, tuple] = {}
        self._models: dict[str, tuple] = {}
        self._encoders: dict = {}
        self._lock = threading.Lock()

    def run(self, name: str) -> Run:
        if name not in self.runs:
            raise NotFound(f"no run named {name!r} (runs: {', '.join(self.runs)})")
        return self.runs[name]

    # ------------------------------------------------------------------ ids
    @cached_property
    def ids(self) -> np.ndarray:
        """Every galaxy id of the runs' tables, sorted (for the search by prefix)."""
        parts = [t.sorted_ids for r in self.runs.values() for t in r.tables()]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=str)

    def known(self, ident: str) -> bool:
        pos = np.searchsorted(self.ids, ident)
        return (pos < len(self.ids) and self.ids[pos] == ident) or self.sources.has(ident)

    def search(self, query: str, limit: int = 50) -> list[str]:
        """Ids starting with ``query`` (at most ``limit``, sorted)."""
        lo = np.searchsorted(self.ids, query)
        hits = self.ids[lo:lo + limit]
        return [str(i) for i in hits if str(i).startswith(query)]

    # ------------------------------------------------------------------ one galaxy
    def galaxy(self, ident: str) -> dict:
        """Everything known about galaxy ``ident``: its bands, its catalog row and, per run, the
        predictions, expert label, group, outlier rank and nearest neighbours. NotFound when unknown."""
        if not self.known(ident):
            raise NotFound(f"no galaxy with id {ident!r}")
        has_image = self.sources.has(ident)
        cat = self.sources.catalog_row(ident) or {}
        info = {"id": ident, "bands": self.sources.bands(ident) if has_image else [], "has_image": has_image,
                "catalog": {k: v for k, v in cat.items() if k not in CATALOG_SKIP and np.isscalar(v)}, "runs": []}
        for run in self.runs.values():
            entry = self._run_entry(run, ident)
            if entry:
                info["runs"].append(entry)
        return info

    def _run_entry(self, run: Run, ident: str) -> dict:
        entry: dict = {}
        if run.predictions is not None and (row := run.predictions.row(ident)) is not None:
            entry["prediction"] = run.items([run.predictions.index.get_loc(ident)])[0] if run.class_names else None
            entry["votes"] = [(c, float(row[c])) for c in ANSWER_COLUMNS if c in row]
            entry["split"] = None if run.split is None else run.split.get(ident)
            if run.labels is not None:
                entry["expert"] = run.labels.current().get(ident)
        if run.groups is not None and (row := run.groups.row(ident)) is not None:
            entry["group"] = {"group": int(row["group"]), "agreement": row.get("agreement")}
        if run.morphology is not None and (row := run.morphology.row(ident)) is not None:
            entry["morphology"] = {k: row[k] for k in MORPHOLOGY if k in row}
        if run.outliers is not None and (row := run.outliers.row(ident)) is not None:
            entry["outlier"] = {"rank": int(row["rank"]), "score": float(row["anomaly_score"]), "n": len(run.outliers)}
        if run.embeddings_file is not None:
            entry["neighbours"] = self.neighbours(run, ident)
        return {"run": run.name, **entry} if entry else {}

    def index(self, run: Run) -> tuple:
        """(the faiss index, the embeddings, their ids as a set) of the run's embeddings, loaded once."""
        from galmo.methods.embeddings.index import index_for

        with self._lock:
            if run.name not in self._indexes:
                index, emb, _ = index_for(run.embeddings_file)
                self._indexes[run.name] = (index, emb, set(emb.ids.tolist()))
            return self._indexes[run.name]

    def neighbours(self, run: Run, query, k: int = N_NEIGHBOURS) -> list[dict]:
        """The ``k`` nearest galaxies to ``query`` (an id, itself left out, or an embedding vector) in the
        run's embeddings: id, similarity."""
        from galmo.methods.embeddings.index import neighbours

        index, emb, ids = self.index(run)
        if isinstance(query, str) and query not in ids:
            return []
        table = neighbours(index, emb, query, k=k + 1)
        if isinstance(query, str):
            table = table[table["id"] != query]
        return [{"id": str(i), "similarity": float(s)} for i, s in zip(table["id"].head(k), table["similarity"])]

    def encoder(self, run: Run):
        """The encoder of the run's embeddings, for uploaded images (loaded once)."""
        from galmo.methods.embeddings.run import query_encoder

        _, emb, _ = self.index(run)
        with self._lock:
            if run.name not in self._encoders:
                self._encoders[run.name] = query_encoder(emb)
            return self._encoders[run.name]

    def model(self, run: Run) -> tuple:
        """(the run's models, its 'supervised' config block), loaded once on the CPU."""
        from galmo.methods.supervised.run import load_runs

        with self._lock:
            if run.name not in self._models:
                models, _, sup = load_runs(run.path, device="cpu")
                self._models[run.name] = (models, sup)
            return self._models[run.name]

    # ------------------------------------------------------------------ the embedding map
    def map_points(self, run: Run, colour: str | None = None) -> dict:
        """The points of the run's embedding map (see :mod:`galmo.web.emap`) coloured by ``colour`` (a key of
        ``options``; none or unknown: the first), as the map page's script draws them."""
        from galmo.web.emap import colour_values, sample

        df, meta, options = self._map(run)
        pos = sample(len(df))
        key = colour if colour in options else next(iter(options), None)
        xy = df[["x", "y"]].to_numpy(np.float64)[pos]
        xy = (xy - xy.min(0)) / max(float(np.ptp(xy, axis=0).max()), 1e-30) if len(xy) else xy  # one scale: shapes kept
        data = {"n": len(df), "shown": len(pos), "method": meta["method"], "explained": meta["explained"],
                "ids": df["id"].iloc[pos].tolist(), "x": xy[:, 0].round(5).tolist(), "y": xy[:, 1].round(5).tolist(),
                "options": [[k, v[0]] for k, v in options.items()], "colour": None}
        if key is not None:
            name, values, categorical = options[key]
            data["colour"] = {"key": key, "name": name, **colour_values(values.iloc[pos], categorical)}
        return data

    def _map(self, run: Run) -> tuple:
        from galmo.web.emap import colourings, embedding_map

        if run.embeddings_file is None:
            raise NotFound(f"run {run.name} has no embeddings to map (make them with galmo embed)")
        with self._lock:
            if run.name not in self._maps:
                df, meta = embedding_map(run.embeddings_file)
                labels = df["label_name"] if "label_name" in df.columns else None
                self._maps[run.name] = (df, meta, colourings(self.runs, labels, pd.Index(df["id"])))
            return self._maps[run.name]
