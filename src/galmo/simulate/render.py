"""One galaxy from seed to pixels: recipe → scene → PSF → noise → colour composite → votes.

Every random number of galaxy ``index`` comes from generators seeded by ``(seed, index, stream)``,
so a galaxy does not depend on which worker draws it or on the other galaxies. Separate streams
keep the galaxy itself identical whether or not it receives an anomaly.
"""

from __future__ import annotations

import math

import numpy as np

from galmo.core.schema import GALAXY10_CLASSES
from galmo.simulate import physics as ph
from galmo.simulate import profiles as pr
from galmo.simulate.anomalies import inject
from galmo.simulate.classes import build
from galmo.simulate.votes import sample_votes
from galmo.core.transforms import legacy_rgb, to_uint8

STREAM_GALAXY, STREAM_SEEING, STREAM_ANOMALY, STREAM_NOISE, STREAM_SKY, STREAM_VOTES = range(6)


def rng_for(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index), int(stream)])))


def galaxy_id(index: int) -> str:
    return f"sim{index:06d}"


def render_galaxy(seed: int, index: int, cls: int, size: int, anomaly: str = "") -> dict:
    """Simulate galaxy ``index``: returns ``noiseless`` and ``flux`` (3, size, size) float32 in
    nanomaggies per pixel, ``image`` (size, size, 3) uint8, ``truth`` (dict) and ``votes`` (37,)
    per-question vote fractions (the driver converts them to cumulative ones in one go)."""
    b = build(rng_for(seed, index, STREAM_GALAXY), cls, size)
    cond = ph.draw_conditions(rng_for(seed, index, STREAM_SEEING))
    scale = b.scene.canvas.scale
    cond["fwhm"] = {band: pr.quantise_fwhm(f, scale) for band, f in cond["fwhm"].items()}
    sigma, gain = ph.noise_model(cond, scale)
    if anomaly:
        b.rng = rng_for(seed, index, STREAM_ANOMALY)
        inject(anomaly, b, sigma)
    canvas = b.scene.canvas
    kernels = np.stack([pr.psf_kernel(canvas.n, round(cond["fwhm"][band] / scale, 9), cond["beta"])
                        for band in ph.BANDS])
    model = pr.crop(pr.convolve(b.scene.intrinsic(), kernels), size)
    for extra in b.scene.post:
        model = model + extra
    flux = pr.add_noise(rng_for(seed, index, STREAM_NOISE), model, sigma, gain)
    rgb = to_uint8(legacy_rgb(flux * (ph.NATIVE_PIXEL / scale) ** 2, bands=ph.BANDS))
    truth = _truth(b, cls, index, cond, sigma, anomaly, rng_for(seed, index, STREAM_SKY))
    cond, truth["n_volunteers"] = sample_votes(rng_for(seed, index, STREAM_VOTES), truth)
    return {"noiseless": model.astype(np.float32), "flux": flux.astype(np.float32), "image": rgb, "truth": truth,
            "votes": cond}


def _truth(b, cls, index, cond, sigma, anomaly, rng) -> dict:
    t = {"id": galaxy_id(index), "class": int(cls), "class_name": GALAXY10_CLASSES[cls]}
    t["ra"] = float(rng.uniform(0, 360))
    t["dec"] = float(np.degrees(np.arcsin(rng.uniform(math.sin(math.radians(-20)), math.sin(math.radians(35))))))
    t.update(b.truth)
    for k, band in enumerate(ph.BANDS):
        t[f"flux_{band}"] = float(b.band_flux[k])
        t[f"mag_{band}"] = float(ph.flux_to_mag(b.band_flux[k]))
    for k, band in enumerate(ph.BANDS):
        t[f"psf_fwhm_{band}"] = cond["fwhm"][band]
    t["psf_beta"] = cond["beta"]
    for k, band in enumerate(ph.BANDS):
        t[f"sky_noise_{band}"] = float(sigma[k])
        t[f"depth_{band}"] = cond["depth"][band]
    t["is_anomaly"] = bool(anomaly)
    t["anomaly_type"] = anomaly
    return t


def render_chunk(job: tuple) -> dict:
    """Worker entry point: ``job = (seed, size, indices, classes, anomalies)`` → stacked arrays."""
    seed, size, indices, classes, anomalies = job
    outs = [render_galaxy(seed, i, c, size, a) for i, c, a in zip(indices, classes, anomalies)]
    return {"start": int(indices[0]),
            "noiseless": np.stack([o["noiseless"] for o in outs]),
            "flux": np.stack([o["flux"] for o in outs]),
            "image": np.stack([o["image"] for o in outs]),
            "truth": [o["truth"] for o in outs],
            "votes": np.stack([o["votes"] for o in outs])}


def noiseless_display(flux: np.ndarray, pxscale=None, bands=ph.BANDS) -> np.ndarray:
    """The ``image`` kind of noise-free fluxes (N, 3, H, W): the colour composite :func:`render_galaxy`
    stores, at the pixel scales ``pxscale`` (N,) arcsec (None: the native :data:`physics.NATIVE_PIXEL`),
    as uint8 levels, returned as float32 planes in band order (B, G, R) in [0, 1] like the stored images."""
    flux = np.asarray(flux, dtype=np.float32)
    if pxscale is not None:  # the composite is made of flux per native pixel
        flux = flux * ((ph.NATIVE_PIXEL / np.asarray(pxscale, dtype=np.float32)) ** 2)[:, None, None, None]
    rgb = to_uint8(legacy_rgb(flux, bands=bands)).astype(np.float32) / 255
    return np.moveaxis(rgb[..., ::-1], -1, 1).astype(np.float32)
