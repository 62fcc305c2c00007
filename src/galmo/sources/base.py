"""What every image source shares: the :class:`Source` interface, per-file reading, size fitting.

Conventions (all readers):

* images come out as float32 ``(B, C, H, W)``; channel ``k`` is band ``src.bands[k]`` and bands
  are in wavelength order, bluest first (the order :func:`galmo.core.transforms.composite` expects).
  RGB files (JPEG/PNG composites) are therefore read as (B, G, R) planes.
* kind ``'image'`` is display-normalised to [0, 1]; other kinds (``'flux'``, ``'noiseless'``) are
  physical values where a source has them; ``src.kinds`` lists what exists.
* ``src.catalog`` rows and the ``idx`` of :meth:`Source.read` are row *positions* (0..len-1).
* ``on_error='raise'``: the first bad item raises :class:`~galmo.core.errors.BadInput` naming its file.
  ``on_error='skip'``: bad items found when the source is opened are left out of the catalog; items
  that fail later, while decoding, are left out of :meth:`Source.iter_batches`; both are listed in
  ``src.rejected`` as ``(ref, reason)``. :meth:`Source.read` always returns exactly the rows asked
  for, so it raises for an undecodable item in either mode.
"""

from __future__ import annotations

import abc
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from galmo.core.errors import BadInput, GalmoError

ON_ERROR = ("raise", "skip")
MAX_SIDE = 20_000  # px per side of one image: larger is a mosaic or a corrupt header, not a cutout


def human_bytes(n: float) -> str:
    """``40000000000`` → ``'40.0 GB'`` (decimal units), for messages about declared sizes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


class Source(abc.ABC):
    """A set of galaxy images with a catalog (see the module docstring for the conventions).

    Subclasses set ``catalog``, ``bands``, ``class_names``, ``kinds``, ``_shape`` in ``__init__`` and
    implement :meth:`_read_rows`.
    """

    format: str = "?"

    def __init__(self, path, on_error: str = "raise"):
        if on_error not in ON_ERROR:
            raise GalmoError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.path = Path(path)
        self.on_error = on_error
        self._rejected: dict[str, str] = {}  # ref → reason, in the order found
        self.notes: list[str] = []  # what the reader did to the data (resized, NaNs filled, ...)
        self.catalog: pd.DataFrame = pd.DataFrame({"id": []})
        self.bands: tuple[str, ...] = ()
        self.class_names: list[str] | None = None
        self.kinds: tuple[str, ...] = ("image",)
        self._shape: tuple[int, int, int] = (0, 0, 0)

    # ------------------------------------------------------------------ public interface
    @property
    def rejected(self) -> list[tuple[str, str]]:
        """The bad items as ``(ref, reason)``, each listed once (the first reason found), in the
        order found, however many times the source is read."""
        return list(self._rejected.items())

    @rejected.setter
    def rejected(self, items) -> None:
        self._rejected = {}
        for ref, reason in items:
            self._reject(ref, reason)

    def __len__(self) -> int:
        return len(self.catalog)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image this source yields."""
        return self._shape

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} n={len(self)} shape={self.shape} bands={self.bands}>"

    def read(self, idx, kind: str = "image") -> np.ndarray:
        """float32 (B, C, H, W) images of catalog row positions ``idx`` (int, slice, sequence).

        Always 4-D (an int gives B=1) and in the order asked for; duplicates allowed.
        """
        pos = self._positions(idx)
        self._check_kind(kind)
        if len(pos) == 0:
            return np.zeros((0, *self.shape), np.float32)
        _, images = self._read_rows(pos, kind, skip=False)
        return images

    def take(self, rows) -> "Source":
        """The catalog rows ``rows`` (positions) as a source of their own; nothing is read."""
        return SubsetSource(self, rows)

    def read_ok(self, idx, kind: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """(the row positions that could be read, their float32 images) of ``idx``: like :meth:`read`,
        except that with ``on_error='skip'`` a row that fails to decode is left out and added to
        ``rejected`` instead of stopping."""
        pos = self._positions(idx)
        self._check_kind(kind)
        if len(pos) == 0:
            return pos, np.zeros((0, *self.shape), np.float32)
        return self._read_rows(pos, kind, skip=self.on_error == "skip")

    def iter_batches(self, batch_size: int = 256, kind: str = "image",
                     progress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_positions, images)`` over the whole catalog, in order, ``batch_size`` at a time.

        With ``on_error='skip'`` an item that fails to decode is left out of its batch (so
        ``row_positions`` says which rows the images belong to) and added to ``rejected``.
        """
        if batch_size < 1:
            raise GalmoError(f"batch_size must be >= 1, got {batch_size}")
        self._check_kind(kind)
        from tqdm.auto import tqdm

        n = len(self)
        with tqdm(total=n, disable=not progress, unit="img", desc=f"reading {self.path.name}",
                  leave=False) as bar:
            for start in range(0, n, batch_size):
                pos = np.arange(start, min(n, start + batch_size))
                ok, images = self._read_rows(pos, kind, skip=self.on_error == "skip")
                bar.update(len(pos))
                if len(ok):
                    yield ok, images
                del ok, images  # hold no batch while the next one is read

    def close(self) -> None:
        """Release open files (a no-op for most sources)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ for subclasses
    @abc.abstractmethod
    def _read_rows(self, pos: np.ndarray, kind: str, skip: bool) -> tuple[np.ndarray, np.ndarray]:
        """Images for sorted-or-not positions ``pos``; returns (positions read, images).

        With ``skip`` False every position must be returned or BadInput raised; with ``skip``
        True failing items are recorded with :meth:`_reject` and left out.
        """

    def _reject(self, ref, reason: str) -> None:
        self._rejected.setdefault(str(ref), str(reason))

    def _note(self, message: str, warn: bool = True) -> None:
        """Remember (and warn about) something the reader did to the data."""
        if message not in self.notes:
            self.notes.append(message)
            if warn:
                warnings.warn(f"{self.path}: {message}", stacklevel=_caller_level())

    def _positions(self, idx) -> np.ndarray:
        n = len(self)
        if isinstance(idx, slice):
            return np.arange(n)[idx]
        pos = np.atleast_1d(np.asarray(idx))
        if pos.dtype == bool:
            if pos.shape != (n,):
                raise IndexError(f"boolean index of length {len(pos)} for a source of {n} rows")
            return np.flatnonzero(pos)
        if pos.size and pos.dtype.kind not in "iu":
            raise IndexError(f"row positions must be integers, got dtype {pos.dtype}")
        pos = pos.astype(np.int64).ravel()
        pos = np.where(pos < 0, pos + n, pos)
        if pos.size and (pos.min() < 0 or pos.max() >= n):
            raise IndexError(f"row position out of range for a source of {n} rows")
        return pos

    def _check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise GalmoError(f"this {self.format} source has no kind {kind!r} (available: "
                             f"{', '.join(self.kinds)})", path=self.path)


class SubsetSource(Source):
    """Rows ``rows`` of another source as a source of its own (:meth:`Source.take`): same files, same
    on_error, nothing read until asked; the bad items it meets are listed in both."""

    def __init__(self, parent: Source, rows):
        super().__init__(parent.path, on_error=parent.on_error)
        self.format, self._parent = parent.format, parent
        self._rows = parent._positions(rows)
        self.catalog = parent.catalog.iloc[self._rows].reset_index(drop=True)
        self.bands, self.class_names, self.kinds = parent.bands, parent.class_names, parent.kinds
        self._shape, self.notes = parent.shape, parent.notes

    def _read_rows(self, pos, kind, skip):
        pos = np.asarray(pos, dtype=np.int64)
        read, images = self._parent._read_rows(self._rows[pos], kind, skip)
        for ref, reason in self._parent.rejected:
            self._reject(ref, reason)
        return pos[np.isin(self._rows[pos], read)], images


# ===================================================================== sources of one file per image
class FileSource(Source):
    """A source whose images are one file each (FITS cutouts, PNG/JPEG, GZ2 jpgs).

    Subclasses implement :meth:`_load(path, kind) -> (C, H, W) float32` (any size; raise BadInput
    for a bad file). Images of another size than :attr:`shape` are fitted with :func:`fit_to_size`
    (``fit='resize'`` or ``'crop'``). Decoding runs on a few threads.
    """

    workers: int = min(4, os.cpu_count() or 1)
    fit: str = "resize"
    crop_frac: float = 1.0

    def framed(self, size, fit: str = "resize", crop_frac: float = 1.0) -> "FileSource":
        """This source with every file read straight to ``size`` = (H, W) by the one resampling rule
        (:mod:`galmo.core.resample`: ``fit``, ``crop_frac``), one resampling from the file's own
        pixels (the verbs use it for a model's input); same catalog, same list of bad items."""
        import copy

        new = copy.copy(self)
        new._shape, new.fit, new.crop_frac = (self.shape[0], int(size[0]), int(size[1])), fit, float(crop_frac)
        return new

    def _read_rows(self, pos, kind, skip):
        refs = self.catalog["ref"].to_numpy()
        h, w = self.shape[1:]

        def one(p):
            try:
                img = self._load(refs[p], kind)
                if img.shape[0] != self.shape[0]:
                    raise BadInput(f"has {img.shape[0]} bands, expected {self.shape[0]} "
                                   f"({', '.join(self.bands)})", path=refs[p])
                return fit_to_size(img, (h, w), self.fit, self.crop_frac), None
            except BadInput as e:
                if not skip:
                    raise
                return None, str(e.args[0]).removeprefix(f"{refs[p]}: ")

        results = thread_map(one, pos, self.workers)
        ok = [k for k, (img, _) in enumerate(results) if img is not None]
        for k, (img, reason) in enumerate(results):
            if img is None:
                self._reject(refs[pos[k]], reason)
        images = np.stack([results[k][0] for k in ok]) if ok else np.zeros((0, *self.shape), np.float32)
        return pos[ok], images.astype(np.float32, copy=False)

    def _set_catalog(self, base: pd.DataFrame, keep: list, files: Sequence, columns: dict) -> pd.DataFrame:
        """The catalog of the readable files ``keep``: ``id``, ``ref`` first, ``label`` -1 when unknown,
        plus per-file ``columns`` (name → list over ``keep``)."""
        cat = base.iloc[keep].reset_index(drop=True).copy()
        cat["ref"] = [files[i] for i in keep]
        if "label" not in cat.columns:
            cat["label"] = np.int64(-1)
            cat["label_name"] = ""
        for name, values in columns.items():
            cat[name] = values
        self.catalog = cat[["id", "ref"] + [k for k in cat.columns if k not in ("id", "ref")]]
        return self.catalog

    @abc.abstractmethod
    def _load(self, path: str, kind: str) -> np.ndarray:
        """One file → float32 (C, H, W) of kind ``kind`` at its own size."""


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside ``galmo.sources``."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("galmo.sources"):
        frame, level = frame.f_back, level + 1
    return level


def thread_map(fn: Callable, items: Sequence, workers: int) -> list:
    """``[fn(x) for x in items]`` on up to ``workers`` threads (in order; first exception raised)."""
    if workers <= 1 or len(items) < 4:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def fit_to_size(img: np.ndarray, size: tuple[int, int], fit: str = "resize", crop_frac: float = 1.0) -> np.ndarray:
    """Bring a (C, H, W) float32 image to ``size`` = (H, W) by THE resampling rule of every verb
    (:func:`galmo.core.resample.frame_images`): ``'resize'`` centre-crops to the target aspect ratio
    and resamples (antialiased bilinear: local averages, so surface brightness is kept, not total
    flux); ``'crop'`` keeps the pixel scale (centre-crop larger images, zero-pad smaller ones);
    ``crop_frac`` < 1 keeps the central fraction of each side first."""
    from galmo.core.resample import frame_images

    if fit not in ("resize", "crop"):
        raise ValueError(f"fit must be 'resize' or 'crop', got {fit!r}")
    return frame_images(img, size, fit, crop_frac)


def parse_size(size) -> tuple[int, int] | None:
    """``None``, an int, or (H, W) → (H, W) or None."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise GalmoError(f"size must be positive, got {size}")
    return h, w


def common_size(heights, widths, size=None, fit: str = "resize") -> tuple[tuple[int, int], str | None]:
    """The one (H, W) of a per-file source and what to say about it: ``size`` when the caller gives
    one, else the median height and width of the files (rounded half up), never the first file's.

    Returns ``((H, W), note)``; the note (None when every file already has that size) says how many
    images are fitted and how (``fit``)."""
    hs, ws = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
    given = parse_size(size)
    target = given or (int(np.floor(np.median(hs) + 0.5)), int(np.floor(np.median(ws) + 0.5)))
    other = int(((hs != target[0]) | (ws != target[1])).sum())
    if not other:
        return target, None
    how, detail = (("resized", "centre-crop to the aspect ratio, then bilinear") if fit == "resize" else
                   ("centre-cropped / zero-padded", "pixel scale kept"))
    if given:
        return target, f"{other} of {len(hs)} images are not {target[0]}x{target[1]} pixels: {how} " \
                       f"({detail}) to {target[0]}x{target[1]}"
    span = (f"{hs.min()}–{hs.max()} px" if (hs == ws).all() else
            f"{hs.min()}–{hs.max()} x {ws.min()}–{ws.max()} px")
    px = f"{target[0]} px" if target[0] == target[1] else f"{target[0]}x{target[1]} px"
    return target, f"mixed sizes {span}: {how} to the median {px} ({other} of {len(hs)} images; {detail})"


def label_columns(labels: Iterable, n: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Turn raw label values (ints, strings, or missing) into (label int64, label_name, class_names).

    Integers are kept (class names '0'..'max'); strings become indices into their sorted unique
    values; missing values (None, NaN, '') become -1 / ''.
    """
    s = pd.Series(list(labels), dtype=object)
    missing = s.map(lambda v: v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))
                    or (isinstance(v, str) and not v.strip()))
    present = s[~missing]
    label = np.full(len(s), -1, np.int64)
    name = np.full(len(s), "", dtype=object)
    if present.empty:
        return label, name, None
    as_num = pd.to_numeric(present, errors="coerce")
    if as_num.notna().all() and np.all(np.mod(as_num.to_numpy(float), 1) == 0):
        ints = as_num.to_numpy(float).astype(np.int64)
        if ints.min() < -1:
            raise GalmoError(f"integer labels must be >= -1, found {ints.min()}")
        label[~missing.to_numpy()] = ints
        classes = [str(k) for k in range(max(0, ints.max() + 1))]
        name[label >= 0] = [classes[k] for k in label[label >= 0]]
        return label, name, classes or None
    strings = present.map(lambda v: str(v).strip())
    classes = sorted(strings.unique())
    lookup = {c: k for k, c in enumerate(classes)}
    label[~missing.to_numpy()] = strings.map(lookup).to_numpy(np.int64)
    name[~missing.to_numpy()] = strings.to_numpy(object)
    return label, name, classes


def rejected_path(out, kind: str = "dir") -> Path:
    """Where the list of skipped items of an output goes: ``out/rejected.csv`` for a run folder
    (``kind='dir'``), ``<stem>.rejected.csv`` beside an output file (``'file'``: ``preds.parquet``
    → ``preds.rejected.csv``), so two outputs in one folder never share it."""
    out = Path(out)
    if kind == "dir":
        return out / "rejected.csv"
    if kind == "file":
        return out.with_name(f"{out.stem}.rejected.csv")
    raise ValueError(f"kind must be 'dir' or 'file', got {kind!r}")


def write_rejected(src: Source, out, kind: str = "dir") -> Path:
    """Write ``src.rejected`` (columns ``ref``, ``reason``) atomically at :func:`rejected_path`
    ``(out, kind)``; header only if none. Verbs call :func:`report_rejected`."""
    from galmo.core.io import atomic_path

    path = rejected_path(out, kind)
    df = pd.DataFrame(src.rejected, columns=["ref", "reason"])
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def report_rejected(src: Source, out, kind: str = "dir", log=print) -> Path | None:
    """THE rule for skipped items, for every verb that writes ``out`` (a run folder or a file): when
    something was skipped, write :func:`rejected_path` and say so through ``log`` with the count;
    when nothing was, remove a list left there by an earlier run of the same output. Returns the
    list's path, or None."""
    path = rejected_path(out, kind)
    items = list(getattr(src, "rejected", None) or [])
    if not items:
        if path.is_file():
            path.unlink()
        return None
    write_rejected(src, out, kind)
    log(f"skipped {len(items)} bad item{'s' if len(items) != 1 else ''}: see {path}")
    return path


def apply_label_csv(src: Source, labels) -> None:
    """Attach labels from a CSV (columns ``filename`` or ``id``, and ``label``) to ``src.catalog``.

    ``filename`` matches the image's file name or its path relative to the source folder; ``id``
    matches the catalog id. Other columns of the CSV are added to the catalog. Images without a row
    get label -1; rows without an image are counted in ``src.notes``.
    """
    path = Path(labels)
    df, key, keys = _read_label_csv(path)
    lookup = _row_lookup(src, key)
    pos = keys.map(lambda k: lookup.get(k, lookup.get(k.replace("\\", "/"), -1))).to_numpy(np.int64)
    matched = pos >= 0
    if not matched.any():
        raise GalmoError(f"no row of the label file matches an image (by {key}; e.g. {keys.iloc[0]!r})", path=path)
    if (~matched).any():
        src._note(f"{int((~matched).sum())} rows of {path.name} match no image (e.g. {keys[~matched].iloc[0]!r})")
    n = len(src.catalog)
    all_labels, all_names, classes = label_columns(df["label"])  # classes from every row of the CSV
    label = np.full(n, -1, np.int64)
    name = np.full(n, "", dtype=object)
    label[pos[matched]] = all_labels[matched]
    name[pos[matched]] = all_names[matched]
    cat = src.catalog.copy()
    cat["label"], cat["label_name"] = label, name
    for col in df.columns:
        if col in (key, "label", "id", "ref"):
            continue
        values = pd.Series(np.nan, index=range(n), dtype=object)
        values.iloc[pos[matched]] = df[col].to_numpy(object)[matched]
        cat[col] = _maybe_numeric(values)
    src.catalog = cat
    src.class_names = classes
    unlabelled = int((label < 0).sum())
    if unlabelled:
        src._note(f"{unlabelled} images have no label in {path.name} (label -1)", warn=False)


def _read_label_csv(path: Path) -> tuple[pd.DataFrame, str, pd.Series]:
    """The label CSV, its key column ("filename" or "id") and the stripped keys; GalmoError when unusable."""
    if not path.is_file():
        raise GalmoError("no such label file", path=path)
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise GalmoError(f"cannot read label CSV ({type(e).__name__}: {e})", path=path) from e
    cols = ", ".join(map(str, df.columns)) or "none"
    if "label" not in df.columns:
        raise GalmoError(f"label file has no 'label' column (columns: {cols}); expected 'filename' or 'id', "
                         f"and 'label'", path=path)
    key = "filename" if "filename" in df.columns else "id" if "id" in df.columns else None
    if key is None:
        raise GalmoError(f"label file has neither a 'filename' nor an 'id' column (columns: {cols})", path=path)
    keys = df[key].astype(str).str.strip()
    dup = keys[keys.duplicated()]
    if len(dup):
        raise GalmoError(f"label file lists {dup.iloc[0]!r} more than once ({len(dup)} duplicates)", path=path)
    return df, key, keys


def _row_lookup(src: Source, key: str) -> dict[str, int]:
    if key == "id":
        return {str(v): i for i, v in enumerate(src.catalog["id"])}
    lookup: dict[str, int] = {}
    root = src.path if src.path.is_dir() else src.path.parent
    for i, ref in enumerate(src.catalog["ref"]):
        p = Path(ref)
        lookup.setdefault(p.name, i)
        try:
            lookup[p.relative_to(root).as_posix()] = i
        except ValueError:
            pass
    return lookup


def _maybe_numeric(values: pd.Series) -> pd.Series:
    """``values`` as numbers when every present value is one, else unchanged."""
    num = pd.to_numeric(values, errors="coerce")
    return num if num.notna().sum() == values.notna().sum() else values
