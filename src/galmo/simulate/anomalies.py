"""Injected anomalies for outlier-detection experiments; the galaxy keeps its class.

* ``satellite_trail``: a straight, PSF-wide streak across the cutout in one or two bands (a
  satellite or aircraft crossing one exposure of the coadd).
* ``cosmic_rays``: a few sharp, un-convolved single-band hits and short tracks left in the coadd.
* ``ring``: a blue star-forming ring (collisional / resonance ring galaxy) at 1.2–2.2 R50 holding
  20–40 % of the galaxy's flux.
* ``lensed_arc``: a thin, tangentially stretched blue arc (r 18–19.5, and a faint counter-image) at
  an Einstein radius of max(2″, 1.3–2.2 R50), a galaxy–galaxy strong lens made easy to see.
"""

from __future__ import annotations

import math

import numpy as np

from galmo.simulate import physics as ph
from galmo.simulate import profiles as pr
from galmo.simulate.run import ANOMALY_TYPES  # noqa: F401  (the names, defined galsim-free)


def inject(kind: str, b, sigma: np.ndarray) -> None:
    """Add anomaly ``kind`` to the builder's scene (``sigma``: sky noise per pixel in each of the survey's bands)."""
    {"satellite_trail": _trail, "cosmic_rays": _cosmic_rays, "ring": _ring, "lensed_arc": _arc}[kind](b, sigma)


def _trail(b, sigma):
    rng, canvas = b.rng, b.scene.canvas
    x, y = canvas.xy
    ang = rng.uniform(0, np.pi)
    dist = np.abs(-math.sin(ang) * x + math.cos(ang) * y - rng.uniform(-0.3, 0.3) * b.size * canvas.scale)
    w = 0.5 * canvas.scale  # σ of the streak before the PSF: unresolved
    line = np.exp(-0.5 * (dist / w) ** 2) / (math.sqrt(2 * math.pi) * 0.5)  # unit flux per pixel of length
    nb = len(sigma)
    bands = rng.choice(nb, size=int(rng.integers(1, min(3, nb + 1))), replace=False)
    amp = np.zeros(nb)
    amp[bands] = sigma[bands] * rng.uniform(10, 40)
    b.scene.add_observed(line, amp)  # absolute amplitudes in the survey's bands


def _cosmic_rays(b, sigma):
    rng, size = b.rng, b.size
    post = np.zeros((len(sigma), size, size))
    for _ in range(int(rng.integers(3, 12))):
        band = int(rng.integers(0, len(sigma)))
        length = int(rng.integers(1, 7))
        x0, y0 = rng.uniform(0, size, 2)
        ang = rng.uniform(0, 2 * np.pi)
        t = np.arange(length)
        xi = np.clip((x0 + t * math.cos(ang)).astype(int), 0, size - 1)
        yi = np.clip((y0 + t * math.sin(ang)).astype(int), 0, size - 1)
        post[band, yi, xi] += sigma[band] * rng.uniform(15, 120)
    b.scene.post.append(post)


def _ring(b, sigma):
    rng, t = b.rng, b.truth
    inc = math.radians(t["inclination_deg"]) if np.isfinite(t["inclination_deg"]) else math.acos(rng.uniform(0.4, 1))
    pa = math.radians(t["pa_deg"]) if np.isfinite(t["pa_deg"]) else rng.uniform(0, np.pi)
    radius = t["r50_arcsec"] * rng.uniform(1.2, 2.2)
    ring = pr.ring_image(b.scene.canvas, (0.0, 0.0), radius, 0.08 * radius, pa, min(inc, math.radians(70)))
    flux = b.flux_r * rng.uniform(0.2, 0.4)
    ring *= np.exp(0.5 * pr.random_field(rng, b.scene.canvas, 0.1 * radius))
    b.scene.add(ring * flux / ring.sum(), ph.sed(rng, "young", b.z))
    t["ring_radius_arcsec"] = radius


def _arc(b, sigma):
    rng, canvas = b.rng, b.scene.canvas
    theta_e = max(2.0, rng.uniform(1.3, 2.2) * b.truth["r50_arcsec"])
    phi0 = rng.uniform(0, 2 * np.pi)
    span = math.radians(rng.uniform(40, 140))
    k = 200
    phi = phi0 + np.linspace(-span / 2, span / 2, k)
    w = np.exp(-0.5 * (np.linspace(-2, 2, k)) ** 2)
    flux = ph.mag_to_flux(rng.uniform(18.0, 19.5))
    x = np.concatenate([theta_e * np.cos(phi), [-0.6 * theta_e * math.cos(phi0)]])
    y = np.concatenate([theta_e * np.sin(phi), [-0.6 * theta_e * math.sin(phi0)]])
    w = np.concatenate([w / w.sum() * 0.85, [0.15]]) * flux
    img = pr.gaussian_blur(pr.splat(canvas, x, y, w), max(0.15 / canvas.scale, 0.4))
    b.scene.add(img, ph.sed_from_colours(rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5)))
