"""Folders of PNG/JPEG images (Pillow), one galaxy per file.

Colour images give 3 bands, stored blue-first like survey bands (``('blue', 'green', 'red')``:
the RGB planes reversed); grey images (8- or 16-bit) give 1 band ``('grey',)``. The first
readable image decides which; others are converted to it. Kind ``'image'`` only: pixel values / the
type's maximum (255 or 65535), in [0, 1].

Labels: an optional CSV (``filename`` or ``id``, and ``label``), or, when the folder holds no
images itself but sub-folders that do, the sub-folder names (``train/spiral/001.png`` →
label 'spiral'). String labels become indices into their sorted unique values.

When the source is opened only the image headers are read (size and mode); a file that cannot be
decoded later raises BadInput, or is skipped by ``iter_batches`` with ``on_error='skip'``. A header
declaring more than :data:`MAX_SIDE` (20000) pixels per side, or tripping Pillow's
decompression-bomb check, is a BadInput before anything is decoded.

Sizes: every image comes out at ONE size, the caller's ``size`` (e.g. a model's input size) or, by
default, the median height and width of the files (rounded; from the headers, no pixels read),
never the size of whichever file sorts first. Images of another size are resized (centre-crop to
the aspect ratio, then bilinear) or, with ``fit='crop'``, centre-cropped / zero-padded; a mixed
folder says so once (``mixed sizes 100–400 px: resized to the median 256 px ...``). The catalog
keeps each file's ``orig_height`` and ``orig_width``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import BadInput, GalmoError
from galmo.sources.base import (MAX_SIDE, FileSource, apply_label_csv, common_size, human_bytes, label_columns,
                               thread_map)

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_GREY_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
RGB_BANDS = ("blue", "green", "red")


def is_image_name(name) -> bool:
    return str(name).lower().endswith(IMAGE_EXTS)


def list_images(directory) -> list[Path]:
    """PNG/JPEG files directly inside ``directory`` (sorted; hidden files ignored)."""
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_file() and not p.name.startswith(".") and is_image_name(p.name))


def image_header(path) -> tuple[int, int, str]:
    """(height, width, mode) of an image file without decoding it; BadInput if it is not one, or if
    its header declares more than :data:`MAX_SIDE` pixels per side (or trips Pillow's
    decompression-bomb check)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            h, w, mode = im.height, im.width, im.mode
    except FileNotFoundError as e:
        raise BadInput("file not found", path=path) from e
    except Image.DecompressionBombError as e:
        raise too_large(path, _declared_dims(path), str(e)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadInput(f"not a readable PNG/JPEG image ({type(e).__name__}: {e})", path=path) from e
    if max(h, w) > MAX_SIDE:
        raise too_large(path, (h, w))
    return h, w, mode


def too_large(path, dims, why: str = "") -> BadInput:
    """The BadInput for an image whose header declares too many pixels to decode."""
    have = os.path.getsize(path)
    if dims is None:
        return BadInput(f"header declares too many pixels ({why}) but the file holds {have:,} bytes", path=path)
    h, w = dims
    return BadInput(f"header declares {h}×{w} pixels ({human_bytes(h * w * 3 * 4)} as float32 RGB) but the file "
                    f"holds {have:,} bytes; galmo reads cutouts of at most {MAX_SIDE} px per side "
                    f"(crop or downsample it first)", path=path)


def _declared_dims(path) -> tuple[int, int] | None:
    """(height, width) from a PNG/JPEG header, bypassing Pillow's decompression-bomb refusal."""
    from PIL import JpegImagePlugin, PngImagePlugin

    for cls in (PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile):
        try:
            with cls(str(path)) as im:
                return im.height, im.width
        except Exception:  # noqa: BLE001 - not this format
            continue
    return None


def read_image(path, n_bands: int) -> np.ndarray:
    """Decode one PNG/JPEG to float32 (C, H, W) in [0, 1]; C = ``n_bands`` (1 grey, 3 colour)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if max(im.size) > MAX_SIDE:
                raise too_large(path, (im.height, im.width))
            im.load()
            if n_bands == 3:
                rgb = np.asarray(im.convert("RGB"))
                return (rgb[:, :, ::-1].transpose(2, 0, 1) * np.float32(1 / 255)).astype(np.float32)
            if im.mode.startswith("I;16") or im.mode == "I":
                a = np.asarray(im, dtype=np.float32) / 65535.0
            elif im.mode == "F":
                a = np.asarray(im, dtype=np.float32)
            else:
                a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
            return a[None].astype(np.float32, copy=False)
    except FileNotFoundError as e:
        raise BadInput("file not found", path=path) from e
    except Image.DecompressionBombError as e:
        raise too_large(path, _declared_dims(path), str(e)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadInput(f"cannot decode image ({type(e).__name__}: {e})", path=path) from e


class ImageFolderSource(FileSource):
    """PNG/JPEG files as a source (see the module docstring)."""

    format = "folder"
    colour_bands = RGB_BANDS

    def __init__(self, path, files: list, on_error: str = "raise", size=None, fit: str = "resize",
                 catalog: pd.DataFrame | None = None, progress: bool = False):
        """``files``: image paths; ``catalog``: optional rows aligned with ``files`` (``id`` and extra
        columns); ids default to the path relative to ``path`` without the extension."""
        super().__init__(path, on_error)
        self.fit = fit
        files = [str(f) for f in files]
        base = catalog.reset_index(drop=True) if catalog is not None else self._default_ids(files)
        heads = self._scan(files, progress)
        keep = [i for i, h in enumerate(heads) if h is not None]
        if not keep:
            raise GalmoError(f"none of the {len(files)} images could be read "
                             f"(first problem: {self.rejected[0][1] if self.rejected else '?'})", path=path)
        mode = heads[keep[0]][2]
        self.bands = ("grey",) if mode in _GREY_MODES else self.colour_bands
        target, note = common_size([heads[i][0] for i in keep], [heads[i][1] for i in keep], size, fit)
        self._shape = (len(self.bands), *target)
        self._set_catalog(base, keep, files, {"orig_height": [heads[i][0] for i in keep],
                                              "orig_width": [heads[i][1] for i in keep]})
        if note:
            self._note(note)

    def _default_ids(self, files: list[str]) -> pd.DataFrame:
        root = self.path if self.path.is_dir() else self.path.parent
        ids = []
        for f in files:
            p = Path(f)
            try:
                rel = p.relative_to(root)
            except ValueError:
                rel = Path(p.name)
            ids.append(rel.with_suffix("").as_posix())
        if len(set(ids)) < len(ids):  # a.png and a.jpg side by side
            ids = [Path(f).relative_to(root).as_posix() if Path(f).is_relative_to(root) else Path(f).name
                   for f in files]
        return pd.DataFrame({"id": ids})

    def _scan(self, files: list[str], progress: bool) -> list:
        def one(f):
            try:
                return image_header(f), None
            except BadInput as e:
                return None, e

        from tqdm.auto import tqdm

        heads = []
        results = thread_map(one, tqdm(files, disable=not progress, desc="checking images", leave=False),
                             self.workers)
        for f, (head, err) in zip(files, results):
            if err is not None:
                if self.on_error == "raise":
                    raise err
                self._reject(f, str(err.args[0]).removeprefix(f"{f}: "))
            heads.append(head)
        return heads

    def _load(self, path: str, kind: str) -> np.ndarray:
        return read_image(path, self.shape[0])


def open_folder(path, on_error: str = "raise", size=None, fit: str = "resize", labels=None,
                progress: bool = False) -> ImageFolderSource:
    """A folder of PNG/JPEG images (or one image file) as an :class:`ImageFolderSource`.

    A folder with no images of its own but sub-folders of images is read with the sub-folder names
    as labels (unless ``labels`` is given).
    """
    path = Path(path)
    if path.is_file():
        return ImageFolderSource(path, [path], on_error=on_error, size=size, fit=fit)
    files = list_images(path)
    by_dir = None
    if not files:
        subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        by_dir = [(d.name, f) for d in subdirs for f in list_images(d)]
        files = [f for _, f in by_dir]
    if not files:
        raise GalmoError(f"no images found in {path} (looked for {', '.join('*' + e for e in IMAGE_EXTS)})")
    src = ImageFolderSource(path, files, on_error=on_error, size=size, fit=fit, progress=progress)
    if labels is not None:
        apply_label_csv(src, labels)
    elif by_dir is not None:
        class_of = {str(f): d for d, f in by_dir}
        label, name, classes = label_columns([class_of[r] for r in src.catalog["ref"]])
        src.catalog["label"], src.catalog["label_name"] = label, name
        src.class_names = classes
        src._note(f"labels from the sub-folder names: {', '.join(classes or [])}", warn=False)
    return src
