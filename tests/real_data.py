"""Real galaxy images for the end-to-end tests (``tests/test_real_images.py``) and the neighbours
montage (``benchmarks/real_neighbours.py``): the HST cutouts of ``shared/data/real_fits`` as a
catalog source, and crops of the Hubble Deep Field photograph that ships with scikit-image.

Nothing is downloaded: the FITS folder sits beside the checkout (``<repo>/../shared/data/real_fits``,
or ``$GALMO_REAL_FITS``); scikit-image is installed with statmorph (a galmo dependency). Each finder
returns None when its data is absent, so the tests can skip with the reason.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
REAL_FITS_ENV = "GALMO_REAL_FITS"
# the galaxies of real_fits (its README): file → (pixel scale in arcsec/px or NaN, what it is)
REAL_GALAXIES = {
    "abell_2744_cd_galaxy_f105w.fits.gz": (0.06, "cD galaxy"),
    "abell_2744_dwarf_galaxy_f105w.fits.gz": (0.06, "dwarf"),
    "abell_2744_spiral_galaxy_f105w.fits.gz": (0.06, "spiral"),
    "abell_2744_group_of_galaxies_f105w.fits.gz": (0.06, "group (blended)"),
    "statmorph_slice.fits": (np.nan, "statmorph test galaxy"),
}  # 0.06"/px: the Frontier Fields 60 mas drizzle named in the Abell 2744 headers (FILENAME); PSF left out


def real_fits_dir() -> Path | None:
    """``$GALMO_REAL_FITS``, else ``<repo>/../shared/data/real_fits``; None when it has no galaxies."""
    d = Path(os.environ.get(REAL_FITS_ENV) or REPO.parent / "shared" / "data" / "real_fits")
    return d if d.is_dir() and any((d / f).is_file() for f in REAL_GALAXIES) else None


def real_fits_catalog(out_dir, folder: Path | None = None) -> Path:
    """A catalog CSV (``id``, ``path``, ``pxscale``, ``what``) of the real galaxies present in ``folder``."""
    folder = folder or real_fits_dir()
    rows = [{"id": f.split("_f105w")[0].removeprefix("abell_2744_").split(".")[0], "path": str(folder / f),
             "pxscale": px, "what": what} for f, (px, what) in REAL_GALAXIES.items() if (folder / f).is_file()]
    out = Path(out_dir) / "real_fits.csv"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def hubble_deep_field() -> Path | None:
    """scikit-image's ``data/hubble_deep_field.jpg`` (found without importing scikit-image), or None."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "data" / "hubble_deep_field.jpg"
    return p if p.is_file() else None


def find_objects(grey: np.ndarray, n: int, min_side: int = 32, max_side: int = 128) -> list[tuple[int, int, int]]:
    """(row, col, side) of the ``n`` brightest detected objects of a grey image: smoothed, above
    median + 5 MAD, connected regions by total light; side = 4 × the region's radius, clipped to
    [min_side, max_side], even; crops that leave the image are skipped. Deterministic."""
    from scipy import ndimage

    sm = ndimage.gaussian_filter(grey, 2.0)
    med = np.median(sm)
    mad = np.median(np.abs(sm - med)) * 1.4826
    lab, k = ndimage.label(sm > med + 5 * mad)
    idx = np.arange(1, k + 1)
    flux = ndimage.sum_labels(sm - med, lab, idx)
    area = ndimage.sum_labels(np.ones_like(sm), lab, idx)
    centres = ndimage.center_of_mass(sm - med, lab, idx)
    out = []
    for j in np.argsort(-flux, kind="stable"):
        side = int(np.clip(4 * np.sqrt(area[j] / np.pi), min_side, max_side)) // 2 * 2
        r, c = (int(round(v)) for v in centres[j])
        if side // 2 <= r <= grey.shape[0] - side // 2 and side // 2 <= c <= grey.shape[1] - side // 2:
            out.append((r, c, side))
        if len(out) == n:
            break
    return out


def hdf_crops(out_dir, n: int = 12, path: Path | None = None, **kw) -> Path:
    """PNG crops (mixed sizes) of the ``n`` brightest objects of the Hubble Deep Field photograph in
    the folder ``out_dir`` (``hdf_<k>.png``), and ``crops.csv`` (id, row, col, side)."""
    from PIL import Image

    rgb = np.asarray(Image.open(path or hubble_deep_field()).convert("RGB"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (r, c, side) in enumerate(find_objects(rgb.mean(2) / 255.0, n, **kw)):
        h = side // 2
        Image.fromarray(rgb[r - h:r + h, c - h:c + h]).save(out / f"hdf_{k:02d}.png")
        rows.append({"id": f"hdf_{k:02d}", "row": r, "col": c, "side": side})
    pd.DataFrame(rows).to_csv(out.parent / f"{out.name}_crops.csv", index=False)
    return out
