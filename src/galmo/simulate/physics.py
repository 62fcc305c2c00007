"""Astrophysics and survey constants of the simulator: cosmology, selection, sizes, colours, depth.

Everything here is plain numpy and cheap. Units: arcsec, kpc, AB magnitudes, nanomaggies
(``mag = 22.5 - 2.5 log10(flux)``).

References
----------
* Cosmology: flat ΛCDM, H0 = 70 km/s/Mpc, Ωm = 0.3 (the usual "concordance" values).
* Selection: the SDSS Main Galaxy Sample limit r < 17.77 (Strauss et al. 2002), which defines the
  Galaxy Zoo / GZ DECaLS parents; redshifts 0.02–0.15.
* Luminosity–size relations: Shen et al. (2003) (R50 ∝ L^0.6 early types, ∝ L^0.3 late types),
  consistent with Lange et al. (2015) size–mass slopes.
* Colours: red sequence / blue cloud of SDSS (Strateva et al. 2001; Blanton & Moustakas 2009),
  shifted with redshift to mimic observed-frame k-corrections.
* Depth: DECaLS 5σ point-source depths g≈24.0–24.8, r≈23.4–23.9, z≈22.5–23.2 (Dey et al. 2019),
  pixel 0.262″; sky brightness of CTIO dark time.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import ndtr, ndtri

from galmo.simulate.surveys import DECALS

BANDS = ("g", "r", "z")
NATIVE_PIXEL = DECALS.native_pixel  # DECam / Legacy Surveys pixel, 0.262 arcsec
R_LIMIT = 17.8  # selection limit (SDSS MGS r < 17.77)
R_BRIGHT = 12.0  # nothing brighter than this in the parent sample
Z_MIN, Z_MAX = 0.02, 0.15
H0, OMEGA_M = 70.0, 0.3

# The DECaLS depth (per band, (lo, hi) of the 5σ point-source AB magnitude; Dey et al. 2019, DR8/DR9
# medians), dark-sky brightness at CTIO and seeing are the ``decals`` preset of ``surveys.py``.
# Relative dust optical depth per band for a Milky-Way-like law (Cardelli et al. 1989 at the DECam
# effective wavelengths 480, 640, 920 nm), normalised to g.
DUST_TAU_RATIO = np.array([1.0, 0.72, 0.42])

# Galaxy10 DECaLS images come from GZ DECaLS cutouts: 424 px at pixscale
# max(0.02 × petroR50, 0.1″) (Walmsley et al. 2022), i.e. a field of view of
# max(8.48 × R50, 42.4″), later resized. We keep that field of view for any output size.
FOV_PER_R50 = DECALS.fov_per_r50[0]  # 424 × 0.02
FOV_MIN = DECALS.fov_min  # 424 × 0.1


# --------------------------------------------------------------------------------------------
# Cosmology
# --------------------------------------------------------------------------------------------
# astropy's flat ΛCDM, tabulated once on a fine grid in z and linearly interpolated: the simulator asks
# for distances per galaxy, and an astropy call per scalar costs far more than np.interp. (Recipe 1.4
# integrated E(z) by hand; the two agree to 3e-8, which still moved one uint8 level in ~10 % of the
# default sample's pixels, hence recipe 1.5.)
@lru_cache(maxsize=1)
def _cosmology():
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=H0, Om0=OMEGA_M, Tcmb0=0.0)


@lru_cache(maxsize=1)
def _comoving_table():
    z = np.linspace(0.0, 0.4, 4001)
    cosmo = _cosmology()
    return z, cosmo.comoving_distance(z).to_value("Mpc"), cosmo.efunc(z)


def comoving_distance(z):
    """Line-of-sight comoving distance in Mpc."""
    zt, dc, _ = _comoving_table()
    return np.interp(z, zt, dc)


def angular_diameter_distance(z):
    """Angular-diameter distance in Mpc."""
    return comoving_distance(z) / (1 + np.asarray(z))


def distance_modulus(z):
    """m - M for luminosity distance D_L = (1+z) D_C (no k-correction)."""
    dl = comoving_distance(z) * (1 + np.asarray(z))
    return 5 * np.log10(dl * 1e6 / 10.0)


def kpc_per_arcsec(z):
    return angular_diameter_distance(z) * 1e3 * np.pi / (180 * 3600)


# --------------------------------------------------------------------------------------------
# Selection: redshift and luminosity of a magnitude-limited sample
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _z_cdf(mu: float, sigma: float):
    """CDF over z of dV/dz × P(galaxy with M ~ N(mu, sigma) passes R_BRIGHT < m < R_LIMIT)."""
    z = np.linspace(Z_MIN, Z_MAX, 600)
    zt, dc, ez = _comoving_table()
    dvdz = np.interp(z, zt, dc) ** 2 / np.interp(z, zt, ez)
    dm = distance_modulus(z)
    p = ndtr((R_LIMIT - dm - mu) / sigma) - ndtr((R_BRIGHT - dm - mu) / sigma)
    w = dvdz * p
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(z))])
    return z, cdf / cdf[-1]


def draw_redshift_and_absmag(rng: np.random.Generator, mu: float, sigma: float):
    """Redshift and absolute r magnitude of one galaxy of a magnitude-limited sample.

    The luminosity function of the class is a Gaussian N(mu, sigma) in M_r; z follows the comoving
    volume weighted by the fraction of that luminosity function brighter than r = 17.8 (Malmquist
    selection), and M_r is drawn from the Gaussian truncated to the selection window at that z.
    """
    zg, cdf = _z_cdf(float(mu), float(sigma))
    z = float(np.interp(rng.uniform(), cdf, zg))
    dm = float(distance_modulus(z))
    lo = ndtr((R_BRIGHT - dm - mu) / sigma)
    hi = ndtr((R_LIMIT - dm - mu) / sigma)
    u = lo + (hi - lo) * rng.uniform(0.001, 0.999)
    return z, float(mu + sigma * ndtri(u))


def half_light_kpc(rng: np.random.Generator, absmag: float, early: bool) -> float:
    """Half-light radius (kpc) from the luminosity–size relation (Shen et al. 2003), with scatter."""
    if early:
        logr = np.log10(3.0) - 0.4 * 0.60 * (absmag + 21.0) + rng.normal(0, 0.11)
    else:
        logr = np.log10(4.5) - 0.4 * 0.30 * (absmag + 21.0) + rng.normal(0, 0.14)
    return float(10 ** logr)


# --------------------------------------------------------------------------------------------
# Colours (observed frame) as SEDs: flux ratios (g/r, 1, z/r)
# --------------------------------------------------------------------------------------------
# (g-r at z=0, d(g-r)/dz, r-z at z=0, d(r-z)/dz, scatter)
POPULATIONS = {
    "old": (0.74, 1.1, 0.40, 0.6, 0.03),      # bulges, ellipticals, bars: red sequence
    "disk": (0.50, 0.7, 0.30, 0.4, 0.05),     # disks: between
    "young": (0.30, 0.4, 0.18, 0.2, 0.05),    # spiral-arm light: blue cloud
    "hii": (0.05, 0.2, 0.0, 0.1, 0.08),       # star-forming knots (emission lines): bluest
}


def colours(rng: np.random.Generator, population: str, z: float) -> tuple[float, float]:
    """(g-r, r-z) of a stellar population at redshift z, with scatter."""
    gr0, dgr, rz0, drz, s = POPULATIONS[population]
    return gr0 + dgr * z + rng.normal(0, s), rz0 + drz * z + rng.normal(0, s)


def sed_from_colours(gr: float, rz: float) -> np.ndarray:
    """Flux ratios (g/r, 1, z/r) for colours g-r and r-z."""
    return np.array([10 ** (-0.4 * gr), 1.0, 10 ** (0.4 * rz)])


def sed(rng: np.random.Generator, population: str, z: float) -> np.ndarray:
    return sed_from_colours(*colours(rng, population, z))


def mag_to_flux(mag):
    return 10 ** (-0.4 * (np.asarray(mag, dtype=float) - 22.5))


def flux_to_mag(flux):
    return 22.5 - 2.5 * np.log10(np.maximum(np.asarray(flux, dtype=float), 1e-30))


# --------------------------------------------------------------------------------------------
# Observing conditions
# --------------------------------------------------------------------------------------------
def moffat_nea(fwhm: float, beta: float) -> float:
    """Noise-equivalent area (arcsec²) of a Moffat PSF: 1 / ∫ p² dA = π α² (2β-1) / (β-1)²."""
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    return float(np.pi * alpha**2 * (2 * beta - 1) / (beta - 1) ** 2)


def psf_nea(kind: str, fwhm: float, beta: float) -> float:
    """Noise-equivalent area (arcsec²) of a round PSF of ``kind`` (moffat: closed form; kolmogorov,
    airy: their shape does not depend on the FWHM, so FWHM² × the area at FWHM 1″, from a finely
    sampled GalSim image drawn once per kind)."""
    if kind == "moffat":
        return moffat_nea(fwhm, beta)
    return float(fwhm) ** 2 * _unit_nea(kind)


@lru_cache(maxsize=None)
def _unit_nea(kind: str) -> float:
    from galmo.simulate.profiles import psf_profile

    scale = 0.1
    img = psf_profile(kind, 1.0).drawImage(nx=256, ny=256, scale=scale, method="no_pixel").array
    p = img / img.sum()
    return float(scale**2 / (p**2).sum())


def draw_conditions(rng: np.random.Generator, survey=None) -> dict:
    """Seeing (round PSF: FWHM per band, Moffat β) and depth of one cutout of ``survey`` (default DECaLS).

    The reference band's FWHM is log-normal around the survey's median (DECaLS r: 1.2″, median
    ≈ 1.2–1.3″); the other bands are a drawn ratio of it (DECaLS g 2–12 % worse, z 2–12 % better:
    seeing ∝ λ^-0.2), all within the survey's range (DECaLS 0.9–1.6″).
    """
    s = survey or DECALS
    ref = round(float(np.clip(s.fwhm * np.exp(rng.normal(0, s.fwhm_scatter)), *s.fwhm_range)), 2)
    fwhm = {b: ref if b == s.ref_band else round(float(np.clip(ref * rng.uniform(*s.fwhm_ratio[b]), *s.fwhm_range)), 2)
            for b in s.bands}
    # Moffat β of DECam coadd PSFs ≈ 2.5–4; half-integer β have closed-form Fourier transforms in
    # GalSim (others need a slow numerical Hankel transform per PSF), so β is 2.5 or 3.5.
    beta = float(rng.choice(s.betas, p=s.beta_p)) if s.psf == "moffat" else math.nan
    depth = {b: float(rng.uniform(*s.depth[b])) for b in s.bands}
    return {"fwhm": fwhm, "beta": beta, "depth": depth, "psf": s.psf}


def noise_model(cond: dict, pxscale: float, survey=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band sky noise σ (nanomaggies per output pixel) and gain (electrons per nanomaggy).

    σ at the native pixel (DECaLS 0.262″) follows from the 5σ point-source depth and the PSF
    noise-equivalent area; an output pixel of ``pxscale`` ≥ native integrates (pxscale/native)² native
    pixels, a finer one interpolates (same surface-brightness noise, correlations ignored). The gain is
    set so that the sky (the survey's sky_mu) is Poisson with that variance, so source Poisson noise is I/gain.
    """
    s = survey or DECALS
    native = s.native_pixel
    ratio = pxscale / native
    per_pixel = ratio * min(1.0, ratio)
    sig, gain = [], []
    for b in s.bands:
        f5 = mag_to_flux(cond["depth"][b])
        nea_px = psf_nea(cond.get("psf", "moffat"), cond["fwhm"][b], cond["beta"]) / native**2
        s_native = f5 / (5 * np.sqrt(nea_px))
        sky_native = mag_to_flux(s.sky_mu[b]) * native**2
        sig.append(s_native * per_pixel)
        gain.append(sky_native / s_native**2)
    return np.array(sig), np.array(gain)


def pixel_scale(r50_arcsec: float, size: int, per_r50: float = FOV_PER_R50, fov_min: float = FOV_MIN) -> float:
    """Arcsec per output pixel: the field of view max(per_r50 × R50, fov_min) over ``size`` px (by
    default GZ DECaLS': max(8.48 R50, 42.4″)).

    The field of view is rounded up to a 2 % geometric grid, so that PSF images can be cached.
    """
    fov = max(per_r50 * r50_arcsec, fov_min)
    k = math.ceil(round(math.log(fov / fov_min) / math.log(1.02), 9))
    return fov_min * 1.02**k / size
