"""The catalog: one row per galaxy, keyed by a unique string ``id``.

Every galmo command reads a catalog (or a source that yields one) and writes a catalog with the
same ``id`` column plus new columns. A catalog is a plain :class:`pandas.DataFrame` with

* ``id``    — unique string identifier, carried unchanged through every command;
* ``ref``   — where the image lives (a file path, or ``file.h5#row``);
* ``label`` / ``label_name`` — integer class (-1 = unknown) and its name, when known;
* any other columns (coordinates, truth parameters, vote fractions, predictions, ...).

Parquet (``.parquet``/``.pq``), CSV (``.csv``) and FITS tables (``.fits``/``.fit``/``.fits.gz``)
are read and written, chosen by the file extension. Writes are atomic (temporary name + rename).

>>> df = read_catalog("sample.parquet")              # doctest: +SKIP
>>> write_catalog(df, "runs/x/catalog.fits")         # doctest: +SKIP
>>> Catalog.read("runs/x/catalog.fits")              # the same functions, as a namespace
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import GalmoError
from galmo.core.io import atomic_path

ID = "id"
_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".fits": "fits",
    ".fit": "fits",
    ".fits.gz": "fits",
    ".fit.gz": "fits",
}
SUPPORTED = ", ".join(_FORMATS)


def catalog_format(path: str | os.PathLike) -> str:
    """'parquet', 'csv' or 'fits' from the file name; GalmoError for anything else."""
    name = Path(path).name.lower()
    for ext in sorted(_FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return _FORMATS[ext]
    raise GalmoError(f"unknown catalog format (supported extensions: {SUPPORTED})", path=path)


# ------------------------------------------------------------------------------------------- read
def read_catalog(path: str | os.PathLike, require_id: bool = True) -> pd.DataFrame:
    """Read a Parquet/CSV/FITS catalog into a DataFrame with a unique string ``id`` column.

    Raises GalmoError naming the file when it is missing, unreadable, has no ``id`` column (with
    ``require_id``) or has duplicate ids. Integer ids (e.g. a Kaggle ``GalaxyID``) become strings.
    """
    path = Path(path)
    fmt = catalog_format(path)
    if not path.is_file():
        raise GalmoError("no such catalog file", path=path)
    try:
        if fmt == "parquet":
            df = pd.read_parquet(path)
        elif fmt == "csv":
            df = pd.read_csv(path, dtype={ID: str}, keep_default_na=True)
        else:
            df = _read_fits_table(path)
    except GalmoError:
        raise
    except Exception as e:  # pandas/pyarrow/astropy raise many different types for a bad file
        raise GalmoError(f"cannot read {fmt} catalog ({type(e).__name__}: {e})", path=path) from e
    if require_id:
        df = validate_catalog(df, path)
    return df


def _read_fits_table(path: Path) -> pd.DataFrame:
    """The first table HDU as a DataFrame (:meth:`astropy.table.Table.to_pandas`: native byte
    order, masked integers as nullable ``Int64``, masked floats as NaN); vector columns become
    one array per row, byte strings text."""
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(path, memmap=False) as hdul:
        hdu = next((h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))), None)
        if hdu is None:
            raise GalmoError("FITS file has no table extension (is it an image? open it with "
                             "galmo.sources.open_source)", path=path)
        table = Table.read(hdu)
    table.meta.clear()
    vectors = [c for c in table.colnames if table[c].ndim > 1]
    df = table[[c for c in table.colnames if c not in vectors]].to_pandas(index=False)
    for name in vectors:
        df[name] = list(np.asarray(table[name]))  # one array per row
    for name in df.columns:
        if df[name].dtype == object and any(isinstance(v, bytes) for v in df[name]):
            df[name] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in df[name]]
    return df[table.colnames]


def validate_catalog(df: pd.DataFrame, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Check the ``id`` column exists and is unique; return ``df`` with ``id`` as str.

    ``path`` is only used in messages.
    """
    where = path if path is not None else "catalog"
    if ID not in df.columns:
        shown = ", ".join(map(str, list(df.columns)[:12])) + (" ..." if len(df.columns) > 12 else "")
        raise GalmoError(f"catalog has no '{ID}' column (columns: {shown or 'none'})", path=where)
    ids = df[ID]
    if ids.isna().any():
        rows = np.flatnonzero(ids.isna().to_numpy())[:5].tolist()
        raise GalmoError(f"catalog has {int(ids.isna().sum())} empty ids (rows {rows})", path=where)
    if not (pd.api.types.is_string_dtype(ids.dtype) and all(isinstance(v, str) for v in ids)):
        df = df.copy()
        df[ID] = _ids_to_str(ids)
    dup = df[ID][df[ID].duplicated()]
    if len(dup):
        ex = ", ".join(map(repr, dup.unique()[:5]))
        raise GalmoError(f"catalog has {len(dup)} duplicate ids (e.g. {ex}); ids must be unique", path=where)
    return df


def _ids_to_str(ids: pd.Series) -> pd.Series:
    """Ids as strings; whole-number floats (CSV round trips) lose their '.0'."""
    if ids.dtype.kind == "f" and np.all(np.mod(ids.to_numpy(), 1) == 0):
        ids = ids.astype(np.int64)
    return ids.map(lambda v: v.decode() if isinstance(v, bytes) else str(v)).astype(object)


# ------------------------------------------------------------------------------------------ write
def write_catalog(df: pd.DataFrame, path: str | os.PathLike, require_id: bool = True) -> Path:
    """Write ``df`` to ``path`` (format by extension) atomically; returns the path.

    The ``id`` column is checked (present, unique) and written as strings; the row order is kept.
    For FITS, string/object columns are written as fixed-width strings (None → ''), columns that
    hold one array per row as vector columns.
    """
    path = Path(path)
    fmt = catalog_format(path)
    if require_id:
        df = validate_catalog(df, path)
    try:
        with atomic_path(path) as tmp:
            if fmt == "parquet":
                df.to_parquet(tmp, index=False)
            elif fmt == "csv":
                df.to_csv(tmp, index=False)
            else:
                _to_fits_table(df).write(tmp, format="fits", overwrite=True)
    except GalmoError:
        raise
    except Exception as e:
        raise GalmoError(f"cannot write {fmt} catalog ({type(e).__name__}: {e})", path=path) from e
    return path


def _to_fits_table(df: pd.DataFrame):
    """``df`` as an astropy Table (:meth:`astropy.table.Table.from_pandas`) that FITS can store:
    text columns become fixed-width strings (missing → ''), columns of one array per row vector
    columns, nullable booleans plain ones (missing → False)."""
    from astropy.table import Table

    plain, vectors = {}, {}
    for name in df.columns:
        col = df[name]
        if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            first = next((v for v in col if not _is_missing(v)), "")
            if isinstance(first, (np.ndarray, list, tuple)):
                vectors[str(name)] = np.stack([np.asarray(v) for v in col])
            else:
                plain[str(name)] = np.array(["" if _is_missing(v) else str(v) for v in col], dtype=str)
        elif pd.api.types.is_bool_dtype(col.dtype):
            plain[str(name)] = col.to_numpy(dtype=bool, na_value=False)
        else:
            plain[str(name)] = col
    table = Table.from_pandas(pd.DataFrame(plain, index=df.index))
    for name, values in vectors.items():
        table.add_column(values, name=name, index=[str(c) for c in df.columns].index(name))
    return table


def _is_missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


# ------------------------------------------------------------------------------------------ merge
def merge_on_id(left: pd.DataFrame, right: pd.DataFrame, how: str = "left",
                overlap: str = "suffix", suffix: str = "_right") -> pd.DataFrame:
    """Join ``right``'s columns onto ``left`` by ``id``, keeping ``left``'s row order.

    ``how='left'`` keeps every left row (missing values where right has no such id);
    ``how='inner'`` keeps only ids present in both (still in left's order).
    Columns present in both: ``overlap='suffix'`` adds right's with ``suffix``, ``'left'`` keeps
    left's, ``'right'`` takes right's. Ids are compared as strings.
    """
    if how not in ("left", "inner"):
        raise ValueError(f"merge_on_id: how must be 'left' or 'inner', got {how!r}")
    if overlap not in ("suffix", "left", "right"):
        raise ValueError(f"merge_on_id: overlap must be 'suffix', 'left' or 'right', got {overlap!r}")
    left = validate_catalog(left, "left catalog")
    right = validate_catalog(right, "right catalog")
    common = [c for c in right.columns if c != ID and c in left.columns]
    if overlap == "left":
        right = right.drop(columns=common)
    elif overlap == "right":
        left = left.drop(columns=common)
    else:
        right = right.rename(columns={c: f"{c}{suffix}" for c in common})
    out = left.merge(right, on=ID, how=how, sort=False, validate="one_to_one")
    out.index = pd.RangeIndex(len(out))
    return out


class Catalog:
    """The catalog functions as one namespace: ``Catalog.read``, ``Catalog.write``, ``Catalog.merge``.

    Catalogs themselves are plain DataFrames; this class holds no state.
    """

    read = staticmethod(read_catalog)
    write = staticmethod(write_catalog)
    merge = staticmethod(merge_on_id)
    validate = staticmethod(validate_catalog)
    format = staticmethod(catalog_format)
