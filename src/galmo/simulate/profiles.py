"""Rendering primitives: GalSim profiles on a canvas, pixel-space structure, PSF, noise.

A :class:`Canvas` is the square patch of sky (in arcsec, centred on the target) on which every
component is rendered *before* the PSF: GalSim draws the smooth profiles (Sérsic bulges and
ellipticals, exponential disks of finite thickness, bars), numpy adds the structure GalSim has no
profile for (logarithmic spiral arms, dust lanes, clumps, tidal tails). The scene is then convolved
band by band with a Moffat, Kolmogorov or Airy PSF (drawn by GalSim, pixel response included) with
FFTs, cropped from the padded canvas, and given sky + Poisson noise.

All pixel operations are vectorised numpy; coordinates follow GalSim: ``x`` is the column,
``y`` the row, both increasing, centred on the canvas's true centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import math

import galsim
import numpy as np
import scipy.fft as sfft

# Loose-ish accuracy: these profiles are convolved with a ≥0.9″ PSF and buried in sky noise.
GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=1e-2, maximum_fft_size=4096)
# Inclined disks are drawn by FFT; their k-space detail beyond the 5 % level is far beyond what the
# PSF passes (the MTF of a 0.9″ Moffat is ~1e-4 there), and a looser maxk keeps edge-on FFTs small.
GSPARAMS_DISK = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=5e-2, maximum_fft_size=4096)


@dataclass
class Canvas:
    """A square grid of ``n`` pixels of ``scale`` arcsec, centred on the target galaxy."""

    n: int
    scale: float

    @cached_property
    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (arcsec) relative to the canvas centre, each (n, n)."""
        c = (np.arange(self.n) - (self.n - 1) / 2.0) * self.scale
        return np.meshgrid(c, c)

    def image(self) -> galsim.ImageF:
        return galsim.ImageF(self.n, self.n, scale=self.scale)


# --------------------------------------------------------------------------------------------
# GalSim profiles
# --------------------------------------------------------------------------------------------
def sersic(n: float, re: float, q: float = 1.0, pa: float = 0.0, flux: float = 1.0) -> galsim.GSObject:
    """Sérsic (1968) profile of half-light radius ``re`` (arcsec, circularised), axis ratio q, PA (rad).

    Truncated at 8 re so that high-n wings stay on the canvas (the lost flux is < 1 % for n ≤ 4).
    """
    prof = galsim.Sersic(n=float(n), half_light_radius=float(re), trunc=8 * float(re), flux=flux,
                         flux_untruncated=True, gsparams=GSPARAMS)
    return prof.shear(q=float(q), beta=float(pa) * galsim.radians) if q < 0.999 else prof


def thick_disk(re: float, inclination: float, h_over_r: float, pa: float, flux: float = 1.0) -> galsim.GSObject:
    """Exponential disk (Freeman 1970) with a sech² vertical profile seen at ``inclination`` (rad).

    ``re`` is the face-on half-light radius (= 1.678 scale lengths). From 70° to edge-on, GalSim's
    InclinedExponential integrates the light along the line of sight, so edge-on disks get their
    true thin, flat shape. Below 70° the thickness barely matters and the disk is an exponential
    sheared to the Hubble (1926) axis ratio q² = cos² i + (h/r)² sin² i, which GalSim draws in real
    space, several times faster.
    """
    if inclination < math.radians(70.0):
        q = math.sqrt(math.cos(inclination) ** 2 + (h_over_r * math.sin(inclination)) ** 2)
        prof = galsim.Exponential(half_light_radius=float(re) * math.sqrt(q), flux=flux, gsparams=GSPARAMS)
        return prof.shear(q=q, beta=float(pa) * galsim.radians)
    prof = galsim.InclinedExponential(float(inclination) * galsim.radians, half_light_radius=float(re),
                                      scale_h_over_r=float(h_over_r), flux=flux, gsparams=GSPARAMS_DISK)
    return prof.rotate(float(pa) * galsim.radians)


def bar(length: float, q: float, angle_disk: float, inclination: float, pa: float, flux: float = 1.0):
    """A stellar bar of semi-major axis ``length`` (arcsec) and axis ratio q: elongated Sérsic n = 0.5
    components (a central one and two 'ansae' at ±0.55 length, giving the flat, sharp-ended profile
    of strong bars; Athanassoula 1992), at ``angle_disk`` (rad) in the disk plane, then projected like
    its disk (compressed by cos i across the line of nodes, rotated by the PA)."""
    parts = []
    for shift, sig, frac in ((0.0, 0.42, 0.5), (0.55, 0.28, 0.25), (-0.55, 0.28, 0.25)):
        sigma_major = sig * float(length)
        g = galsim.Sersic(n=0.5, half_light_radius=1.1774 * sigma_major * np.sqrt(q), flux=frac * flux,
                          gsparams=GSPARAMS)
        parts.append(g.shear(q=float(q), beta=0.0 * galsim.radians).shift(shift * float(length), 0.0))
    prof = galsim.Sum(parts).rotate(float(angle_disk) * galsim.radians)
    prof = prof.transform(1.0, 0.0, 0.0, float(np.cos(inclination)))
    return prof.rotate(float(pa) * galsim.radians)


def draw(profile: galsim.GSObject, canvas: Canvas, centre=(0.0, 0.0), oversample: int = 5,
         patch: int = 3) -> np.ndarray:
    """Render a profile (no PSF, no pixel) on the canvas, flux per pixel, centred at ``centre`` (arcsec).

    Analytic profiles are sampled at pixel centres, except a (2·patch+1)² block around the centre
    that is integrated over pixels at ``oversample``× resolution, so that unresolved cusps (small
    Sérsic bulges) keep their flux. k-space-only profiles (inclined disks) are drawn by FFT
    integrated over pixels (GalSim's ``no_pixel`` FFT loses flux for near edge-on disks whose
    k-space extent far exceeds the pixel Nyquist frequency); this adds a pixel-box blur (0.29 px
    rms) to disks, small next to the PSF.
    """
    img = canvas.image()
    off = (centre[0] / canvas.scale, centre[1] / canvas.scale)
    if profile.is_analytic_x:
        profile.drawImage(image=img, method="no_pixel", offset=off)
        arr = img.array.astype(np.float64)
        _integrate_core(profile, canvas, arr, off, oversample, patch)
        return arr
    profile.drawImage(image=img, method="auto", offset=off)
    return img.array.astype(np.float64)


def _integrate_core(profile, canvas: Canvas, arr: np.ndarray, off, s: int, h: int) -> None:
    c = (canvas.n - 1) / 2.0
    ix, iy = int(round(c + off[0])), int(round(c + off[1]))
    if not (h <= ix < canvas.n - h and h <= iy < canvas.n - h):
        return
    m = 2 * h + 1
    sub = galsim.ImageF(m * s, m * s, scale=canvas.scale / s)
    # the sub-image's true centre is the centre of pixel (ix, iy)
    sub_off = ((c + off[0] - ix) * s, (c + off[1] - iy) * s)
    profile.drawImage(image=sub, method="no_pixel", offset=sub_off)
    arr[iy - h:iy + h + 1, ix - h:ix + h + 1] = sub.array.reshape(m, s, m, s).sum(axis=(1, 3))


# --------------------------------------------------------------------------------------------
# Pixel-space structure
# --------------------------------------------------------------------------------------------
def disk_plane(canvas: Canvas, centre, pa: float, inclination: float):
    """Disk-plane polar coordinates (r arcsec, θ rad) of every canvas pixel, deprojecting a disk of
    position angle ``pa`` and inclination (cos i floored at 0.2)."""
    x, y = canvas.xy
    dx, dy = x - centre[0], y - centre[1]
    c, s = np.cos(pa), np.sin(pa)
    u = c * dx + s * dy
    v = (-s * dx + c * dy) / max(np.cos(inclination), 0.2)
    return np.hypot(u, v), np.arctan2(v, u)


def spiral_pattern(r, theta, m: int, pitch_deg: float, r_start: float, phase: float, sharpness: float):
    """A logarithmic spiral pattern with azimuthal mean 1 (Seigar & James 1998; Davis et al. 2012).

    Arms are the ridges of ``((1 + cos(m(θ - ln(r/r_start)/tan φ) - phase)) / 2) ** sharpness``:
    ``m`` arms of pitch angle φ; larger sharpness = narrower arms. At r = r_start the first ridge
    is at θ = phase / m (bar ends for barred spirals).
    """
    from scipy.special import gammaln

    lr = np.log(np.maximum(r, 1e-3 * r_start) / r_start)
    arg = m * (theta - lr / np.tan(np.radians(pitch_deg))) - phase
    norm = np.exp(gammaln(sharpness + 0.5) - gammaln(sharpness + 1.0)) / np.sqrt(np.pi)
    return ((1 + np.cos(arg)) / 2) ** sharpness / norm


def arm_envelope(r, r_in: float, r_out: float):
    """Radial weight of the arms: rises past r_in (bulge/bar), fades beyond r_out."""
    rise = 1 - np.exp(-((r / max(r_in, 1e-3)) ** 4))
    return rise * np.exp(-((r / r_out) ** 2))


def gaussian_blur(img: np.ndarray, sigma_pix: float) -> np.ndarray:
    """Periodic Gaussian blur of (…, n, n) via FFT (the canvas is padded, so wrap-around is harmless)."""
    n = img.shape[-1]
    k = np.fft.fftfreq(n)
    kr = np.fft.rfftfreq(n)
    g = np.exp(-2 * (np.pi * sigma_pix) ** 2 * (k[:, None] ** 2 + kr[None, :] ** 2))
    return np.fft.irfft2(np.fft.rfft2(img) * g, s=img.shape[-2:])


def random_field(rng: np.random.Generator, canvas: Canvas, corr_arcsec: float) -> np.ndarray:
    """A Gaussian random field of unit variance and correlation length ``corr_arcsec``."""
    f = gaussian_blur(rng.standard_normal((canvas.n, canvas.n)), max(corr_arcsec / canvas.scale, 0.5))
    return f / max(f.std(), 1e-12)


def splat(canvas: Canvas, x, y, weights) -> np.ndarray:
    """Point sources (arcsec positions, fluxes (K,) or (K, B)) dropped on the canvas by bilinear
    interpolation; returns (n, n) or (B, n, n)."""
    n = canvas.n
    w = np.asarray(weights, dtype=np.float64)
    w2 = w[:, None] if w.ndim == 1 else w
    nb = w2.shape[1]
    px = np.asarray(x, dtype=np.float64) / canvas.scale + (n - 1) / 2.0
    py = np.asarray(y, dtype=np.float64) / canvas.scale + (n - 1) / 2.0
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    xi = np.concatenate([x0, x0 + 1, x0, x0 + 1])
    yi = np.concatenate([y0, y0, y0 + 1, y0 + 1])
    f = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    ok = (xi >= 0) & (xi < n) & (yi >= 0) & (yi < n)
    idx = (yi * n + xi)[ok]
    wk = (f[:, None] * np.tile(w2, (4, 1)))[ok]  # (4K', B)
    flat = (np.arange(nb)[None, :] * n * n + idx[:, None]).ravel()
    out = np.bincount(flat, weights=wk.ravel(), minlength=nb * n * n).reshape(nb, n, n)
    return out[0] if w.ndim == 1 else out


def curve_points(start, angle0: float, length: float, curvature: float, r0: float, k: int = 120):
    """Points along a curved tidal tail / arc: a spiral-like path leaving ``start`` (arcsec) at
    polar angle ``angle0``, bending by ``curvature`` rad over its ``length``. Returns x, y, s∈[0,1]."""
    s = np.linspace(0.0, 1.0, k)
    rad = r0 + s * length
    ang = angle0 + curvature * s
    return start[0] + rad * np.cos(ang), start[1] + rad * np.sin(ang), s


def dust_lane(canvas: Canvas, centre, pa: float, inclination: float, length: float, width: float,
              side: float = 1.0) -> np.ndarray:
    """Optical-depth map (peak 1) of the dust lane of a near edge-on disk, as a foreground screen.

    A Gaussian band of σ ``width`` (arcsec) along the major axis, fading beyond ``length``: the
    silhouette of the thin dust layer against the bulge and inner disk. Away from exactly edge-on
    the lane is displaced towards the near side (``side`` = ±1) by ~0.15·length·cos i, as in the
    Sombrero galaxy; exactly edge-on it bisects the bulge.
    """
    x, y = canvas.xy
    dx, dy = x - centre[0], y - centre[1]
    c, s = np.cos(pa), np.sin(pa)
    u = c * dx + s * dy
    v = side * (-s * dx + c * dy)
    offset = 0.15 * length * np.cos(inclination)
    return np.exp(-0.5 * ((v - offset) / width) ** 2 - (u / length) ** 2)


def ring_image(canvas: Canvas, centre, radius: float, width: float, pa: float, inclination: float):
    """A (unnormalised) ring of ``radius`` and Gaussian ``width`` (arcsec) in an inclined disk plane."""
    r, _ = disk_plane(canvas, centre, pa, inclination)
    return np.exp(-0.5 * ((r - radius) / width) ** 2)


# --------------------------------------------------------------------------------------------
# Observation: PSF, convolution, noise
# --------------------------------------------------------------------------------------------
def psf_profile(kind: str, fwhm: float, beta: float = 3.5) -> galsim.GSObject:
    """A round PSF of ``fwhm``: ``moffat`` (Moffat 1969, ground-based coadds, with ``beta``),
    ``kolmogorov`` (atmospheric turbulence, long exposures) or ``airy`` (a diffraction-limited
    2.4 m mirror with HST's 33 % central obscuration)."""
    if kind == "moffat":
        return galsim.Moffat(beta=float(beta), fwhm=float(fwhm), gsparams=GSPARAMS)
    if kind == "kolmogorov":
        return galsim.Kolmogorov(fwhm=float(fwhm), gsparams=GSPARAMS)
    if kind == "airy":
        from galmo.simulate.surveys import AIRY_FWHM

        return galsim.Airy(lam_over_diam=float(fwhm) / AIRY_FWHM, obscuration=0.33, gsparams=GSPARAMS)
    raise ValueError(f"unknown PSF model {kind!r}")


def psf_image(canvas: Canvas, fwhm: float, beta: float, kind: str = "moffat") -> np.ndarray:
    """The PSF (:func:`psf_profile`) including the pixel response, unit sum, centred on pixel (n//2, n//2)."""
    img = canvas.image()
    off = 0.5 if canvas.n % 2 == 0 else 0.0
    prof = psf_profile(kind, fwhm, beta)
    if kind != "moffat" and fwhm < 1.5 * canvas.scale:  # with the pixel in k-space: a huge FFT
        return _pixel_integrated(prof, canvas, off, fwhm)
    prof.drawImage(image=img, method="auto", offset=(off, off))
    arr = img.array.astype(np.float64)
    return arr / arr.sum()


def _pixel_integrated(prof: galsim.GSObject, canvas: Canvas, off: float, fwhm: float, most: int = 9) -> np.ndarray:
    """A sub-pixel PSF integrated over the pixels: drawn in real space on an odd ``s``× finer grid
    (≥ 6 samples per FWHM, at most ``most``) and summed in s × s blocks; unit sum."""
    s = min(most, 2 * math.ceil(3 * canvas.scale / fwhm) + 1)
    n = canvas.n
    sub = galsim.ImageF(n * s, n * s, scale=canvas.scale / s)
    prof.drawImage(image=sub, method="no_pixel", offset=(off * s, off * s))
    arr = sub.array.astype(np.float64).reshape(n, s, n, s).sum(axis=(1, 3))
    return arr / arr.sum()


def quantise_fwhm(fwhm_arcsec: float, scale: float, lo: float = 0.9, hi: float = 1.6) -> float:
    """The seeing actually rendered: FWHM in pixels rounded on a 1 % geometric grid (kept within
    [lo, hi] arcsec), so that PSF kernels are shared between galaxies of different pixel scales."""
    k = round(math.log(fwhm_arcsec / scale) / 0.01)
    k += (math.exp(k * 0.01) * scale < lo) - (math.exp(k * 0.01) * scale > hi)
    return math.exp(k * 0.01) * scale


@lru_cache(maxsize=2048)
def psf_kernel(n: int, fwhm_pixels: float, beta: float, kind: str = "moffat") -> np.ndarray:
    """rfft2 (complex64) of the PSF on an n × n canvas, its FWHM in pixels; cached (use
    :func:`quantise_fwhm` so that seeing and pixel scale fall on a grid)."""
    kern = sfft.rfft2(np.fft.ifftshift(psf_image(Canvas(n, 1.0), fwhm_pixels, beta, kind))).astype(np.complex64)
    kern.setflags(write=False)
    return kern


def convolve(images: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Convolve (B, n, n) images with PSFs given as (B, n, n//2+1) rfft2 kernels (:func:`psf_kernel`),
    in single precision."""
    return sfft.irfft2(sfft.rfft2(images.astype(np.float32)) * kernels, s=images.shape[-2:])


def crop(images: np.ndarray, size: int) -> np.ndarray:
    n = images.shape[-1]
    a = (n - size) // 2
    return images[..., a:a + size, a:a + size]


def add_noise(rng: np.random.Generator, images: np.ndarray, sigma, gain) -> np.ndarray:
    """Sky-subtracted image + Gaussian sky noise σ and source Poisson noise (variance I/gain)."""
    var = np.asarray(sigma)[:, None, None] ** 2 + np.maximum(images, 0) / np.asarray(gain)[:, None, None]
    return images + rng.standard_normal(images.shape) * np.sqrt(var)


@dataclass
class Scene:
    """Everything in one cutout before the PSF.

    ``layers`` are r-band flux images (nanomaggies per pixel) with an SED (g/r, 1, z/r) each;
    ``points`` are unresolved sources (x, y arcsec, (K, 3) fluxes): field stars, star-forming knots;
    ``tau_g`` is the g-band dust optical depth map (other bands scale by DUST_TAU_RATIO);
    ``post`` are (bands, size, size) additions after the PSF (detector artefacts);
    ``band_matrix`` (bands, 3) turns g, r, z into the survey's bands (None: they are g, r, z), and
    ``observed`` are layers already in the survey's bands (satellite trails).
    """

    canvas: Canvas
    layers: list = field(default_factory=list)
    points: list = field(default_factory=list)
    tau_g: np.ndarray | None = None
    post: list = field(default_factory=list)
    band_matrix: np.ndarray | None = None
    observed: list = field(default_factory=list)

    def add(self, image: np.ndarray, sed: np.ndarray) -> None:
        self.layers.append((image, np.asarray(sed, dtype=np.float64)))

    def add_observed(self, image: np.ndarray, amplitudes: np.ndarray) -> None:
        """A layer with per-band amplitudes in the survey's own bands (in g, r, z: an ordinary layer)."""
        (self.layers if self.band_matrix is None else self.observed).append(
            (image, np.asarray(amplitudes, dtype=np.float64)))

    def add_points(self, x, y, fluxes) -> None:
        if len(np.atleast_1d(x)):
            self.points.append((np.atleast_1d(x), np.atleast_1d(y), np.atleast_2d(fluxes)))

    def add_dust(self, tau: np.ndarray) -> None:
        self.tau_g = tau if self.tau_g is None else self.tau_g + tau

    def intrinsic(self) -> np.ndarray:
        """(bands, n, n) fluxes in the survey's bands (g, r, z by default) before the PSF."""
        from galmo.simulate.physics import DUST_TAU_RATIO

        n = self.canvas.n
        out = np.zeros((3, n, n))
        for img, s in self.layers:
            out += s[:, None, None] * img[None]
        if self.tau_g is not None:
            out *= np.exp(-DUST_TAU_RATIO[:, None, None] * self.tau_g[None])
        for x, y, f in self.points:
            out += splat(self.canvas, x, y, f)
        if self.band_matrix is not None:
            out = np.tensordot(self.band_matrix, out, axes=1)
            for img, amp in self.observed:
                out += amp[:, None, None] * img[None]
        return out
