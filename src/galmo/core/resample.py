"""THE resampling rule: how images of any size are brought to a model's input, for every verb.

``galmo predict``, ``evaluate``, ``embed``, ``similar --image`` and ``cluster`` (and the per-file
readers, which bring a folder of mixed sizes to one size) all call :func:`frame_images` through a
:class:`Resampler`, so a 256 px cutout reaches a 64 px model the same way everywhere:

1. ``crop_frac`` < 1: keep the central ``crop_frac`` of each side (a zoom on the galaxy);
2. ``framing='resize'`` (default): centre-crop to the input's aspect ratio, then resample with
   an antialiased bilinear (triangle) filter, so pixel values are local averages (surface
   brightness is kept, not total flux) and the galaxy fills the same fraction of the frame;
   ``framing='crop'``: keep the pixel scale: centre-crop larger images, zero-pad smaller ones;
3. bands: a one-band image given to a model of C bands is repeated over them (a grey galaxy);
   C bands given to a one-band model are averaged; other mismatches are an error.

A model records what it was trained on (:class:`Framing`: the framing, ``crop_frac`` and the median
``pxscale`` of its catalog when it has one, in arcsec per pixel) and the verbs apply the same at
inference unless told otherwise; a :class:`Resampler` says once (one warning naming the source)
what it did. The resampling matrices are the ones PIL and ``torch.nn.functional.interpolate(...,
antialias=True)`` apply (separable, normalised triangle weights), so a model's own in-graph resize
to the same size is the identity. numpy only.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from galmo.core.errors import GalmoError

FRAMINGS = ("resize", "crop")


@dataclass(frozen=True)
class Framing:
    """How images are framed for a model (recorded in its config.json, applied at inference)."""

    framing: str = "resize"
    crop_frac: float = 1.0
    pxscale: float | None = None  # arcsec / pixel of the training images, when their catalog says

    def __post_init__(self):
        if self.framing not in FRAMINGS:
            raise GalmoError(f"--framing must be one of {', '.join(FRAMINGS)}, got {self.framing!r}")
        if not 0 < float(self.crop_frac) <= 1:
            raise GalmoError(f"--crop-frac must be in (0, 1], got {self.crop_frac}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Framing":
        """The recorded framing (a model saved before framings were recorded: the default)."""
        d = d or {}
        return cls(str(d.get("framing") or "resize"), float(d.get("crop_frac") or 1.0), d.get("pxscale"))

    def override(self, framing: str | None = None, crop_frac: float | None = None) -> "Framing":
        """This framing with the user's choices (None: keep the recorded one)."""
        return Framing(framing or self.framing, self.crop_frac if crop_frac is None else float(crop_frac),
                       self.pxscale)


def catalog_pxscale(catalog) -> float | None:
    """The median ``pxscale`` column of a catalog (arcsec / pixel), or None when it has none."""
    if catalog is None or "pxscale" not in getattr(catalog, "columns", ()):
        return None
    v = np.asarray(catalog["pxscale"], dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    return round(float(np.median(v)), 6) if v.size else None


@lru_cache(maxsize=64)
def axis_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32: antialiased bilinear resampling of one axis (triangle weights of
    half-width max(n_in/n_out, 1) input pixels, normalised over the pixels inside the image)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    dist = np.abs(np.arange(n_in)[None, :] + 0.5 - centres[:, None]) / support
    w = np.clip(1.0 - dist, 0.0, None)
    w = (w / w.sum(1, keepdims=True)).astype(np.float32)
    w.setflags(write=False)  # cached and shared: read-only
    return w


def _central(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """The central ``h`` × ``w`` pixels of (…, H, W)."""
    y0, x0 = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., y0:y0 + h, x0:x0 + w]


def _aspect_crop(x: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Centre-crop (…, H, W) to the aspect ratio th:tw."""
    h, w = x.shape[-2:]
    if h * tw > w * th:
        return _central(x, max(1, round(w * th / tw)), w)
    if h * tw < w * th:
        return _central(x, h, max(1, round(h * tw / th)))
    return x


def _crop_or_pad(x: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Centre-crop larger, zero-pad smaller (…, H, W) to th × tw (pixel scale kept)."""
    h, w = x.shape[-2:]
    sh, sw = min(h, th), min(w, tw)
    out = np.zeros(x.shape[:-2] + (th, tw), np.float32)
    y0, x0 = (th - sh) // 2, (tw - sw) // 2
    out[..., y0:y0 + sh, x0:x0 + sw] = _central(x, sh, sw)
    return out


def frame_images(images: np.ndarray, size, framing: str = "resize", crop_frac: float = 1.0) -> np.ndarray:
    """Images (…, H, W) (e.g. (N, C, H, W) or (C, H, W)) brought to ``size`` = (H', W') by the rule
    of the module docstring (steps 1–2). float32; the input itself when nothing is to be done."""
    th, tw = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    Framing(framing, crop_frac)  # checks the choices
    x = np.asarray(images, dtype=np.float32)
    if crop_frac < 1:
        h, w = x.shape[-2:]
        x = _central(x, max(1, round(h * crop_frac)), max(1, round(w * crop_frac)))
    if x.shape[-2:] == (th, tw):
        return x
    if framing == "crop":
        return _crop_or_pad(x, th, tw)
    x = _aspect_crop(x, th, tw)
    mh, mw = axis_matrix(x.shape[-2], th), axis_matrix(x.shape[-1], tw)
    return np.matmul(np.matmul(mh, x), mw.T).astype(np.float32, copy=False)


def match_bands(images: np.ndarray, n_bands: int, where=None) -> np.ndarray:
    """(N, C, H, W) with C bands as ``n_bands``: one band repeated, or all averaged into one."""
    c = images.shape[1]
    if c == n_bands:
        return images
    if c == 1:
        return np.repeat(images, n_bands, axis=1)
    if n_bands == 1:
        return images.mean(axis=1, keepdims=True)
    raise GalmoError(f"images have {c} bands but the model takes {n_bands}: give images with {n_bands} bands "
                     "(or one band, repeated over them)", path=where)


def describe(in_shape, out_shape, framing: Framing, src_pxscale: float | None = None,
             sizes: str | None = None) -> str | None:
    """One line saying what :class:`Resampler` does to (C, H, W) ``in_shape`` images, or None
    (``sizes``: what to call their sizes, e.g. "files of 100–400 px"; default "HxW px")."""
    c, h, w = in_shape
    oc, oh, ow = out_shape
    parts = []
    if framing.crop_frac < 1:
        parts.append(f"kept the central {framing.crop_frac:g} of each side")
    if (h, w) != (oh, ow) or framing.crop_frac < 1:
        how = ("centre-cropped / zero-padded (pixel scale kept)" if framing.framing == "crop" else
               "resized (centre-crop to the aspect ratio, antialiased bilinear)")
        parts.append(f"{sizes or f'{h}x{w} px'} {how} to the model's {oh}x{ow}")
    if oc is not None and c != oc:
        parts.append(f"{c} band{'s' if c != 1 else ''} " + ("repeated over" if c == 1 else "averaged into")
                     + f" the model's {oc}")
    if not parts:
        return None
    model_px = framing.pxscale
    if model_px and src_pxscale and abs(src_pxscale / model_px - 1) > 0.05:
        parts.append(f"pixel scale {src_pxscale:g}\"/px, the model's {model_px:g}\"/px")
    return "; ".join(parts)


class Resampler:
    """The rule applied to batches for one model input ``shape`` (C or None for any bands, H, W):
    ``resampler(images (N, C, H, W)) → (N, C', H', W')``; the first batch of each input shape is
    said once (a warning naming ``where``) and kept in :attr:`notes`."""

    def __init__(self, shape, framing: Framing | None = None, where=None, src_pxscale: float | None = None,
                 sizes: str | None = None, quiet: bool = False):
        self.shape = (None if shape[0] is None else int(shape[0]), int(shape[1]), int(shape[2]))
        self.framing = framing or Framing()
        self.where, self.src_pxscale, self.sizes, self.quiet = where, src_pxscale, sizes, quiet
        self.notes: list[str] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images)
        if x.ndim != 4:
            raise ValueError(f"Resampler expects (N, C, H, W), got {x.shape}")
        self.say(x.shape[1:])
        c = self.shape[0]
        if c is not None:
            x = match_bands(x, c, self.where)
        return frame_images(x, self.shape[1:], self.framing.framing, self.framing.crop_frac)

    def say(self, in_shape) -> None:
        if self.quiet:
            return
        note = describe(tuple(in_shape), self.shape, self.framing, self.src_pxscale, self.sizes)
        if note and note not in self.notes:
            self.notes.append(note)
            where = f"{self.where}: " if self.where else ""
            warnings.warn(f"{where}{note}", stacklevel=3)

    @classmethod
    def for_source(cls, src, shape, recorded: "Framing | dict | None" = None, framing: str | None = None,
                   crop_frac: float | None = None) -> "Resampler":
        """The resampler bringing ``src``'s images to a model input ``shape`` with the ``recorded``
        framing (a :class:`Framing` or its dict) overridden by the user's ``framing`` / ``crop_frac``;
        what it will do to the source's images is said now, before any is read (not from inside an
        inference loop, whose export step may silence the terminal)."""
        base = recorded if isinstance(recorded, Framing) else Framing.from_dict(recorded)
        cat = getattr(src, "catalog", None)
        fit = cls(shape, base.override(framing, crop_frac), where=getattr(src, "path", None),
                  src_pxscale=catalog_pxscale(cat), sizes=file_sizes(cat) if hasattr(src, "framed") else None)
        if len(getattr(src, "shape", ())) == 3:
            fit.say(src.shape)
        return fit


def file_sizes(catalog) -> str | None:
    """"files of 100–400 px" from a per-file source's ``orig_height`` / ``orig_width`` columns."""
    if catalog is None or not {"orig_height", "orig_width"} <= set(getattr(catalog, "columns", ())):
        return None
    sides = np.concatenate([np.asarray(catalog["orig_height"]), np.asarray(catalog["orig_width"])])
    lo, hi = int(sides.min()), int(sides.max())
    return f"files of {lo} px" if lo == hi else f"files of {lo}–{hi} px"


def fit_source(src, shape, recorded: "Framing | dict | None" = None, framing: str | None = None,
               crop_frac: float | None = None):
    """(source, :class:`Resampler`) bringing ``src``'s images to a model input ``shape`` (the rule
    of :meth:`Resampler.for_source`, said now). A per-file source (one with ``framed``: FITS,
    PNG/JPEG, catalogs) is re-read with every file framed straight from its own pixels to the input
    (one resampling, not one to the folder's median size and another to the model's); the
    resampler is then left with the bands."""
    fit = Resampler.for_source(src, shape, recorded, framing, crop_frac)
    f = fit.framing
    if src is None or not hasattr(src, "framed"):
        return src, fit
    same = fit.shape[1:] == tuple(src.shape[1:]) and f.crop_frac == 1 and getattr(src, "fit", f.framing) == f.framing
    if same:
        return src, fit
    framed = src.framed(fit.shape[1:], f.framing, f.crop_frac)
    return framed, Resampler(fit.shape, Framing(f.framing, 1.0, f.pxscale), where=fit.where, quiet=True)
