"""Survey presets of the simulator (``galmo simulate --survey``): how a galaxy is observed, as data.

A :class:`Survey` fixes the observation of every galaxy up to per-galaxy scatter: the bands, the
pixel and field of view (how much of the frame the galaxy fills), the PSF (model, FWHM, its scatter
and band-to-band ratios), the depth and sky brightness, the colour composite (plane weights, per-plane
gains, stretch), JPEG compression and the density of field stars and neighbours. ``decals`` is the
simulator's historical default (GZ DECaLS / Galaxy10 DECaLS) and reproduces it bit for bit. ``random``
(:class:`Mixture`) draws a new survey per galaxy from broad ranges spanning the others: domain
randomisation, so that a model trained on it can be applied to a survey it has not seen.

This module imports only the standard library (``galmo simulate --help`` reads the names).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from galmo.core.errors import GalmoError

# Effective wavelengths (nm) used to turn the simulator's g, r, z SEDs into any band by linear
# interpolation in wavelength (DECam and SDSS g, r, z are treated as one; HST ACS/WFC filters).
WAVELENGTH = {"g": 480.0, "r": 640.0, "i": 770.0, "z": 920.0, "F435W": 432.0, "F606W": 590.0, "F814W": 805.0}
SED_BANDS = ("g", "r", "z")
AIRY_FWHM = 0.9723  # FWHM of an Airy disk with a 33 % central obscuration (HST), in λ/D


@dataclass(frozen=True)
class Survey:
    """One survey's observing conditions (angles in arcsec, magnitudes AB)."""

    name: str
    bands: tuple[str, ...]          # bands observed, blue first (1–3)
    ref_band: str                   # the band whose FWHM and depth the catalog's psf_fwhm / depth report
    planes: tuple | None            # 3 display planes (blue, green, red) as weights of the bands; None: the bands
    native_pixel: float             # the detector / coadd pixel (sets the noise per output pixel)
    fov_per_r50: tuple[float, float]  # field of view in half-light radii, drawn per galaxy (lo, hi)
    fov_min: float                  # smallest field of view (arcsec)
    psf: str                        # moffat | kolmogorov | airy (GalSim profiles)
    fwhm: float                     # median FWHM of ref_band
    fwhm_scatter: float             # log-normal σ of that FWHM
    fwhm_range: tuple[float, float]  # every band's FWHM is kept within this range
    fwhm_ratio: dict                # band -> (lo, hi) of its FWHM / ref_band's
    depth: dict                     # band -> (lo, hi) 5σ point-source depth
    sky_mu: dict                    # band -> sky surface brightness (mag/arcsec²): sets the Poisson gain
    betas: tuple = (2.5, 3.5)       # Moffat β choices (half-integers have closed-form transforms) ...
    beta_p: tuple = (0.4, 0.6)      # ... and their probabilities
    jpeg_quality: tuple | None = None  # (lo, hi) Pillow quality of the JPEG composite; None: not compressed
    display_pixel: float = 0.262    # the composite is made of flux per this pixel (arcsec) ...
    rgb_gain: tuple = (1.0, 1.0, 1.0)  # ... times these per-plane gains on the Legacy Survey g, r, z scales
    rgb_q: float = 20.0             # arcsinh softening of the composite
    star_density: float = 1.0       # field stars and neighbours relative to high-latitude DECaLS fields
    neighbour_density: float = 1.0

    def realise(self, rng) -> "Survey":
        """The survey of one galaxy (a fixed preset is its own)."""
        return self

    def draw_fov_per_r50(self, rng) -> float:
        lo, hi = self.fov_per_r50
        return lo if lo == hi else float(rng.uniform(lo, hi))

    def draw_quality(self, rng) -> int:
        """JPEG quality of one galaxy's composite (0: not compressed)."""
        return 0 if self.jpeg_quality is None else int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))

    def band_matrix(self):
        """(len(bands), 3) weights turning g, r, z fluxes into this survey's bands (None for g, r, z)."""
        if tuple(self.bands) == SED_BANDS:
            return None
        import numpy as np

        return np.array([_interp_weights(WAVELENGTH[b]) for b in self.bands])

    def plane_matrix(self):
        """(3, len(bands)) weights of the display planes (None: the bands are the planes)."""
        if self.planes is None:
            return None
        import numpy as np

        return np.array(self.planes, dtype=np.float64)

    def plane_names(self) -> tuple[str, ...]:
        if self.planes is None:
            return tuple(self.bands)
        return tuple("+".join(b for b, w in zip(self.bands, row) if w) for row in self.planes)


def _interp_weights(lam: float) -> list[float]:
    """Weights on (g, r, z) interpolating linearly in wavelength (flat beyond g and z)."""
    lams = [WAVELENGTH[b] for b in SED_BANDS]
    lam = min(max(lam, lams[0]), lams[-1])
    w = [0.0, 0.0, 0.0]
    k = 0 if lam <= lams[1] else 1
    t = (lam - lams[k]) / (lams[k + 1] - lams[k])
    w[k], w[k + 1] = 1.0 - t, t
    return w


DECALS = Survey(
    name="decals", bands=("g", "r", "z"), ref_band="r", planes=None, native_pixel=0.262,
    fov_per_r50=(424 * 0.02, 424 * 0.02), fov_min=424 * 0.1, psf="moffat", fwhm=1.2, fwhm_scatter=0.12,
    fwhm_range=(0.9, 1.6), fwhm_ratio={"g": (1.02, 1.12), "z": (0.88, 0.98)},
    depth={"g": (24.1, 24.8), "r": (23.5, 23.9), "z": (22.6, 23.2)}, sky_mu={"g": 22.0, "r": 20.9, "z": 18.5})

SDSS = Survey(
    name="sdss", bands=("g", "r", "i"), ref_band="r", planes=None, native_pixel=0.396,
    fov_per_r50=(12.0, 16.0), fov_min=50.0, psf="kolmogorov", fwhm=1.4, fwhm_scatter=0.15,
    fwhm_range=(1.0, 2.0), fwhm_ratio={"g": (1.04, 1.12), "i": (0.92, 0.98)},
    depth={"g": (22.4, 22.9), "r": (22.1, 22.5), "i": (21.5, 22.0)}, sky_mu={"g": 22.0, "r": 20.9, "i": 20.2},
    jpeg_quality=(70, 95), display_pixel=0.3, rgb_gain=(1.0, 1.0, 3.0 / 2.2), rgb_q=12.0)

HST = Survey(
    name="hst", bands=("F606W", "F814W"), ref_band="F814W", planes=((1.0, 0.0), (0.5, 0.5), (0.0, 1.0)),
    native_pixel=0.05, fov_per_r50=(5.0, 7.0), fov_min=12.0, psf="airy", fwhm=0.10, fwhm_scatter=0.08,
    fwhm_range=(0.08, 0.14), fwhm_ratio={"F606W": (0.85, 0.95)},
    depth={"F606W": (27.8, 28.4), "F814W": (27.4, 28.0)}, sky_mu={"F606W": 22.9, "F814W": 22.4},
    jpeg_quality=(75, 95), display_pixel=0.2, rgb_gain=(0.58, 0.95, 1.18), rgb_q=20.0, neighbour_density=2.5)

# a single broad band (COSMOS-like F814W), grey: one of the families the mixture draws
HST_MONO = dataclasses.replace(
    HST, name="hst-mono", bands=("F814W",), planes=((1.0,), (1.0,), (1.0,)), fwhm_ratio={},
    depth={"F814W": (27.2, 27.8)}, sky_mu={"F814W": 22.4}, rgb_gain=(1.0, 1.0, 1.0))


@dataclass(frozen=True)
class Mixture:
    """``random``: each galaxy gets its own survey. The bands, sky and colour recipe come from one of
    ``families``; the PSF, depth, framing, stretch, JPEG and field density are drawn from ranges
    spanning (and exceeding) the presets'."""

    name: str = "random"
    families: tuple = (DECALS, SDSS, HST, HST_MONO)
    fwhm: tuple = (0.08, 2.0)          # ref-band FWHM, log-uniform; below airy_below: a space PSF
    airy_below: float = 0.35
    depth_shift: tuple = (-1.2, 1.0)   # mag added to the family's depth range (at the family's seeing)
    native_pixel: tuple = (0.03, 0.45)  # log-uniform
    fov_per_r50: tuple = (4.5, 18.0)   # log-uniform
    fov_min: tuple = (10.0, 60.0)      # log-uniform
    jpeg_none: float = 0.25            # probability of no compression, else quality uniform in jpeg_quality
    jpeg_quality: tuple = (40, 98)
    gain_scatter: float = 0.2          # log-normal σ of each display plane's gain
    display_scale: tuple = (0.6, 1.5)  # log-uniform factor on the family's display pixel
    rgb_q: tuple = (6.0, 30.0)         # log-uniform
    density: tuple = (0.25, 4.0)       # log-uniform factor on stars and on neighbours

    def realise(self, rng) -> Survey:
        base = self.families[int(rng.integers(len(self.families)))]
        fwhm = _log_uniform(rng, self.fwhm)
        psf = "airy" if fwhm < self.airy_below else ("moffat", "kolmogorov")[int(rng.integers(2))]
        # the family's sky (surface-brightness noise) shifted by depth_shift: a point source's depth
        # follows the PSF (noise-equivalent area ∝ FWHM²)
        shift = float(rng.uniform(*self.depth_shift)) - 2.5 * math.log10(fwhm / base.fwhm)
        q = None if rng.uniform() < self.jpeg_none else (int(rng.integers(self.jpeg_quality[0],
                                                                          self.jpeg_quality[1] + 1)),) * 2
        k = _log_uniform(rng, self.fov_per_r50)
        return dataclasses.replace(
            base, name=self.name, psf=psf, fwhm=fwhm, fwhm_scatter=0.0, fwhm_range=(0.5 * fwhm, 2.0 * fwhm),
            depth={b: (lo + shift, hi + shift) for b, (lo, hi) in base.depth.items()},
            native_pixel=_log_uniform(rng, self.native_pixel), fov_per_r50=(k, k),
            fov_min=_log_uniform(rng, self.fov_min), jpeg_quality=q,
            rgb_gain=tuple(g * math.exp(rng.normal(0, self.gain_scatter)) for g in base.rgb_gain),
            display_pixel=base.display_pixel * _log_uniform(rng, self.display_scale),
            rgb_q=_log_uniform(rng, self.rgb_q), star_density=base.star_density * _log_uniform(rng, self.density),
            neighbour_density=base.neighbour_density * _log_uniform(rng, self.density))


def _log_uniform(rng, lo_hi) -> float:
    lo, hi = lo_hi
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


SURVEYS = {"decals": DECALS, "sdss": SDSS, "hst": HST, "random": Mixture()}
SURVEY_NAMES = tuple(SURVEYS)


def get_survey(name) -> Survey | Mixture:
    """The preset called ``name`` (``decals``, ``sdss``, ``hst`` or ``random``)."""
    key = str(name).strip().lower() if isinstance(name, str) else name
    if key not in SURVEYS:
        raise GalmoError(f"simulate: unknown survey {name!r}; choose one of {', '.join(SURVEY_NAMES)}")
    return SURVEYS[key]


def survey_with_planes(planes) -> Survey | None:
    """The fixed preset whose display planes are named ``planes`` (e.g. ``('g', 'r', 'i')``), or None."""
    planes = tuple(planes)
    return next((s for s in SURVEYS.values() if isinstance(s, Survey) and s.plane_names() == planes), None)
