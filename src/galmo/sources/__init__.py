"""Image sources: one reader per format, all yielding float32 (C, H, W) images and a catalog.

>>> from galmo.sources import open_source
>>> src = open_source("Galaxy10_DECals.h5")                      # doctest: +SKIP
>>> for rows, images in src.iter_batches(256): ...               # doctest: +SKIP

:func:`open_source` decides the format from what the path is:

========================================================  ===========================================
path                                                      reader
========================================================  ===========================================
``*.h5`` / ``*.hdf5``                                     :mod:`~galmo.sources.galaxy10_h5`
folder with ``training_solutions_rev1.csv``, or a CSV      :mod:`~galmo.sources.gz2`
with GalaxyID + Class1.1..Class11.6
``*.fits`` / ``*.fit`` / ``*.fits.gz`` image, or a folder  :mod:`~galmo.sources.fits`
of them
folder of ``*.png`` / ``*.jpg`` (or of class sub-folders)  :mod:`~galmo.sources.folder`
catalog (``.parquet``/``.csv``/FITS table) with ``id``    FITS or PNG/JPEG reader, one file per row
and ``path`` (or ``file``) columns, or zoobot's           (:mod:`~galmo.sources.zoobot`: vote counts
``id_str`` and ``file_loc``                               of a Galaxy Zoo campaign, totals added)
========================================================  ===========================================

Every reader refuses duplicate ids (``catalog has 2 duplicate ids (e.g. 'x')``) and checks declared
sizes before allocating: a FITS header declaring more data than its file holds, or an image (PNG,
JPEG, HDF5) larger than :data:`~galmo.sources.base.MAX_SIDE` pixels per side, is an error naming the
file. Per-file sources of mixed sizes are brought to one size: the caller's ``size``, else the
median of the files' sizes (never the first file's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from galmo.core.errors import BadInput, GalmoError
from galmo.sources.base import FileSource, Source, label_columns, write_rejected

FORMATS = ("galaxy10", "gz2", "fits", "folder", "catalog")
SUPPORTED = ("a Galaxy10-schema HDF5 file (.h5, .hdf5); a Galaxy Zoo 2 folder with training_solutions_rev1.csv "
             "(or that CSV); a FITS image (.fits, .fit, .fits.gz) or a folder of them; a folder of PNG/JPEG "
             "images; a catalog (.parquet, .csv, FITS table) with 'id' and 'path' (or 'file') columns, or a zoobot / "
             "galaxy-datasets catalog with 'id_str' and 'file_loc'")
PATH_COLUMNS = ("path", "file", "file_loc", "filename")

__all__ = ["open_source", "as_source", "read_rows", "detect_format", "Source", "FileSource", "write_rejected",
           "FORMATS", "SUPPORTED"]


def open_source(path, on_error: str = "raise", labels=None, kind_hint: str | None = None, *,
                size=None, fit: str = "resize", progress: bool = False) -> Source:
    """Open ``path`` as an image source (see the module docstring for the formats).

    ``on_error``: 'raise' (first bad item raises BadInput naming it) or 'skip' (bad items are left
    out and listed in ``src.rejected``). ``labels``: a CSV (``filename`` or ``id``, and ``label``)
    for FITS and PNG/JPEG folders. ``kind_hint``: force a format, one of :data:`FORMATS`.
    ``size``: the one (H, W) (or int) of per-file formats (e.g. a model's input size); default the
    median height and width of the files (rounded; a mixed folder says so once); ``fit``: 'resize'
    or 'crop' for images of another size. ``progress``: show a bar while checking files.
    """
    path = Path(path)
    if on_error not in ("raise", "skip"):
        raise GalmoError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not path.exists():
        raise GalmoError("no such file or directory", path=path)
    fmt = kind_hint or detect_format(path)
    if fmt not in FORMATS:
        raise GalmoError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})", path=path)
    if labels is not None and fmt not in ("fits", "folder"):
        raise GalmoError(f"labels= applies to FITS and PNG/JPEG folders, not to a {fmt} source", path=labels)
    if fmt == "galaxy10":
        from galmo.sources.galaxy10_h5 import Galaxy10Source

        src = Galaxy10Source(path, on_error=on_error)
        if size is not None:
            src._note(f"size={size} ignored: HDF5 images are read at their stored size {src.shape[1:]}")
        return src
    if fmt == "gz2":
        from galmo.sources.gz2 import open_gz2

        return open_gz2(path, on_error=on_error, size=size, fit=fit, progress=progress)
    if fmt == "fits":
        from galmo.sources.fits import open_fits

        return open_fits(path, on_error=on_error, size=size, fit=fit, progress=progress, labels=labels)
    if fmt == "folder":
        from galmo.sources.folder import open_folder

        return open_folder(path, on_error=on_error, size=size, fit=fit, labels=labels, progress=progress)
    return open_catalog_source(path, on_error=on_error, size=size, fit=fit, progress=progress)


def detect_format(path) -> str:
    """Which reader ``path`` needs (one of :data:`FORMATS`); GalmoError listing the formats if none."""
    from galmo.sources.fits import FITS_EXTS, is_fits_name, list_fits
    from galmo.sources.folder import IMAGE_EXTS, is_image_name, list_images
    from galmo.sources.gz2 import SOLUTIONS, is_gz2_csv

    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        if (path / SOLUTIONS).is_file():
            return "gz2"
        if list_fits(path):
            return "fits"
        if list_images(path) or any(d.is_dir() and not d.name.startswith(".") and list_images(d)
                                    for d in path.iterdir()):
            return "folder"
        looked = ", ".join("*" + e for e in FITS_EXTS + IMAGE_EXTS) + ", " + SOLUTIONS
        h5 = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".h5", ".hdf5"))
        hint = f"; did you mean {path / h5[0]}?" if h5 else ""
        raise GalmoError(f"no images found in {path} (looked for {looked}){hint}")
    if name.endswith((".h5", ".hdf5", ".hdf")):
        return "galaxy10"
    if is_fits_name(name):
        return "catalog" if _is_fits_table(path) else "fits"
    if name.endswith(".csv"):
        return "gz2" if is_gz2_csv(path) else "catalog"
    if name.endswith((".parquet", ".pq")):
        return "catalog"
    if is_image_name(name):
        return "folder"
    raise GalmoError(f"unknown input format; supported: {SUPPORTED}", path=path)


def _is_fits_table(path: Path) -> bool:
    """True for a FITS file whose first data-bearing HDU is a table (a catalog), not an image."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            for h in hdul:
                if isinstance(h, (fits.BinTableHDU, fits.TableHDU)):
                    return True
                if h.header.get("NAXIS", 0) >= 2:
                    return False
    except Exception:
        return False  # let the FITS image reader report what is wrong with the file
    return False


def open_catalog_source(path, on_error: str = "raise", size=None, fit: str = "resize",
                        progress: bool = False) -> FileSource:
    """A catalog file whose rows name one image file each (column ``path``, ``file`` or ``filename``;
    relative paths are relative to the catalog's folder). All files must be FITS, or all PNG/JPEG.
    A ``label`` column (integers or class names) becomes the labels."""
    from galmo.core.catalog import read_catalog
    from galmo.sources.fits import FitsSource, is_fits_name
    from galmo.sources.folder import ImageFolderSource, is_image_name

    from galmo.sources.zoobot import add_vote_totals, as_galmo_catalog

    path = Path(path)
    df = add_vote_totals(as_galmo_catalog(read_catalog(path, require_id=False), path))
    col = next((c for c in PATH_COLUMNS if c in df.columns), None)
    if col is None:
        raise GalmoError(f"catalog has no 'path' or 'file' column (nor zoobot's 'file_loc') naming each image "
                         f"file (columns: "
                         f"{', '.join(map(str, df.columns))})", path=path)
    files = [_resolve(p, path.parent) for p in df[col].astype(str)]
    is_fits = np.array([is_fits_name(f) for f in files])
    is_img = np.array([is_image_name(f) for f in files])
    if not (is_fits.all() or is_img.all()):
        odd = files[int(np.flatnonzero(~(is_fits if is_fits.sum() >= is_img.sum() else is_img))[0])]
        raise GalmoError(f"catalog column '{col}' must name only FITS files or only PNG/JPEG files "
                         f"(e.g. {odd})", path=path)
    exists = np.array([Path(f).is_file() for f in files])
    rejected = []
    if not exists.all():
        i = int(np.flatnonzero(~exists)[0])
        if on_error == "raise":
            raise BadInput(f"file not found (catalog {path.name}, id {df['id'].iat[i]})", path=files[i])
        rejected = [(files[j], "file not found") for j in np.flatnonzero(~exists)]
    rows = df[exists].reset_index(drop=True)
    files = [f for f, e in zip(files, exists) if e]
    class_names = None
    if "label" in rows.columns:
        label, name, class_names = label_columns(rows["label"])
        if "label_name" in rows.columns and pd_is_text(rows["label_name"]) and class_names is not None:
            given = dict(zip(label, rows["label_name"].astype(str)))
            class_names = [given.get(k, class_names[k]) for k in range(len(class_names))]
            name = np.where(label >= 0, rows["label_name"].astype(str).to_numpy(object), "")
        rows["label"], rows["label_name"] = label, name
    cls = FitsSource if is_fits.all() else ImageFolderSource
    src = cls(path, files, on_error=on_error, size=size, fit=fit, catalog=rows, progress=progress)
    src.format = f"catalog+{cls.format}"
    src.rejected = rejected + src.rejected
    if class_names is not None:
        src.class_names = class_names
    return src


def pd_is_text(series) -> bool:
    import pandas as pd

    return pd.api.types.is_string_dtype(series.dtype) or series.dtype == object


def _resolve(p: str, root: Path) -> str:
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else root / q)


def as_source(obj, on_error: str = "raise") -> Source:
    """``obj`` itself when it is already a source, else :func:`open_source` of the path."""
    if hasattr(obj, "catalog") and hasattr(obj, "read"):
        return obj
    return open_source(obj, on_error=on_error)


def read_rows(src, rows=None, kind: str = "image", dtype=np.float32, chunk: int = 512,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(row positions, images (N, C, H, W) as ``dtype``) of a source, read in chunks.

    ``rows=None`` reads every readable row (with ``on_error='skip'`` the bad ones are left out and
    the positions say which were read); otherwise exactly ``rows``, in that order.
    """
    if rows is None:
        poss, ims = [], []
        for p, im in src.iter_batches(batch_size=chunk, kind=kind, progress=progress):
            poss.append(np.asarray(p))
            ims.append(im.astype(dtype, copy=False))
        if not ims:
            raise GalmoError("the source has no readable images", path=getattr(src, "path", None))
        return np.concatenate(poss), np.concatenate(ims)
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows),) + tuple(src.shape), dtype=dtype)
    for s in range(0, len(rows), chunk):
        out[s:s + chunk] = src.read(rows[s:s + chunk], kind=kind)
    return rows, out
