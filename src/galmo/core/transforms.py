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


# ---------------------------------------------------------------- adaptive polar unwrap (unsupervised, issue 3)
def polar_unwrap(images: np.ndarray, step: float = 0.05, radius: int | None = None, centre_frac: float = 0.125,
                 smooth_sigma: float = 1.5, ref_annulus: tuple[float, float] = (0.15, 0.35), mirror: bool = True,
                 radial: str = "linear", r_min: float = 1.0, return_params: bool = False):
    """Adaptive polar unwrap (Fang et al. 2023, as in eUML) of a batch (N, C, H, W), rotation-normalised.

    * origin: the brightest pixel within ``centre_frac``·size of the image centre, found on the
      band-summed image smoothed with a Gaussian of ``smooth_sigma`` px (a single hot or noisy
      pixel cannot move it);
    * angle 0: the direction of the faintest light near the centre. eUML takes the faintest single
      pixel, which on noisy data is decided by the noise. Here it is the minimum of the azimuthal
      profile averaged over the annulus ``ref_annulus`` (fractions of the half width) of the
      smoothed image, itself smoothed circularly over ±2 angle bins;
    * sampling: one column per ``step`` radians (2π/step rounded, so a rotation is an exact
      column shift) and ``radius`` rows (default half the width): one per pixel of radius
      (``radial="linear"``, as in eUML) or geometrically spaced from ``r_min`` to ``radius`` px
      (``radial="log"``). In log-polar coordinates a logarithmic spiral arm is a straight line whose
      slope is set by its pitch angle, and a change of galaxy size is a shift along the rows, so
      tight and loose arms differ by the orientation of straight features at any size;
    * ``mirror``: the unwrap is followed by its angular mirror image, doubling the width, so the
      image is also normalised against reflection.

    Batched: one bilinear ``grid_sample`` for the whole batch. Returns (N, C, R, A) or (N, C, R, 2A)
    float32; with ``return_params`` also (origin_yx (N, 2), angle0 (N,)).
    """
    import torch
    import torch.nn.functional as F
    from scipy.ndimage import gaussian_filter

    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"polar_unwrap expects (N, C, H, W), got {x.shape}")
    n, c, h, w = x.shape
    R = int(radius or min(h, w) // 2)
    A = max(8, int(round(2 * np.pi / step)))
    if radial not in ("linear", "log"):
        raise ValueError(f"radial must be 'linear' or 'log', got {radial!r}")
    if radial == "log" and not 0 < r_min < R:
        raise ValueError(f"r_min must be in (0, {R}) px, got {r_min}")
    # origin: brightest smoothed pixel near the centre
    lum = np.nan_to_num(x).sum(1)
    sm = gaussian_filter(lum, sigma=(0, smooth_sigma, smooth_sigma), mode="nearest") if smooth_sigma else lum
    cy, cx = (h - 1) / 2, (w - 1) / 2
    r0 = max(1, int(round(centre_frac * min(h, w))))
    y0, y1 = int(np.floor(cy - r0)), int(np.ceil(cy + r0)) + 1
    x0, x1 = int(np.floor(cx - r0)), int(np.ceil(cx + r0)) + 1
    box = sm[:, y0:y1, x0:x1].reshape(n, -1).argmax(1)
    oy = y0 + box // (x1 - x0)
    ox = x0 + box % (x1 - x0)
    # polar grid (radius rows × angle columns) around each origin, in normalised coordinates
    rr = (torch.arange(R, dtype=torch.float32) if radial == "linear"
          else torch.from_numpy(np.geomspace(r_min, R, R).astype(np.float32)))
    th = torch.arange(A, dtype=torch.float32) * (2 * np.pi / A)
    dy = rr[:, None] * torch.sin(th)[None, :]
    dx = rr[:, None] * torch.cos(th)[None, :]
    gy = (torch.as_tensor(oy, dtype=torch.float32)[:, None, None] + dy[None]) * (2.0 / max(h - 1, 1)) - 1.0
    gx = (torch.as_tensor(ox, dtype=torch.float32)[:, None, None] + dx[None]) * (2.0 / max(w - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    src = torch.from_numpy(np.concatenate([np.nan_to_num(x), sm[:, None]], axis=1))
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)
    polar, smooth_polar = out[:, :c], out[:, c]
    # reference angle: faintest direction in the annulus, circularly smoothed
    a_in, a_out = (max(1, int(round(f * R))) for f in ref_annulus)  # radii in px
    rows = np.flatnonzero((rr.numpy() >= a_in) & (rr.numpy() < max(a_out, a_in + 1)))
    if not len(rows):
        rows = np.array([int(np.argmin(np.abs(rr.numpy() - a_in)))])
    prof = smooth_polar[:, rows].mean(1)  # (N, A)
    k = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0]) / 9.0
    prof = F.conv1d(F.pad(prof[:, None], (2, 2), mode="circular"), k.view(1, 1, -1))[:, 0]
    shift = prof.argmin(1)
    idx = (torch.arange(A)[None, :] + shift[:, None]) % A  # column j ↔ angle0 + j·2π/A
    polar = torch.gather(polar, 3, idx[:, None, None, :].expand(n, c, R, A))
    if mirror:
        polar = torch.cat([polar, polar.flip(-1)], dim=-1)
    res = polar.numpy().astype(np.float32, copy=False)
    if return_params:
        return res, np.stack([oy, ox], 1), shift.numpy() * (2 * np.pi / A)
    return res


def display_rgb(img: np.ndarray) -> np.ndarray:
    """(…, C, H, W) → (…, H, W, 3) for display.

    Display-normalised images (every reader's kind 'image': values in [0, 1], bands bluest first) are
    shown as they are (bands reversed so the reddest is red); anything else (fluxes) goes through
    :func:`composite`.
    """
    a = np.asarray(img, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if a.shape[-3] in (1, 3) and finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
        a = np.nan_to_num(a)
        rgb = np.repeat(a, 3, axis=-3) if a.shape[-3] == 1 else a[..., ::-1, :, :]
        return np.moveaxis(rgb, -3, -1)
    return composite(a)


def noise_sigma(X: np.ndarray) -> np.ndarray:
    """Per-image, per-band noise σ (N, C) from the MAD of horizontal pixel differences / √2 —
    robust to the galaxy itself, which is smooth on the scale of one pixel."""
    from astropy.stats import median_absolute_deviation

    d = np.diff(np.asarray(X, dtype=np.float32), axis=-1).reshape(X.shape[0], X.shape[1], -1)
    # 1.4826, not astropy's mad_std (1.482602...): the 1.5e-6 difference would change the denoiser's
    # training, which is conditioned on this σ, and so every number downstream of it.
    return (1.4826 * median_absolute_deviation(d, axis=-1) / np.sqrt(2.0)).astype(np.float32)
