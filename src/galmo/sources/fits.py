"""FITS cutouts: one file per galaxy (a FITS file, a folder of them, or files listed in a catalog).

A file holds a single 2-D image, a 3-D cube (bands, H, W), or one band per image extension. Band
names come from the FILTER/BAND header keywords (cubes: BANDS='g,r,z' or BAND1..n / FILTER1..n),
else ``band0``, ``band1``, .... Extensions that are clearly not bands (integer-typed data without a
filter keyword, such as segmentation maps and masks, or EXTNAME like MASK, SEG, WHT, IVAR, ERR,
DQ, PSF) are ignored.

Kinds: ``'flux'`` = the raw values as float32, ``'image'`` = per-band arcsinh stretch to [0, 1]
(:func:`galmo.core.transforms.asinh_stretch`). NaN/Inf pixels are counted (catalog column ``nan_frac``)
and filled with the per-band median of the finite pixels (after the stretch for ``'image'``); an
image without finite pixels is a :class:`~galmo.core.errors.BadInput`. All images come out at one
size: the caller's ``size``, else the median height and width of the files (rounded), never the
first file's; others are resized (or centre-cropped / zero-padded, ``fit='crop'``) and a mixed
folder says so once (``mixed sizes 20–40 px: resized to the median 30 px ...``).

Before any pixel is allocated, the headers' declared data (NAXISn × |BITPIX|/8 per HDU) is checked
against the bytes the file holds: a header claiming 100000×100000 pixels in a 3 kB file is a
BadInput (``header declares 100000×100000 pixels (40.0 GB) but the file holds 2,880 bytes``), not a
37 GiB allocation.

Every file is read once when the source is opened (FITS cutouts are small), so broken files,
NaN-only images and ``nan_frac`` are known before any batch is read.
"""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import BadInput, GalmoError
from galmo.sources.base import FileSource, common_size, human_bytes, thread_map

FITS_EXTS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz")
_AUX_EXTNAME = re.compile(r"^(MASK|SEG|SEGM|SEGMAP|SEGMENTATION|WHT|WEIGHT|IVAR|INVVAR|ERR|ERROR|SIGMA|"
                          r"VAR|VARIANCE|RMS|NOISE|DQ|FLAG|FLAGS|PSF|EXP|EXPTIME|CTX|CON|HDRTAB)\b", re.I)
_BAND_KEYS = ("FILTER", "BAND", "FILTNAM", "FILTNAM1")
# warnings.catch_warnings swaps process-wide state: two reader threads inside it at once restore each
# other's, leaving every later warning recorded into a dead list (never shown). One at a time.
_CATCH_LOCK = threading.Lock()


def is_fits_name(name) -> bool:
    n = str(name).lower()
    return n.endswith(FITS_EXTS)


def fits_stem(name) -> str:
    """File name without its FITS extension(s): 'a.fits.gz' → 'a'."""
    n = Path(name).name
    for ext in sorted(FITS_EXTS, key=len, reverse=True):
        if n.lower().endswith(ext):
            return n[: -len(ext)]
    return Path(n).stem


# ------------------------------------------------------------------------------- one file
def read_fits_image(path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Raw pixels of one FITS cutout as float32 (C, H, W) and its band names.

    Raises BadInput naming the file for anything unreadable (not FITS, truncated, corrupt, no 2-D
    image, a band without any finite pixel).
    """
    from astropy.io import fits

    try:
        with _CATCH_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                check_declared_size(hdul, path)
                data, bands = _select_bands(hdul, path)
        truncated = [str(w.message) for w in caught if "truncated" in str(w.message).lower()]
        if truncated:
            raise BadInput(f"file is truncated ({truncated[0]})", path=path)
    except BadInput:
        raise
    except FileNotFoundError as e:
        raise BadInput("file not found", path=path) from e
    except Exception as e:  # astropy/gzip raise OSError, ValueError, TypeError, EOFError, zlib.error ...
        msg = str(e)
        why = ("not a FITS file" if "SIMPLE" in msg or "Empty or corrupt" in msg else
               "file is truncated or corrupt")
        raise BadInput(f"{why} ({type(e).__name__}: {msg})", path=path) from e
    finite = np.isfinite(data)
    if not finite.any():
        raise BadInput("all pixels are NaN/Inf", path=path)
    empty = [b for b, f in zip(bands, finite) if not f.any()]
    if empty:
        raise BadInput(f"band {', '.join(empty)} has no finite pixels", path=path)
    return data, bands


def check_declared_size(hdul, path) -> None:
    """BadInput when a header declares more data than the file holds, before any pixel is allocated
    (a header claiming 100000×100000 pixels in a 3 kB file must not become a 37 GiB array).

    Each HDU's data ends at its offset + NAXIS1 × ... × NAXISn × |BITPIX|/8 (padded to 2880 bytes;
    a missing last padding block is left to astropy's own truncation check). Compressed (gzip) files
    are counted by decompressing without keeping anything, only when they declare > 256 MB."""
    from astropy.io import fits

    ends = [(info["datLoc"] + info["datSpan"] - (_BLOCK - 1), k) for k, info in
            ((k, hdul.fileinfo(k)) for k in range(len(hdul))) if info and info["datSpan"]]
    if not ends:
        return
    need = max(e for e, _ in ends)
    have = _bytes_present(path, need)
    short = [k for e, k in ends if e > have]
    if short:
        k = short[0]
        hdr = hdul[k].header
        dims = [int(hdr.get(f"NAXIS{a}", 0)) for a in range(int(hdr.get("NAXIS", 0)), 0, -1)]
        what = "×".join(map(str, dims)) + " pixels" if len(dims) >= 2 and hdul[k].is_image else \
            f"a data block (HDU {k})"
        size = hdul.fileinfo(k)["datSpan"]
        if isinstance(hdul[k], fits.CompImageHDU):
            what = f"a compressed {what.removesuffix(' pixels')}-pixel image"
        elif what.endswith("pixels"):
            size = int(np.prod(dims, dtype=np.float64)) * abs(int(hdr.get("BITPIX", 8))) // 8
        raise BadInput(f"file is truncated: header declares {what} ({human_bytes(size)}) but the file holds "
                       f"{have:,} bytes", path=path)


_BLOCK = 2880  # FITS blocks: headers and data are padded to multiples of this
_CHECK_COMPRESSED_ABOVE = 256 * 2**20


def _bytes_present(path, need: int) -> int:
    """The (uncompressed) bytes of ``path``, counted only as far as ``need``."""
    import gzip
    import os
    import zlib

    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if not gz:
        return os.path.getsize(path)
    if need <= _CHECK_COMPRESSED_ABOVE:
        return need  # small enough to let astropy find a short file itself
    count = 0
    try:
        with gzip.open(path, "rb") as f:
            while count < need and (chunk := f.read(1 << 22)):
                count += len(chunk)
    except (OSError, EOFError, zlib.error):
        pass  # a truncated or corrupt stream: what was readable is what the file holds
    return count


def _select_bands(hdul, path) -> tuple[np.ndarray, tuple[str, ...]]:
    from astropy.io import fits

    images = [h for h in hdul if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
              and h.header.get("NAXIS", 0) >= 2]
    if not images:
        raise BadInput("no image HDU with 2 or more axes (is it a table?)", path=path)
    first = images[0]
    data = first.data
    if data is None:
        raise BadInput("image HDU has no data", path=path)
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim == 3:
        return np.asarray(data, np.float32), _cube_bands(first.header, data.shape[0])
    if data.ndim != 2:
        raise BadInput(f"image has shape {data.shape}, expected (H, W) or (bands, H, W)", path=path)
    planes = [h for h in images if h.data is not None and h.data.shape == data.shape and _is_band(h)]
    if first not in planes:
        planes.insert(0, first)
    arr = np.stack([np.asarray(h.data, np.float32) for h in planes])
    primary = hdul[0].header
    names = []
    for k, h in enumerate(planes):
        name = _header_band(h.header) or (_header_band(primary) if len(planes) == 1 else None)
        extname = str(h.header.get("EXTNAME", "")).strip()
        if not name and extname and extname.upper() not in ("PRIMARY", "SCI", "IMAGE", "DATA"):
            name = extname
        names.append(name or f"band{k}")
    return arr, _unique(names)


def _is_band(h) -> bool:
    if _header_band(h.header):
        return True
    if _AUX_EXTNAME.match(str(h.header.get("EXTNAME", "")).strip()):
        return False
    return h.header.get("BITPIX", -32) < 0  # float data; integer planes are masks/segmentation maps


def _header_band(header) -> str | None:
    for key in _BAND_KEYS:
        v = header.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def _cube_bands(header, n: int) -> tuple[str, ...]:
    raw = header.get("BANDS")
    if isinstance(raw, str) and len([b for b in raw.split(",") if b.strip()]) == n:
        return _unique([b.strip() for b in raw.split(",") if b.strip()])
    for prefix in ("BAND", "FILTER"):
        names = [header.get(f"{prefix}{k + 1}") for k in range(n)]
        if all(isinstance(v, str) and v.strip() for v in names):
            return _unique([v.strip() for v in names])
    if n == 1 and _header_band(header):
        return (_header_band(header),)
    return tuple(f"band{k}" for k in range(n))


def _generic(name: str) -> bool:
    return re.fullmatch(r"band\d+", name) is not None


def _unique(names: list[str]) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return tuple(out)


def fill_masked(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace masked pixels of (C, H, W) ``img`` with the per-band median of the others."""
    if not mask.any():
        return img
    med = np.nanmedian(np.where(mask, np.nan, img), axis=(-2, -1), keepdims=True)
    return np.where(mask, np.nan_to_num(med), img).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------- the source
class FitsSource(FileSource):
    """FITS cutouts, one per galaxy (see the module docstring)."""

    format = "fits"

    def __init__(self, path, files: list, on_error: str = "raise", size=None, fit: str = "resize",
                 catalog: pd.DataFrame | None = None, progress: bool = False):
        """``files``: the FITS paths; ``catalog``: optional rows aligned with ``files`` (an ``id``
        column and any extra columns, e.g. from a catalog file); ids default to the file stems."""
        super().__init__(path, on_error)
        self.fit = fit
        self.kinds = ("image", "flux")
        files = [str(f) for f in files]
        base = catalog.reset_index(drop=True) if catalog is not None else _default_ids(files)
        infos = self._scan(files, progress)
        keep = [i for i, info in enumerate(infos) if info is not None]
        if not keep:
            raise GalmoError(f"none of the {len(files)} FITS files could be read "
                             f"(first problem: {self.rejected[0][1] if self.rejected else '?'})", path=path)
        c, self.bands = infos[keep[0]][0], infos[keep[0]][3]
        keep = self._same_bands(files, infos, keep, c)
        target, note = common_size([infos[i][1] for i in keep], [infos[i][2] for i in keep], size, fit)
        self._shape = (c, *target)
        self._set_catalog(base, keep, files, {"nan_frac": [infos[i][5] for i in keep],
                                              "orig_height": [infos[i][1] for i in keep],
                                              "orig_width": [infos[i][2] for i in keep]})
        self._say_what_was_done(note)

    def _scan(self, files: list[str], progress: bool) -> list:
        """Read every file once: (C, H, W, bands, ok, nan_frac) or None (rejected)."""

        def one(f):
            try:
                data, bands = read_fits_image(f)
                return (*data.shape, bands, True, float(1.0 - np.isfinite(data).mean())), None
            except BadInput as e:
                return None, e

        from tqdm.auto import tqdm

        results = thread_map(one, tqdm(files, disable=not progress, desc="checking FITS files", leave=False),
                             self.workers)
        infos = []
        for f, (info, err) in zip(files, results):
            if err is not None:
                if self.on_error == "raise":
                    raise err
                self._reject(f, str(err.args[0]).removeprefix(f"{f}: "))
            infos.append(info)
        return infos

    def _same_bands(self, files, infos, keep, c) -> list[int]:
        """Keep files with as many bands as the first; note (once) when named bands differ."""
        good, renamed = [], []
        for i in keep:
            if infos[i][0] == c:
                if any(a != b and not _generic(a) and not _generic(b) for a, b in zip(infos[i][3], self.bands)):
                    renamed.append(Path(files[i]).name)
                good.append(i)
                continue
            err = BadInput(f"has {infos[i][0]} bands, expected {c} like {Path(files[keep[0]]).name}", path=files[i])
            if self.on_error == "raise":
                raise err
            self._reject(files[i], str(err.args[0]).removeprefix(f"{files[i]}: "))
        if renamed:
            self._note(f"{len(renamed)} files name other bands than the first ({', '.join(self.bands)}), e.g. "
                       f"{renamed[0]}; their planes are used in the same order")
        if all(_generic(b) for b in self.bands):  # the first file had no names: borrow any file's
            named = next((infos[i][3] for i in good if not any(_generic(b) for b in infos[i][3])), None)
            self.bands = named or self.bands
        return good

    def _say_what_was_done(self, size_note: str | None) -> None:
        if size_note:
            self._note(size_note)
        n_nan = int((self.catalog["nan_frac"] > 0).sum())
        if n_nan:
            self._note(f"{n_nan} images have NaN/Inf pixels (catalog column nan_frac); they are filled with "
                       f"the per-band median", warn=False)

    def _load(self, path: str, kind: str) -> np.ndarray:
        from galmo.core.transforms import asinh_stretch

        raw, _ = read_fits_image(path)
        mask = ~np.isfinite(raw)
        if kind == "flux":
            return fill_masked(raw, mask)
        return fill_masked(asinh_stretch(raw), mask)


def _default_ids(files: list[str]) -> pd.DataFrame:
    stems = [fits_stem(f) for f in files]
    if len(set(stems)) < len(stems):
        stems = [Path(f).name for f in files]
    return pd.DataFrame({"id": stems})


def list_fits(directory) -> list[Path]:
    """FITS files directly inside ``directory`` (sorted; hidden and temporary files ignored)."""
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_file() and not p.name.startswith(".") and is_fits_name(p.name))


def open_fits(path, on_error: str = "raise", size=None, fit: str = "resize", progress: bool = False,
              labels=None) -> FitsSource:
    """A FITS file or a folder of FITS files as a :class:`FitsSource` (``labels``: optional CSV)."""
    path = Path(path)
    files = list_fits(path) if path.is_dir() else [path]
    if not files:
        raise GalmoError(f"no FITS files found in {path} (looked for {', '.join('*' + e for e in FITS_EXTS)})")
    src = FitsSource(path, files, on_error=on_error, size=size, fit=fit, progress=progress)
    if labels is not None:
        from galmo.sources.base import apply_label_csv

        apply_label_csv(src, labels)
    return src
