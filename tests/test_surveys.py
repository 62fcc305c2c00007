"""Survey presets of the simulator (``galmo simulate --survey``): every survey renders, each sets the
observing conditions it promises (HST sharper and deeper than DECaLS, DECaLS than SDSS), ``decals``
is the historical default, ``random`` is a deterministic per-seed mixture, and JPEG compression
changes the composite a little."""

from __future__ import annotations

import galsim
import numpy as np
import pandas as pd
import pytest

from galmo.core.errors import GalmoError
from galmo.simulate import simulate
from galmo.simulate.surveys import HST, SDSS, SURVEY_NAMES, get_survey
from tests.test_simulate import _load

N, SIZE = 20, 48


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("surveys")
    return {name: _load(simulate(N, size=SIZE, seed=5, out=tmp / f"{name}.h5", survey=name, workers=1,
                                 progress=False)) for name in SURVEY_NAMES}


def test_every_survey_renders_finite_images_of_the_right_shape(sims):
    for name, (data, attrs, truth) in sims.items():
        assert data["images"].shape == (N, SIZE, SIZE, 3) and data["images"].dtype == np.uint8, name
        assert data["flux"].shape == data["noiseless"].shape == (N, 3, SIZE, SIZE), name
        assert np.isfinite(data["flux"]).all() and np.isfinite(data["noiseless"]).all(), name
        assert data["images"].std() > 5, name  # not blank
        assert attrs["survey"] == name and (truth["survey"] == name).all()
        for col in ("psf_fwhm", "sky_noise", "depth", "jpeg_quality", "fov_arcsec", "psf_model", "survey_bands"):
            assert truth[col].notna().all(), (name, col)
    assert sims["sdss"][1]["bands"] == "gri" and sims["hst"][1]["bands"] == "F606W,F606W+F814W,F814W"
    # the two HST bands become three display planes: blue, their mean, red
    hst = sims["hst"][0]["noiseless"]
    np.testing.assert_allclose(hst[:, 1], 0.5 * (hst[:, 0] + hst[:, 2]), rtol=1e-5, atol=1e-9)


def test_the_same_galaxies_whatever_the_survey(sims):
    base = sims["decals"][2]
    for name in SURVEY_NAMES:
        t = sims[name][2]
        for col in ("class", "redshift", "r50_arcsec", "bulge_frac", "inclination_deg", "pitch_deg"):
            pd.testing.assert_series_equal(t[col], base[col], check_names=False)


def _measured_fwhm(kind, fwhm, beta):
    """FWHM (arcsec) of the PSF the simulator draws, measured on a finely sampled image."""
    from galmo.simulate.profiles import Canvas, psf_image

    scale = fwhm / 12
    img = psf_image(Canvas(129, scale), fwhm, beta if kind == "moffat" else 0.0, kind)
    return galsim.Image(img, scale=scale).calculateFWHM()


def test_conditions_order_hst_sharper_and_deeper_than_decals_than_sdss(sims):
    med = {name: sims[name][2].median(numeric_only=True) for name in ("hst", "decals", "sdss")}
    assert med["hst"]["psf_fwhm"] < 0.2 < 0.9 < med["decals"]["psf_fwhm"] < med["sdss"]["psf_fwhm"]
    assert med["hst"]["pxscale"] < med["decals"]["pxscale"] < med["sdss"]["pxscale"]  # framing
    assert set(sims["hst"][2]["psf_model"]) == {"airy"} and set(sims["sdss"][2]["psf_model"]) == {"kolmogorov"}
    measured = {}
    for name in med:
        row = sims[name][2].iloc[0]
        measured[name] = _measured_fwhm(row["psf_model"], row["psf_fwhm"], row["psf_beta"])
        assert measured[name] == pytest.approx(row["psf_fwhm"], rel=0.12), name
    assert measured["hst"] < measured["decals"] < measured["sdss"]
    # sky noise measured on the images, per arcsec² (pixels differ): deep HST < DECaLS < shallow SDSS
    sb = {}
    for name, plane in (("hst", 2), ("decals", 1), ("sdss", 1)):  # the reference band: F814W, r, r
        data, _, truth = sims[name]
        resid = (data["flux"] - data["noiseless"])[:, plane, :8, :8].std(axis=(1, 2))
        assert np.median(resid / truth["sky_noise"].to_numpy()) == pytest.approx(1.0, abs=0.2), name
        sb[name] = np.median(resid / truth["pxscale"].to_numpy() ** 2)
    assert sb["hst"] < sb["decals"] / 1.3 and sb["decals"] < sb["sdss"] / 1.8, sb


def test_decals_is_the_previous_default(tmp_path):
    a = _load(simulate(12, size=32, seed=9, out=tmp_path / "a.h5", workers=1, progress=False, anomalies=0.5))
    b = _load(simulate(12, size=32, seed=9, out=tmp_path / "b.h5", workers=1, progress=False, anomalies=0.5,
                       survey="decals"))
    for k in a[0]:
        assert np.array_equal(a[0][k], b[0][k]), k
    pd.testing.assert_frame_equal(a[2], b[2])
    assert a[1]["bands"] == "grz" and (a[2]["jpeg_quality"] == 0).all() and (a[2]["psf_model"] == "moffat").all()
    np.testing.assert_array_equal(a[2]["psf_fwhm"], a[2]["psf_fwhm_r"])


def test_random_is_a_deterministic_mixture(sims, tmp_path):
    a = sims["random"]
    b = _load(simulate(N, size=SIZE, seed=5, out=tmp_path / "b.h5", survey="random", workers=2, progress=False))
    c = _load(simulate(N, size=SIZE, seed=6, out=tmp_path / "c.h5", survey="random", workers=1, progress=False))
    for k in ("images", "flux", "noiseless", "pxscale"):
        assert np.array_equal(a[0][k], b[0][k]), k
    pd.testing.assert_frame_equal(a[2], b[2])
    assert not np.array_equal(a[0]["images"], c[0]["images"])
    t = a[2]
    assert t["survey_bands"].nunique() >= 3 and t["psf_model"].nunique() >= 2  # several surveys in one file
    assert t["psf_fwhm"].min() < 0.35 and t["psf_fwhm"].max() > 1.0  # spans space and ground seeing
    assert (t["jpeg_quality"] == 0).any() and (t["jpeg_quality"] > 0).any()
    assert t["fov_per_r50"].std() > 1 and t["sky_sb_noise"].max() > 10 * t["sky_sb_noise"].min()


def test_jpeg_output_differs_from_and_is_close_to_the_uncompressed_one():
    from galmo.simulate.render import jpeg_roundtrip, render_galaxy, survey_composite

    g = render_galaxy(3, 1, 6, SIZE, survey="sdss")
    quality = g["truth"]["jpeg_quality"]
    assert SDSS.jpeg_quality[0] <= quality <= SDSS.jpeg_quality[1]
    raw = survey_composite(g["flux"], g["truth"]["pxscale"], SDSS).astype(float)
    jpg = g["image"].astype(float)
    assert np.abs(jpg - raw).mean() > 1  # per pixel, 4:2:0 chroma subsampling smears the colour noise ...

    def blocks(x):  # ... while the picture on 4 × 4 pixel blocks stays
        return x.reshape(SIZE // 4, 4, SIZE // 4, 4, 3).mean(axis=(1, 3))

    assert np.abs(blocks(jpg) - blocks(raw)).mean() < 0.15 * raw.std()
    assert np.corrcoef(blocks(jpg).ravel(), blocks(raw).ravel())[0, 1] > 0.95
    err = {q: np.abs(blocks(jpeg_roundtrip(raw.astype(np.uint8), q).astype(float)) - blocks(raw)).mean()
           for q in (30, 95)}
    assert err[95] < err[30]


def test_unknown_survey_lists_the_choices(tmp_path):
    with pytest.raises(GalmoError, match="decals, sdss, hst, random"):
        simulate(3, out=tmp_path / "x.h5", survey="euclid", progress=False)
    assert not (tmp_path / "x.h5").exists()
    assert get_survey("HST") is HST


def test_sub_pixel_psfs_are_integrated_over_the_pixel(recwarn):
    from galmo.simulate.profiles import Canvas, psf_image

    prev = None
    for fwhm in (0.05, 0.3, 1.4, 1.6):  # pixels; below 1.5 drawn in real space on a finer grid
        img = psf_image(Canvas(64, 1.0), fwhm, 0.0, "airy")
        assert img.sum() == pytest.approx(1.0) and np.unravel_index(img.argmax(), img.shape) == (32, 32)
        assert prev is None or img.max() < prev  # a wider PSF, a lower peak, across the switch too
        prev = img.max()
    assert prev > 0.15 and not [w for w in recwarn if "FFT" in str(w.message)]
