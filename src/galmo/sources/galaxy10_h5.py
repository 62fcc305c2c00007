"""Galaxy10 DECaLS HDF5 files (astroNN schema), including galmo's simulations.

Schema (Leung & Bovy, Galaxy10 DECaLS): ``images`` (N, H, W, 3) uint8 RGB composites (256², bands
g, r, z), ``ans`` (N,) class 0..9, ``ra``, ``dec``, ``redshift``, ``pxscale`` (N,). galmo's
simulator adds ``id`` (N,) strings, ``flux`` and ``noiseless`` (N, 3, H, W) float32 nanomaggies,
file attributes ``bands`` and ``class_names``, and ``<stem>.truth.parquet`` beside the file, which
is merged into the catalog on ``id``.

Reading is lazy: rows are read in sorted contiguous slices, a batch at a time, so iterating the
17,736-image Galaxy10 file needs memory for one batch only. Images declared larger than
:data:`~galmo.sources.base.MAX_SIDE` pixels per side are refused when the file is opened; rows
that cannot be read (a corrupt or truncated chunk) raise a BadInput naming the rows and the
dataset (``cannot read rows 3..3 of dataset 'images' (...)``), or are rejected with
``on_error='skip'``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import BadInput, GalmoError
from galmo.core.schema import GALAXY10_CLASSES
from galmo.sources.base import MAX_SIDE, Source

DEFAULT_BANDS = ("g", "r", "z")
KNOWN_COLUMNS = ("ans", "ra", "dec", "redshift", "pxscale", "id")
EXTRA_KINDS = ("flux", "noiseless")
_BLOCK = 64  # rows per h5py read inside one contiguous run (bounds the uint8 temporary)


class Galaxy10Source(Source):
    """A Galaxy10-schema HDF5 file. Kinds: 'image' (the uint8 composites / 255, channels in band
    order g, r, z, i.e. the RGB planes reversed), plus 'flux'/'noiseless' when the file has them."""

    format = "galaxy10_h5"

    def __init__(self, path, on_error: str = "raise"):
        super().__init__(path, on_error)
        self._f = None
        f = self._file()
        images = self._dataset(f, "images")
        n, h, w, c = self._check_images(images)
        self._images_float = images.dtype.kind == "f"
        self.bands = self._bands(f, c)
        self.class_names = self._class_names(f)
        self._shape = (c, h, w)
        self.kinds = ("image",) + tuple(k for k in EXTRA_KINDS if self._check_extra(f, k, n))
        self.catalog = self._build_catalog(f, n)
        self._merge_truth()

    # ------------------------------------------------------------------ file handling
    def _file(self):
        """The open h5py.File (opened on first use, also after unpickling in a worker)."""
        if self._f is None:
            import h5py

            if not self.path.is_file():
                raise GalmoError("no such file", path=self.path)
            try:
                self._f = h5py.File(self.path, "r", rdcc_nbytes=16 * 2**20)
            except OSError as e:
                msg = str(e)
                why = ("the file is truncated" if "truncated" in msg else
                       "not an HDF5 file" if "signature" in msg else "cannot open as HDF5")
                raise GalmoError(f"{why} ({msg})", path=self.path) from e
        return self._f

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_f"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ validation
    def _dataset(self, f, key: str):
        import h5py

        if key not in f:
            found = ", ".join(sorted(f.keys())) or "nothing"
            raise GalmoError(f"no dataset '{key}' (found: {found}); a Galaxy10 file needs 'images' "
                             f"(N, H, W, 3) uint8 and 'ans' (N,)", path=self.path)
        ds = f[key]
        if not isinstance(ds, h5py.Dataset):
            raise GalmoError(f"'{key}' is a group, expected a dataset", path=self.path)
        return ds

    def _check_images(self, ds) -> tuple[int, int, int, int]:
        if ds.ndim != 4 or ds.shape[-1] not in (1, 3) or min(ds.shape) < 1:
            raise GalmoError(f"dataset 'images' has shape {ds.shape}, expected (N, H, W, 3)", path=self.path)
        if ds.dtype != np.uint8 and ds.dtype.kind != "f":
            raise GalmoError(f"dataset 'images' has dtype {ds.dtype}, expected uint8", path=self.path)
        if max(ds.shape[1:3]) > MAX_SIDE:
            raise GalmoError(f"dataset 'images' declares {ds.shape[1]}×{ds.shape[2]}-pixel images "
                             f"({ds.shape[1] * ds.shape[2] * ds.shape[3] * 4 / 1e9:.1f} GB each as float32); "
                             f"galmo reads cutouts of at most {MAX_SIDE} px per side", path=self.path)
        return ds.shape

    def _check_extra(self, f, key: str, n: int) -> bool:
        if key not in f:
            return False
        ds = self._dataset(f, key)
        c, h, w = self._shape
        if ds.shape != (n, c, h, w):
            raise GalmoError(f"dataset '{key}' has shape {ds.shape}, expected {(n, c, h, w)} (N, C, H, W) "
                             f"like 'images'", path=self.path)
        if ds.dtype.kind != "f":
            raise GalmoError(f"dataset '{key}' has dtype {ds.dtype}, expected float", path=self.path)
        return True

    def _bands(self, f, c: int) -> tuple[str, ...]:
        raw = f.attrs.get("bands")
        bands = _str_list(raw) if raw is not None else (list(DEFAULT_BANDS) if c == 3 else ["grey"])
        if len(bands) == 1 and c > 1 and len(bands[0]) == c:
            bands = list(bands[0])  # 'grz' → g, r, z
        if len(bands) != c:
            raise GalmoError(f"attribute 'bands' lists {len(bands)} bands ({bands}) but 'images' has {c} "
                             f"channels", path=self.path)
        return tuple(bands)

    def _class_names(self, f) -> list[str]:
        raw = f.attrs.get("class_names")
        return _str_list(raw) if raw is not None else list(GALAXY10_CLASSES)

    def _column(self, f, key: str, n: int) -> np.ndarray:
        ds = self._dataset(f, key)
        if ds.shape != (n,):
            raise GalmoError(f"dataset '{key}' has shape {ds.shape}, expected ({n},) like 'images'",
                             path=self.path)
        try:
            return ds.asstr()[()] if ds.dtype.kind in "SOU" else ds[()]
        except OSError as e:
            raise GalmoError(f"cannot read dataset '{key}' ({e})", path=self.path) from e

    # ------------------------------------------------------------------ catalog
    def _build_catalog(self, f, n: int) -> pd.DataFrame:
        if "id" in f:
            ids = pd.Series(self._column(f, "id", n)).astype(str)
            dup = ids[ids.duplicated()]
            if len(dup):
                raise GalmoError(f"dataset 'id' has {len(dup)} duplicate ids (e.g. {dup.iloc[0]!r})",
                                 path=self.path)
        else:
            ids = pd.Series([f"g10_{i:06d}" for i in range(n)])
        cat = pd.DataFrame({"id": ids.to_numpy(object),
                            "ref": [f"{self.path.name}#{i}" for i in range(n)]})
        if "ans" in f:
            ans = self._column(f, "ans", n).astype(np.float64)
            bad = ~np.isfinite(ans) | (np.mod(ans, 1) != 0) | (ans < -1) | (ans >= len(self.class_names))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise GalmoError(f"dataset 'ans' has {int(bad.sum())} values outside -1..{len(self.class_names) - 1} "
                                 f"(e.g. row {i}: {ans[i]})", path=self.path)
            label = ans.astype(np.int64)
        else:
            label = np.full(n, -1, np.int64)
            self._note("no 'ans' dataset: the galaxies are unlabelled", warn=False)
        cat["label"] = label
        names = np.asarray(self.class_names, dtype=object)
        cat["label_name"] = np.where(label >= 0, names[np.clip(label, 0, None)], "")
        for key in sorted(f.keys()):
            ds = f[key]
            if key in ("ans", "id") or getattr(ds, "ndim", 0) != 1:
                continue
            if ds.shape != (n,):
                if key in KNOWN_COLUMNS:
                    self._column(f, key, n)  # raises with the shape message
                continue
            cat[key] = self._column(f, key, n)
        return cat

    def _merge_truth(self) -> None:
        truth = self.path.with_name(self.path.name.rsplit(".", 1)[0] + ".truth.parquet")
        if not truth.is_file():
            return
        from galmo.core.catalog import merge_on_id, read_catalog

        t = read_catalog(truth)
        missing = int((~self.catalog["id"].isin(t["id"])).sum())
        if missing:
            self._note(f"{missing} ids have no row in {truth.name}")
        if "label" in t.columns:
            t = t.drop(columns=["label"])
        self.catalog = merge_on_id(self.catalog, t, how="left", overlap="left")

    # ------------------------------------------------------------------ reading
    def _read_rows(self, pos, kind, skip):
        uniq, inverse = np.unique(pos, return_inverse=True)
        out = np.empty((len(uniq), *self.shape), np.float32)
        good = np.ones(len(uniq), bool)
        for k, (a, b) in zip(*_runs(uniq)):
            try:
                self._read_run(kind, a, b, out[k:k + b - a])
            except BadInput:
                if not skip:
                    raise
                good[k:k + b - a] = self._read_rowwise(kind, a, b, out[k:k + b - a])
        if np.array_equal(uniq, pos) and good.all():
            return pos, out  # the common case (iter_batches): no reordering copy
        keep = good[inverse]
        return pos[keep], out[inverse[keep]]

    def _read_run(self, kind: str, a: int, b: int, out: np.ndarray) -> None:
        """Rows a..b-1 of ``kind`` into ``out`` (float32 (b-a, C, H, W)), ``_BLOCK`` rows at a time."""
        key = "images" if kind == "image" else kind
        ds = self._file()[key]
        for s in range(a, b, _BLOCK):
            e = min(b, s + _BLOCK)
            try:
                raw = ds[s:e]
            except (OSError, ValueError, KeyError) as err:
                raise BadInput(f"cannot read rows {s}..{e - 1} of dataset '{key}' ({err})", path=self.path) from err
            dst = out[s - a:e - a]
            if kind != "image":
                dst[...] = raw
            else:
                c = raw.shape[-1]
                scale = np.float32(1.0) if self._images_float else np.float32(1 / 255)
                for ch in range(c):  # RGB planes → band order (bluest first)
                    np.multiply(raw[..., c - 1 - ch], scale, out=dst[:, ch], casting="unsafe")

    def _read_rowwise(self, kind: str, a: int, b: int, out: np.ndarray) -> np.ndarray:
        """Fallback in skip mode: row by row, rejecting unreadable rows. Returns the good mask."""
        good = np.ones(b - a, bool)
        for i in range(a, b):
            try:
                self._read_run(kind, i, i + 1, out[i - a:i - a + 1])
            except BadInput as e:
                good[i - a] = False
                self._reject(self.catalog["ref"].iat[i], str(e.args[0]).removeprefix(f"{self.path}: "))
        return good


def _runs(sorted_unique: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Split sorted unique positions into contiguous runs: (start index in the array, [(a, b)])."""
    if len(sorted_unique) == 0:
        return np.zeros(0, np.int64), []
    breaks = np.flatnonzero(np.diff(sorted_unique) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(sorted_unique)]])
    return starts, [(int(sorted_unique[s]), int(sorted_unique[e - 1]) + 1) for s, e in zip(starts, stops)]


def _str_list(raw) -> list[str]:
    """An HDF5 attribute holding names: a JSON list, a comma-separated string or an array of strings."""
    if isinstance(raw, bytes):
        raw = raw.decode()
    if isinstance(raw, str):
        s = raw.strip()
        if s.startswith("["):
            try:
                return [str(x) for x in json.loads(s)]
            except json.JSONDecodeError:
                pass
        return [p for p in re.split(r"[,\s]+", s) if p]
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.atleast_1d(raw)]


def looks_like_galaxy10(path: Path) -> bool:
    return Path(path).suffix.lower() in (".h5", ".hdf5", ".hdf")


def write_galaxy10(path, images: np.ndarray, ans, ids, columns: dict | None = None, attrs: dict | None = None) -> Path:
    """Write a Galaxy10-schema HDF5 (what :class:`Galaxy10Source` reads), atomically: ``images`` (N, H, W, 3)
    uint8 RGB, ``ans`` (N,) labels, ``ids`` (N,) str or bytes, ``columns`` per-galaxy datasets (N,) such as
    vote fractions or a seed, ``attrs`` file attributes (``bands``, ``class_names``, ...)."""
    import h5py

    from galmo.core.io import atomic_path

    ids = np.asarray([i if isinstance(i, bytes) else str(i).encode() for i in ids])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("images", data=np.ascontiguousarray(images))
        f["ans"], f["id"] = np.asarray(ans), ids
        for k, v in (columns or {}).items():
            f[k] = np.asarray(v)
        f.attrs.update(attrs or {})
    return Path(path)
