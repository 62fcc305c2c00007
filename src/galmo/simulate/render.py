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
from galmo.simulate.surveys import get_survey, survey_with_planes
from galmo.simulate.votes import sample_votes
from galmo.core.transforms import legacy_rgb, to_uint8

STREAM_GALAXY, STREAM_SEEING, STREAM_ANOMALY, STREAM_NOISE, STREAM_SKY, STREAM_VOTES, STREAM_SURVEY = range(7)


def rng_for(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index), int(stream)])))


def galaxy_id(index: int) -> str:
    return f"sim{index:06d}"


def render_galaxy(seed: int, index: int, cls: int, size: int, anomaly: str = "", survey: str = "decals") -> dict:
    """Simulate galaxy ``index`` as ``survey`` sees it: returns ``noiseless`` and ``flux`` (3, size, size)
    float32 in nanomaggies per pixel (the three display planes), ``image`` (size, size, 3) uint8,
    ``truth`` (dict) and ``votes`` (37,) per-question vote fractions (the driver converts them to
    cumulative ones in one go). The galaxy itself does not depend on the survey."""
    obs_rng = rng_for(seed, index, STREAM_SURVEY)
    s = get_survey(survey).realise(obs_rng)
    fov = (s.draw_fov_per_r50(obs_rng), s.fov_min)
    b = build(rng_for(seed, index, STREAM_GALAXY), cls, size, fov, (s.star_density, s.neighbour_density))
    b.scene.band_matrix = s.band_matrix()
    cond = ph.draw_conditions(rng_for(seed, index, STREAM_SEEING), s)
    scale = b.scene.canvas.scale
    cond["fwhm"] = {band: pr.quantise_fwhm(f, scale, *s.fwhm_range) for band, f in cond["fwhm"].items()}
    sigma, gain = ph.noise_model(cond, scale, s)
    if anomaly:
        b.rng = rng_for(seed, index, STREAM_ANOMALY)
        inject(anomaly, b, sigma)
    model = _observe(b.scene, cond, s.bands, size)
    flux = pr.add_noise(rng_for(seed, index, STREAM_NOISE), model, sigma, gain)
    model, flux = _planes(model, s), _planes(flux, s)
    quality = s.draw_quality(obs_rng)
    rgb = survey_composite(flux, scale, s, quality)
    truth = _truth(b, cls, index, cond, sigma, anomaly, rng_for(seed, index, STREAM_SKY))
    truth.update(_survey_truth(s, cond, sigma, fov, quality, scale, size))
    cond, truth["n_volunteers"] = sample_votes(rng_for(seed, index, STREAM_VOTES), truth)
    return {"noiseless": model.astype(np.float32), "flux": flux.astype(np.float32), "image": rgb, "truth": truth,
            "votes": cond}


def _observe(scene, cond: dict, bands, size: int) -> np.ndarray:
    """The scene through the PSF of each band, cropped to the cutout, plus the post-PSF artefacts."""
    n, scale = scene.canvas.n, scene.canvas.scale
    beta = cond["beta"] if cond["psf"] == "moffat" else 0.0  # (a NaN β would defeat the kernel cache)
    kernels = np.stack([pr.psf_kernel(n, round(cond["fwhm"][band] / scale, 9), beta, cond["psf"])
                        for band in bands])
    model = pr.crop(pr.convolve(scene.intrinsic(), kernels), size)
    for extra in scene.post:
        model = model + extra
    return model


def _planes(images: np.ndarray, s) -> np.ndarray:
    """The survey's bands as the three display planes (two bands: blue, mean, red; one: grey)."""
    m = s.plane_matrix()
    return images if m is None else np.tensordot(m, images, axes=1)


def survey_composite(flux: np.ndarray, pxscale: float, s, quality: int = 0) -> np.ndarray:
    """The (H, W, 3) uint8 colour composite of three planes (N…, 3, H, W) of ``flux``: the Legacy Survey
    arcsinh recipe on flux per ``s.display_pixel`` with the survey's plane gains and softening, then a
    JPEG round trip at ``quality`` (0: none)."""
    x = flux * (s.display_pixel / np.asarray(pxscale)) ** 2
    if tuple(s.rgb_gain) != (1.0, 1.0, 1.0):
        x = x * np.asarray(s.rgb_gain, dtype=x.dtype)[:, None, None]
    rgb = to_uint8(legacy_rgb(x, bands=ph.BANDS, Q=s.rgb_q))
    return jpeg_roundtrip(rgb, quality) if quality else rgb


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 compressed to JPEG at ``quality`` (Pillow, 4:2:0 chroma) and decoded again."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _truth(b, cls, index, cond, sigma, anomaly, rng) -> dict:
    t = {"id": galaxy_id(index), "class": int(cls), "class_name": GALAXY10_CLASSES[cls]}
    t["ra"] = float(rng.uniform(0, 360))
    t["dec"] = float(np.degrees(np.arcsin(rng.uniform(math.sin(math.radians(-20)), math.sin(math.radians(35))))))
    t.update(b.truth)
    for k, band in enumerate(ph.BANDS):
        t[f"flux_{band}"] = float(b.band_flux[k])
        t[f"mag_{band}"] = float(ph.flux_to_mag(b.band_flux[k]))
    for band in cond["fwhm"]:
        t[f"psf_fwhm_{band}"] = cond["fwhm"][band]
    t["psf_beta"] = cond["beta"]
    for k, band in enumerate(cond["fwhm"]):
        t[f"sky_noise_{band}"] = float(sigma[k])
        t[f"depth_{band}"] = cond["depth"][band]
    t["is_anomaly"] = bool(anomaly)
    t["anomaly_type"] = anomaly
    return t


def _survey_truth(s, cond, sigma, fov, quality, scale, size) -> dict:
    """The survey columns: which preset, its bands, and this galaxy's drawn conditions in the
    reference band (psf_fwhm, sky_noise per pixel, depth), framing, compression and stretch."""
    k = list(s.bands).index(s.ref_band)
    return {"survey": s.name, "survey_bands": ",".join(s.bands), "ref_band": s.ref_band, "psf_model": cond["psf"],
            "psf_fwhm": cond["fwhm"][s.ref_band], "sky_noise": float(sigma[k]), "depth": cond["depth"][s.ref_band],
            "sky_sb_noise": float(sigma[k] / scale**2), "native_pixel": s.native_pixel,
            "fov_arcsec": scale * size, "fov_per_r50": fov[0], "jpeg_quality": int(quality),
            "display_pixel": s.display_pixel, "rgb_q": s.rgb_q, "star_density": s.star_density,
            "neighbour_density": s.neighbour_density}


def render_chunk(job: tuple) -> dict:
    """Worker entry point: ``job = (seed, size, indices, classes, anomalies, survey)`` → stacked arrays."""
    seed, size, indices, classes, anomalies, survey = job
    outs = [render_galaxy(seed, i, c, size, a, survey) for i, c, a in zip(indices, classes, anomalies)]
    return {"start": int(indices[0]),
            "noiseless": np.stack([o["noiseless"] for o in outs]),
            "flux": np.stack([o["flux"] for o in outs]),
            "image": np.stack([o["image"] for o in outs]),
            "truth": [o["truth"] for o in outs],
            "votes": np.stack([o["votes"] for o in outs])}


def noiseless_display(flux: np.ndarray, pxscale=None, bands=ph.BANDS) -> np.ndarray:
    """The ``image`` kind of noise-free fluxes (N, 3, H, W): the colour composite :func:`render_galaxy`
    stores (the recipe of the survey preset whose display planes are ``bands``, without JPEG; DECaLS'
    Legacy Survey recipe otherwise), at the pixel scales ``pxscale`` (N,) arcsec (None: the native
    :data:`physics.NATIVE_PIXEL`), as uint8 levels, returned as float32 planes in band order (B, G, R)
    in [0, 1] like the stored images."""
    flux = np.asarray(flux, dtype=np.float32)
    s = survey_with_planes(bands)  # DECaLS' planes: the same Legacy Survey recipe as below
    if s is not None:
        px = s.display_pixel if pxscale is None else np.asarray(pxscale, dtype=np.float32)[:, None, None, None]
        rgb = survey_composite(flux, px, s).astype(np.float32) / 255
        return np.moveaxis(rgb[..., ::-1], -1, 1).astype(np.float32)
    if pxscale is not None:  # the composite is made of flux per native pixel
        flux = flux * ((ph.NATIVE_PIXEL / np.asarray(pxscale, dtype=np.float32)) ** 2)[:, None, None, None]
    rgb = to_uint8(legacy_rgb(flux, bands=bands)).astype(np.float32) / 255
    return np.moveaxis(rgb[..., ::-1], -1, 1).astype(np.float32)
