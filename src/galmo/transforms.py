"""Image transforms shared by every stage: stretches and colour composites (numpy, batched).

Conventions: images are float32 arrays shaped (C, H, W) or batches (N, C, H, W); colour
composites are (H, W, 3) or (N, H, W, 3) in [0, 1] (or uint8 where stated).
"""

from __future__ import annotations

import numpy as np

# Legacy Survey colour composite (the "sdss_rgb" recipe of the Legacy Survey viewer, which made the
# Galaxy10 DECaLS images): band -> (RGB plane, scale) for fluxes in nanomaggies.
LEGACY_RGB_SCALES = {"g": (2, 6.0), "r": (1, 3.4), "i": (0, 3.0), "z": (0, 2.2)}


def legacy_rgb(flux: np.ndarray, bands=("g", "r", "z"), m: float = 0.03, Q: float = 20.0) -> np.ndarray:
    """Legacy Survey-style arcsinh colour composite of (…, C, H, W) fluxes in nanomaggies.

    Returns (…, H, W, 3) float32 in [0, 1]. The intensity is stretched with asinh(Q·I)/sqrt(Q) and
    each band keeps its colour ratio, so faint outskirts stay visible without saturating cores.
    """
    flux = np.asarray(flux, dtype=np.float32)
    if flux.shape[-3] != len(bands):
        raise ValueError(f"legacy_rgb: {flux.shape[-3]} planes but bands={bands}")
    planes = []
    scaled = []
    for k, b in enumerate(bands):
        plane, scale = LEGACY_RGB_SCALES.get(b, (min(k, 2), 3.0))
        planes.append(plane)
        scaled.append(np.maximum(0.0, flux[..., k, :, :] * scale + m))
    intensity = sum(scaled) / len(bands)
    fI = np.arcsinh(Q * intensity) / np.sqrt(Q)
    intensity = intensity + (intensity == 0) * 1e-6
    out = np.zeros(flux.shape[:-3] + flux.shape[-2:] + (3,), np.float32)
    for plane, s in zip(planes, scaled):
        out[..., plane] += s * fI / intensity
    return np.clip(out, 0.0, 1.0)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(rgb) * 255.0), 0, 255).astype(np.uint8)


def asinh_stretch(img: np.ndarray, q: float = 10.0, lo_pct: float = 1.0, hi_pct: float = 99.7) -> np.ndarray:
    """Per-band arcsinh stretch of (…, C, H, W) to [0, 1], limits from per-image-per-band percentiles.

    NaN/Inf pixels are ignored when estimating the limits and come out as 0.
    """
    a = np.asarray(img, dtype=np.float32)
    finite = np.isfinite(a)
    b = np.where(finite, a, np.nan)
    lo = np.nanpercentile(b, lo_pct, axis=(-2, -1), keepdims=True)
    hi = np.nanpercentile(b, hi_pct, axis=(-2, -1), keepdims=True)
    lo = np.nan_to_num(lo)
    hi = np.nan_to_num(hi)
    span = np.where(hi > lo, hi - lo, 1.0)
    x = np.clip((np.where(finite, a, lo) - lo) / span, 0, 1)
    out = np.arcsinh(q * x) / np.arcsinh(q)
    return out.astype(np.float32)


def composite(img: np.ndarray, bands=None) -> np.ndarray:
    """A displayable (…, H, W, 3) composite of any (…, C, H, W) image: arcsinh-stretched per band.

    1 band → grey; 2 bands → (b0, mean, b1); 3+ bands → the reddest three as R, G, B.
    """
    s = asinh_stretch(img)
    c = s.shape[-3]
    if c == 1:
        rgb = np.repeat(s, 3, axis=-3)
    elif c == 2:
        rgb = np.stack([s[..., 1, :, :], s.mean(axis=-3), s[..., 0, :, :]], axis=-3)
    else:
        rgb = s[..., [2, 1, 0], :, :] if c == 3 else s[..., [c - 1, c // 2, 0], :, :]
    return np.moveaxis(rgb, -3, -1)
