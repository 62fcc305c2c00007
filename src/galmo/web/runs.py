"""The run folders the explorer shows: what each holds, read lazily and once, and the queries its pages make.

A run folder is recognised by its files (:data:`ARTEFACTS`): ``config.json``/``metrics.json``/``figures/``
(any run), ``predictions*.parquet`` and ``split.csv`` (``galmo train``/``evaluate``/``predict``),
``cluster_catalog.parquet`` (``galmo cluster``), an embeddings ``.parquet`` (``galmo embed``: ``emb_*``
columns) and ``outliers.csv`` (``galmo outliers``). The sub-folders of a given folder that are runs
(a ``galmo demo`` folder's, an ``outliers/`` folder inside a run) are runs too, except the parts of a run
(:data:`NOT_RUNS`: ``last/`` checkpoints, ...). Every table is read on first use and kept; the
pages take slices of presorted positions (no page touches the whole catalog once it is loaded).
"""

from __future__ import annotations

import re
import threading
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import GalmoError
from galmo.web.labels import LabelStore

ARTEFACTS = ("config.json", "metrics.json", "figures", "split.csv", "cluster_catalog.parquet", "outliers.csv")
PREDICTIONS = ("predictions.parquet", "predictions_all.parquet", "predictions_test.parquet")
FINETUNE = "finetune.json"
ORDERS = ("confidence", "entropy", "margin")
NOT_RUNS = ("last", "sections", "figures", "before", "finetune")  # parts of a run folder, not runs of their own
GROUP_COLUMNS = ("id", "group", "agreement", "label_name")
MORPHOLOGY = ("gini", "m20", "concentration", "asymmetry", "smoothness", "sersic_n", "rhalf_circ", "lotz_class")


class NotFound(GalmoError):
    """An unknown run, galaxy, group or file: a 404 page."""


def _read_json(path: Path) -> dict:
    from galmo.core.io import read_json

    try:
        return read_json(path) if path.is_file() else {}
    except (ValueError, OSError):
        return {}


def embedding_files(folder: Path) -> list[Path]:
    """The ``galmo embed`` outputs in ``folder`` (Parquet files with an ``emb_0`` column; only the schema is read)."""
    import pyarrow.parquet as pq

    out = []
    for p in sorted(folder.glob("*.parquet")):
        try:
            if "emb_0" in pq.read_schema(p).names:
                out.append(p)
        except Exception:  # noqa: BLE001 - not a Parquet file: not ours to show
            continue
    return out


def is_run(folder: Path) -> bool:
    return folder.is_dir() and (any((folder / a).exists() for a in ARTEFACTS + PREDICTIONS)
                                or bool(embedding_files(folder)))


def discover(paths) -> dict[str, Run]:
    """name → Run for the folders given (a folder without run files: its sub-folders that are runs)."""
    runs: dict[str, Run] = {}
    for given in paths:
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise GalmoError("no such run folder", path=given)
        found = [folder] if is_run(folder) else []
        found += [s for s in sorted(folder.iterdir()) if not s.name.startswith(".") and s.name not in NOT_RUNS
                  and is_run(s)]
        if not found:
            raise GalmoError("not a run folder: no config.json, metrics.json, predictions, cluster catalog, "
                             "embeddings or outliers.csv here or in its sub-folders", path=given)
        for f in found:
            name = _unique(runs, folder.name if f == folder else f"{folder.name}-{f.name}")
            runs[name] = Run(name, f)
    return runs


def _unique(taken: dict, name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "run"
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    return out


class Table:
    """A catalog kept in memory with its id index (positions by id in O(1))."""

    def __init__(self, df: pd.DataFrame):
        self.df = df.reset_index(drop=True)
        self.df["id"] = self.df["id"].astype(str)
        self.index = pd.Index(self.df["id"])
        self.sorted_ids = np.sort(self.df["id"].to_numpy(dtype=str))

    def __len__(self) -> int:
        return len(self.df)

    def row(self, ident: str) -> dict | None:
        pos = self.index.get_indexer([ident])[0]
        return None if pos < 0 else self.df.iloc[pos].to_dict()

    def rows(self, positions) -> list[dict]:
        return self.df.iloc[np.asarray(positions, dtype=np.int64)].to_dict("records")


class Run:
    """One run folder (see the module docstring)."""

    def __init__(self, name: str, path: Path):
        self.name, self.path = name, Path(path).resolve()
        self._lock = threading.Lock()
        self._orders: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ what it holds
    @cached_property
    def config(self) -> dict:
        return _read_json(self.path / "config.json")

    @cached_property
    def metrics(self) -> dict:
        return _read_json(self.path / "metrics.json")

    @cached_property
    def finetune(self) -> dict:
        return _read_json(self.path / FINETUNE)

    @cached_property
    def figures(self) -> list[str]:
        return [p.relative_to(self.path).as_posix() for p in sorted((self.path / "figures").glob("*.png"))]

    @cached_property
    def predictions_file(self) -> Path | None:
        return next((self.path / f for f in PREDICTIONS if (self.path / f).is_file()), None)

    @cached_property
    def predictions(self) -> Table | None:
        return Table(pd.read_parquet(self.predictions_file)) if self.predictions_file else None

    @cached_property
    def groups(self) -> Table | None:
        path = self.path / "cluster_catalog.parquet"
        if not path.is_file():
            return None
        import pyarrow.parquet as pq

        cols = [c for c in GROUP_COLUMNS if c in pq.read_schema(path).names]
        return Table(pd.read_parquet(path, columns=cols))

    @cached_property
    def morphology(self) -> Table | None:
        """The statmorph measurements of ``galmo cluster`` (``cluster_morphology.parquet``: a few galaxies a group)."""
        path = self.path / "cluster_morphology.parquet"
        return Table(pd.read_parquet(path)) if path.is_file() else None

    @cached_property
    def outliers(self) -> Table | None:
        path = self.path / "outliers.csv"
        return Table(pd.read_csv(path, dtype={"id": str})) if path.is_file() else None

    @cached_property
    def embeddings_file(self) -> Path | None:
        files = embedding_files(self.path)
        return files[0] if files else None

    @cached_property
    def split(self) -> pd.Series | None:
        path = self.path / "split.csv"
        return pd.read_csv(path, dtype={"id": str}).set_index("id")["split"] if path.is_file() else None

    @cached_property
    def class_names(self) -> list[str] | None:
        sup = self.config.get("supervised") or {}
        if sup.get("target") == "class" and sup.get("class_names"):
            return list(sup["class_names"])
        preds = self.predictions
        if preds is None or "prob_0" not in preds.df.columns:
            return None
        k = sum(1 for c in preds.df.columns if c.startswith("prob_"))
        return [str(j) for j in range(k)]

    @cached_property
    def labels(self) -> LabelStore | None:
        return LabelStore(self.path, self.class_names) if self.class_names and self.predictions else None

    @property
    def source_path(self) -> str | None:
        """Where this run's images came from, as recorded in its files (None when it does not say)."""
        cfg = self.config.get("config") or {}
        recorded = cfg.get("data") or (self.config.get("supervised") or {}).get("source")
        if not recorded and self.embeddings_file is not None:
            from galmo.methods.embeddings.store import read_embeddings

            recorded = read_embeddings(self.embeddings_file).meta.get("data")
        if not recorded or Path(recorded).expanduser().exists():
            return recorded
        # a relative path recorded by a run started elsewhere: look beside the run folder
        near = [base / recorded for base in (self.path.parent, self.path) if (base / recorded).exists()]
        return str(near[0]) if near else recorded

    @property
    def kinds(self) -> list[str]:
        have = {"supervised": self.predictions is not None, "groups": self.groups is not None,
                "embeddings": self.embeddings_file is not None, "outliers": self.outliers is not None}
        return [k for k, v in have.items() if v]

    def tables(self) -> list[Table]:
        return [t for t in (self.predictions, self.groups, self.outliers) if t is not None]

    # ------------------------------------------------------------------ predictions: orders and the queue
    def order(self, key: str) -> np.ndarray:
        """Positions of the predictions, least confident first (``confidence``), most uncertain first
        (``entropy``) or smallest top-2 margin first (``margin``); computed once per key."""
        if key not in ORDERS:
            raise GalmoError(f"unknown order {key!r} (one of {', '.join(ORDERS)})")
        with self._lock:
            if key not in self._orders:
                self._orders[key] = np.argsort(self._score(key), kind="stable")
            return self._orders[key]

    def _score(self, key: str) -> np.ndarray:
        df = self.predictions.df
        if key == "confidence":
            return df["confidence"].to_numpy(dtype=float)
        if key == "entropy":
            return -df["entropy"].to_numpy(dtype=float)
        p = df[[c for c in df.columns if c.startswith("prob_")]].to_numpy(dtype=float)
        top2 = np.sort(p, axis=1)[:, -2:] if p.shape[1] > 1 else np.c_[np.zeros(len(p)), p]
        return top2[:, 1] - top2[:, 0]

    @cached_property
    def queue_pool(self) -> np.ndarray:
        """Whether each prediction may be queued: every galaxy but those of the run's test split
        (held out, so that fine-tuning measures on galaxies no label touched)."""
        ids = self.predictions.df["id"]
        if self.split is None:
            return np.ones(len(ids), bool)
        return ~ids.map(self.split).eq("test").to_numpy()

    def undecided(self) -> np.ndarray:
        """Whether each prediction is still in the queue: in the pool and decided by no one yet."""
        if self.labels is None:
            raise NotFound(f"run {self.name} has no class predictions to label", path=self.path)
        open_ = self.queue_pool.copy()
        decided = self.predictions.index.get_indexer(list(self.labels.decided()))
        open_[decided[decided >= 0]] = False
        return open_

    def queue(self, key: str, n: int) -> tuple[list[dict], dict]:
        """(the next ``n`` undecided galaxies in ``key`` order, progress {done, total})."""
        open_ = self.undecided()
        order = self.order(key)
        nxt = order[open_[order]][:n]
        total = int(self.queue_pool.sum())
        return self.items(nxt), {"done": total - int(open_.sum()), "total": total}

    def items(self, positions) -> list[dict]:
        """Prediction rows as the pages show them (see :func:`item`)."""
        return [item(r, self.class_names or []) for r in self.predictions.rows(positions)]

    @property
    def can_predict(self) -> bool:
        """Whether the run holds a supervised model (``galmo train``) that can predict a new image."""
        return bool(self.config.get("supervised")) and (self.path / "model.safetensors").is_file()

    # ------------------------------------------------------------------ groups
    @cached_property
    def group_members(self) -> dict[int, np.ndarray]:
        """group → positions of its members, most agreed first."""
        df = self.groups.df
        agree = -df["agreement"].to_numpy() if "agreement" in df.columns else np.zeros(len(df))
        order = np.lexsort((agree, df["group"].to_numpy()))
        g = df["group"].to_numpy()[order]
        cuts = np.flatnonzero(np.diff(g)) + 1
        return {int(part[0]): idx for part, idx in zip(np.split(g, cuts), np.split(order, cuts))}

    @cached_property
    def group_summary(self) -> list[dict]:
        """One row per group: size, mean agreement, the commonest catalog label and its share."""
        df = self.groups.df
        out = []
        for g, idx in sorted(self.group_members.items()):
            row = {"group": g, "n": len(idx), "agreement": None, "label": None, "purity": None}
            if "agreement" in df.columns:
                row["agreement"] = float(df["agreement"].iloc[idx].mean())
            if "label_name" in df.columns:
                counts = df["label_name"].iloc[idx].value_counts()
                row["label"], row["purity"] = (str(counts.index[0]), float(counts.iloc[0] / len(idx))) if len(
                    counts) else (None, None)
            out.append(row)
        return out


def item(r: dict, names: list[str]) -> dict:
    """One prediction row as the pages show it: id, predicted class, confidence, entropy, top classes."""
    probs = sorted(((names[k] if k < len(names) else str(k), float(r[f"prob_{k}"]))
                    for k in range(len(names)) if f"prob_{k}" in r), key=lambda t: -t[1])
    return {"id": r["id"], "pred_name": r.get("pred_name"), "confidence": float(r["confidence"]),
            "entropy": float(r["entropy"]), "top": probs[:3], "label_name": r.get("label_name")}


def page_of(positions, page: int, size: int) -> tuple[np.ndarray, dict]:
    """(the positions of page ``page`` (1-based), the pager: page, pages, total)."""
    total = len(positions)
    pages = max(1, -(-total // size))
    if page < 1 or page > pages:
        raise NotFound(f"page {page} does not exist (1..{pages})")
    return np.asarray(positions)[(page - 1) * size: page * size], {"page": page, "pages": pages, "total": total}
