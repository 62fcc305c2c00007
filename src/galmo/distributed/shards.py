"""Shards: the pieces of a source that the Ray engine hands to its actors, and their output names.

A source is sharded by what it is (:func:`list_shards`):

* a folder of Galaxy10-style HDF5 files: one shard per file;
* a folder of catalog files (``.parquet``/``.pq``/``.csv`` with ``id`` and ``path`` columns naming
  FITS or PNG/JPEG files): one shard per catalog;
* a folder of sub-folders that are sources (FITS folders, PNG/JPEG folders): one shard per sub-folder;
* one source (a file, a FITS folder, a catalog): its rows, split by its catalog's ``shard`` column
  (FITS folders split by a catalog) or else ``shard_size`` rows at a time.

Every shard has a deterministic output name (``<out>/<name>.parquet``), so a rerun finds the shards
already written. Each shard is opened with :func:`galmo.sources.open_source` (one reader per format).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from galmo.core.errors import GalmoError

SHARD_COLUMN = "shard"
H5_EXTS = (".h5", ".hdf5")
CATALOG_EXTS = (".parquet", ".pq", ".csv")


@dataclass(frozen=True)
class Shard:
    """One piece of a source: the file or folder ``path`` (opened by galmo's reader), all of it or
    its rows ``start..stop-1``, or the rows whose catalog column ``shard`` is ``key``."""

    name: str
    path: str
    start: int = -1
    stop: int = -1
    key: str = ""

    @property
    def whole(self) -> bool:
        """All of one file or folder (opened, and closed, on its own), not rows of a source."""
        return self.start < 0 and not self.key

    @property
    def ref(self) -> str:
        """How messages and rejected.csv name the shard."""
        if self.key:
            return f"{self.path} ({SHARD_COLUMN} {self.key})"
        return f"{self.path} (rows {self.start}..{self.stop - 1})" if self.start >= 0 else self.path

    def output(self, out) -> Path:
        return Path(out) / f"{self.name}.parquet"

    def to_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> "Shard":
        return cls(str(row["name"]), str(row["path"]), int(row["start"]), int(row["stop"]), str(row["key"]))


def list_shards(data, shard_size: int = 10000, on_error: str = "raise") -> tuple[list[Shard], list]:
    """(the shards of ``data``, the items its reader skipped on opening it) as the module says; the
    second is empty unless ``data`` is one source opened with ``on_error='skip'``."""
    path = Path(data).expanduser().resolve()
    if not path.exists():
        raise GalmoError("no such file or directory", path=data)
    if shard_size < 1:
        raise GalmoError(f"--shard-size must be at least 1, got {shard_size}")
    files = shard_files(path) if path.is_dir() else []
    if files:
        return _unique([Shard(_stem(f), str(f)) for f in files], data), []
    return split_source(path, shard_size, on_error)


def shard_files(folder: Path) -> list[Path]:
    """The shards of a folder that is not itself one source: its HDF5 files, else its catalog files,
    else its sub-folders that are sources; [] for a folder that is one source (FITS, PNG/JPEG, GZ2)."""
    from galmo.sources import detect_format

    if _is_source(folder):
        return []
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
    for exts in (H5_EXTS, CATALOG_EXTS):
        found = [p for p in entries if p.is_file() and p.name.lower().endswith(exts)]
        if found:
            return found
    found = [p for p in entries if p.is_dir() and _is_source(p)]
    if not found:
        detect_format(folder)  # raises the reader's message: what it looked for
    return found


def _is_source(path: Path) -> bool:
    from galmo.sources import detect_format

    try:
        detect_format(path)
    except GalmoError:
        return False
    return True


def split_source(path: Path, shard_size: int, on_error: str) -> tuple[list[Shard], list]:
    """The shards of one source: by its catalog's ``shard`` column, else ``shard_size`` rows each."""
    from galmo.sources import open_source

    with open_source(path, on_error=on_error) as src:
        cat, rejected = src.catalog, src.rejected
    stem = _stem(path)
    if SHARD_COLUMN in cat.columns:
        keys = sorted(set(cat[SHARD_COLUMN].astype(str)))
        return _unique([Shard(f"{stem}-{_safe(k)}", str(path), key=k) for k in keys], path), rejected
    n = len(cat)
    return [Shard(f"{stem}-{s // shard_size:05d}", str(path), s, min(n, s + shard_size))
            for s in range(0, n, shard_size)], rejected


def open_shard(shard: Shard, on_error: str, cache: dict | None = None):
    """The source of one shard (row shards: rows of the source, opened once per ``cache``; the items
    it skipped before are forgotten, so that the shard's list holds its own only)."""
    from galmo.sources import open_source

    if shard.whole:
        return open_source(shard.path, on_error=on_error)
    cache = {} if cache is None else cache
    if shard.path not in cache:
        cache[shard.path] = open_source(shard.path, on_error=on_error)
    src = cache[shard.path]
    src.rejected = []
    if shard.key:
        rows = np.flatnonzero(src.catalog[SHARD_COLUMN].astype(str).to_numpy() == shard.key)
    else:
        rows = np.arange(shard.start, min(shard.stop, len(src)))
    return src.take(rows)


def _stem(path: Path) -> str:
    name = Path(path).name
    for ext in H5_EXTS + CATALOG_EXTS + (".fits.gz", ".fits", ".fit"):
        if name.lower().endswith(ext):
            return _safe(name[: -len(ext)])
    return _safe(name)


def _safe(text: str) -> str:
    """A file-name-safe form of a shard key (letters, digits, ``-_.``; anything else becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(text)).lstrip(".") or "_"


def _unique(shards: list[Shard], where) -> list[Shard]:
    seen: dict[str, Shard] = {}
    for s in shards:
        if s.name in seen:
            raise GalmoError(f"two shards would write the same output {s.name}.parquet: {seen[s.name].ref} and "
                             f"{s.ref}; rename one", path=where)
        seen[s.name] = s
    return shards


def written(out) -> list[Path]:
    """The output shards in the folder ``out``, in name order (not the hidden temporary files of shards
    being written)."""
    return sorted(p for p in Path(out).glob("*.parquet") if not p.name.startswith((".", "_")))


def read_shards(out) -> "pd.DataFrame":  # noqa: F821 - pandas is imported inside
    """Every output shard of ``out`` (:func:`written`) as one DataFrame."""
    import pandas as pd

    files = written(out)
    if not files:
        raise GalmoError("no output shards (*.parquet) in this folder", path=out)
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
