"""Non-parametric morphology (statmorph + photutils) for the physical validation of groups.

:func:`measure` computes, for each image, Gini, M20, concentration C, asymmetry A, smoothness S,
Sérsic n and the half-light radius (circular, px) of the source at the image centre. It never
raises for a bad galaxy: a failed segmentation or fit gives NaN and a reason in ``error``;
statmorph's quality flags are kept (``flag``, ``flag_sersic``) and values with ``flag >= 2``
(statmorph's "bad") are set to NaN.

:func:`measure_groups` samples up to ``per_group`` galaxies of each group of a clustering (on the
r-band ``flux`` kind when the source has it) and :func:`group_medians` summarises them.

Lotz, Primack & Madau (2008) dividing lines on the Gini–M20 plane:
mergers ``G > -0.14 M20 + 0.33``; E/S0/Sa vs Sb–Ir ``G = 0.14 M20 + 0.80``. Conselice (2003):
mergers ``A > 0.35`` on the C–A plane.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

COLUMNS = ["gini", "m20", "concentration", "asymmetry", "smoothness", "sersic_n", "rhalf_circ"]


def lotz_lines(m20: np.ndarray) -> dict[str, np.ndarray]:
    """Gini of the Lotz+2008 merger line and the E/S0/Sa – Sb/Ir line at ``m20``."""
    m20 = np.asarray(m20, dtype=float)
    return {"merger": -0.14 * m20 + 0.33, "early_late": 0.14 * m20 + 0.80}


def lotz_class(gini: np.ndarray, m20: np.ndarray) -> np.ndarray:
    """'merger', 'E/S0/Sa', 'Sb-Ir' (or '' for NaN) from the Lotz+2008 lines."""
    g = np.asarray(gini, dtype=float)
    lines = lotz_lines(m20)
    out = np.where(g > lines["merger"], "merger", np.where(g > lines["early_late"], "E/S0/Sa", "Sb-Ir"))
    return np.where(np.isfinite(g) & np.isfinite(np.asarray(m20, float)), out, "")


def _background(img: np.ndarray) -> tuple[np.ndarray, float]:
    """The image minus its background and the noise σ, both from the border (cutouts are centred)."""
    from astropy.stats import mad_std

    h, w = img.shape
    b = max(2, min(h, w) // 8)
    border = np.concatenate([img[:b].ravel(), img[-b:].ravel(), img[:, :b].ravel(), img[:, -b:].ravel()])
    sigma = float(mad_std(border))
    if not sigma > 0:
        sigma = float(np.std(border)) or 1e-6
    return img - float(np.median(border)), sigma


def _central_segment(img: np.ndarray, sigma: float, nsigma: float, npixels: int) -> np.ndarray | None:
    """The segmentation map (0/1) of the source at, or nearest to, the centre; None when none is found."""
    from astropy.convolution import Gaussian2DKernel, convolve
    from photutils.segmentation import detect_sources

    seg = detect_sources(convolve(img, Gaussian2DKernel(1.0)), nsigma * sigma, npixels)  # positional: photutils 3
    if seg is None:
        return None
    labels = seg.data
    cy, cx = img.shape[0] // 2, img.shape[1] // 2
    lab = labels[cy, cx]
    if lab == 0:  # the segment nearest the centre
        yy, xx = np.nonzero(labels)
        k = np.argmin((yy - cy) ** 2 + (xx - cx) ** 2)
        lab = labels[yy[k], xx[k]]
    return (labels == lab).astype(np.int32)


def _one(image: np.ndarray, nsigma: float = 1.5, npixels: int = 5, fit_sersic: bool = True) -> dict:
    import statmorph

    res = {c: np.nan for c in COLUMNS}
    res.update(flag=-1, flag_sersic=-1, error="")
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or not np.isfinite(img).any():
        res["error"] = "no finite pixels"
        return res
    img, sigma = _background(np.where(np.isfinite(img), img, np.nanmedian(img)))
    segmap = _central_segment(img, sigma, nsigma, npixels)
    if segmap is None:
        res["error"] = "no source detected"
        return res
    h, w = img.shape
    weight = np.full_like(img, sigma)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = statmorph.source_morphology(img, segmap, weightmap=weight, skybox_size=max(8, min(32, min(h, w) // 4)),
                                            verbose=False)[0]
        res.update(gini=m.gini, m20=m.m20, concentration=m.concentration, asymmetry=m.asymmetry,
                   smoothness=m.smoothness, rhalf_circ=m.rhalf_circ, flag=int(m.flag))
        if fit_sersic:
            res.update(sersic_n=m.sersic_n, flag_sersic=int(m.flag_sersic))
            if m.flag_sersic >= 2:  # fit failed: don't keep a meaningless n
                res["sersic_n"] = np.nan
        if m.flag >= 2:
            for c in COLUMNS:
                res[c] = np.nan
            res["error"] = f"statmorph flag {m.flag}"
    except Exception as e:  # noqa: BLE001 - statmorph raises many types on odd inputs; never crash
        res["error"] = f"{type(e).__name__}: {str(e)[:120]}"
    for c in COLUMNS:
        v = res[c]
        res[c] = float(v) if v is not None and np.isfinite(v) else np.nan
    return res


def measure(images, fit_sersic: bool = True, progress: bool = False) -> pd.DataFrame:
    """Morphology of each 2-D image (N, H, W) → DataFrame with :data:`COLUMNS`, flags, error."""
    rows = []
    it = images
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(images, desc="statmorph", unit="gal", leave=False)
    for img in it:
        rows.append(_one(img, fit_sersic=fit_sersic))
    return pd.DataFrame(rows, columns=COLUMNS + ["flag", "flag_sersic", "error"])


def band_images(src, pos: np.ndarray) -> tuple[np.ndarray, str]:
    """2-D images for morphology: the r band of the ``flux`` kind when present, else the band mean
    of the ``image`` kind. Returns (images (N, H, W), description)."""
    kinds = getattr(src, "kinds", ("image",))
    bands = list(getattr(src, "bands", ()) or ())
    if "flux" in kinds:
        x = src.read(pos, kind="flux")
        if "r" in bands:
            return x[:, bands.index("r")], "r-band flux"
        return x.mean(1), "band-mean flux"
    x = src.read(pos, kind="image")
    return x.mean(1), "band-mean display image"


def measure_groups(src, groups: np.ndarray, per_group: int = 20, seed: int = 0, fit_sersic: bool = True,
                   progress: bool = False) -> pd.DataFrame:
    """Morphology of up to ``per_group`` random galaxies of each group ≥ 0 (catalog row positions
    in ``group`` order). Columns: ``pos``, ``group`` and :func:`measure`'s."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    picks = []
    for g in np.unique(groups[groups >= 0]):
        pos = np.flatnonzero(groups == g)
        picks.append(np.sort(rng.choice(pos, size=min(per_group, len(pos)), replace=False)))
    if not picks:
        return pd.DataFrame(columns=["pos", "group"] + COLUMNS + ["flag", "flag_sersic", "error"])
    pos = np.concatenate(picks)
    order = np.argsort(pos)
    imgs, what = band_images(src, pos[order])
    df = measure(imgs, fit_sersic=fit_sersic, progress=progress)
    df.insert(0, "group", groups[pos[order]])
    df.insert(0, "pos", pos[order])
    df.attrs["images"] = what
    return df.sort_values(["group", "pos"]).reset_index(drop=True)


def group_medians(df: pd.DataFrame) -> pd.DataFrame:
    """Per-group medians of the morphology columns, with counts measured and failed."""
    if df.empty:
        return pd.DataFrame(columns=["group", "n", "n_failed"] + COLUMNS)
    g = df.groupby("group")
    med = g[COLUMNS].median()
    med.insert(0, "n_failed", g["gini"].apply(lambda s: int(s.isna().sum())))
    med.insert(0, "n", g.size())
    return med.reset_index()
