"""Galaxy images for the explorer: the sources the runs came from, and a PNG cache on disk.

Each thumbnail is rendered once, with galmo's display stretch (:func:`galmo.core.transforms.display_rgb`:
the colour composite, or one band as grey), and kept under ``<cache>/<source key>/<band>/<id>.png``; the
source key hashes the source's path, size and modification time, so a changed source gets new images.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.web.runs import NotFound

SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}")


class Sources:
    """The image sources, opened on first use; :meth:`locate` finds the one that holds a galaxy."""

    def __init__(self, paths):
        self.paths = list(dict.fromkeys(str(Path(p).expanduser()) for p in paths if p and Path(p).expanduser().exists()))
        self._open: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def _get(self, path: str):
        with self._lock:
            if path not in self._open:
                from galmo.sources import open_source

                src = open_source(path)
                self._open[path] = (src, pd.Index(src.catalog["id"].astype(str)), threading.Lock())
            return self._open[path]

    def locate(self, ident: str):
        """(source, catalog row, its read lock) of galaxy ``ident``; NotFound when no source has it."""
        for path in self.paths:
            src, index, lock = self._get(path)
            pos = index.get_indexer([ident])[0]
            if pos >= 0:
                return src, int(pos), lock
        raise NotFound(f"no image of galaxy {ident!r} in the sources ({', '.join(self.paths) or 'none known'}; "
                       "give galmo serve --data SOURCE)")

    def has(self, ident: str) -> bool:
        try:
            self.locate(ident)
        except NotFound:
            return False
        return True

    def catalog_row(self, ident: str) -> dict | None:
        try:
            src, pos, _ = self.locate(ident)
        except NotFound:
            return None
        return src.catalog.iloc[pos].to_dict()

    def bands(self, ident: str) -> list[str]:
        src, _, _ = self.locate(ident)
        c = src.shape[0]
        return list(src.bands) if len(src.bands) == c else [str(k) for k in range(c)]


def source_key(src) -> str:
    p = Path(src.path).resolve()
    st = p.stat()
    return hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def file_name(ident: str) -> str:
    """A file name for a galaxy id: the id itself when it is plain, else a hash of it."""
    return ident if SAFE_ID.fullmatch(ident) else "h" + hashlib.sha1(ident.encode()).hexdigest()


class ThumbCache:
    """PNG thumbnails of galaxies (colour composite ``rgb`` or band index ``0``, ``1``, ...) under ``folder``."""

    def __init__(self, folder, sources: Sources):
        self.folder, self.sources = Path(folder), sources

    def path(self, ident: str, band: str) -> Path:
        """The cached PNG of ``ident`` in ``band``, rendered now when it is not there yet."""
        src, pos, lock = self.sources.locate(ident)
        c = src.shape[0]
        if band != "rgb" and not (band.isdigit() and int(band) < c):
            raise NotFound(f"no band {band!r}: rgb or 0..{c - 1}")
        out = self.folder / source_key(src) / band / f"{file_name(ident)}.png"
        if not out.exists():
            with lock:
                img = src.read([pos], kind="image")[0]
            write_png(out, render(img, band))
        return out


def render(img: np.ndarray, band: str) -> np.ndarray:
    """(H, W, 3) uint8 of one (C, H, W) image: the display composite, or band ``band`` in grey."""
    from galmo.core.transforms import display_rgb, to_uint8

    return to_uint8(display_rgb(img if band == "rgb" else img[int(band):int(band) + 1]))


def write_png(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    from galmo.core.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return path
