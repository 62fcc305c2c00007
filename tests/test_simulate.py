"""The GalSim simulator: file schema, determinism, class balance, votes, anomalies, and that every
class is statistically distinct on quantities measured from its noiseless images."""

from __future__ import annotations

import json

import galsim
import h5py
import numpy as np
import pandas as pd
import pytest

from galmo.core.errors import GalmoError
from galmo.core.schema import ANSWER_COLUMNS, GALAXY10_CLASSES, QUESTION_SLICES, QUESTIONS
from galmo.simulate import ANOMALY_TYPES, parse_class_weights, simulate, truth_path

PER_CLASS = 12
SIZE = 48


def _load(path):
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f}
        attrs = dict(f.attrs)
    return data, attrs, pd.read_parquet(truth_path(path))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = simulate(10 * PER_CLASS, size=SIZE, seed=11, out=tmp_path_factory.mktemp("sim") / "sims.h5",
                    workers=2, progress=False)
    return _load(path)


# --------------------------------------------------------------------------------------------
# measurements on noiseless images
# --------------------------------------------------------------------------------------------
def _axis_ratio(img):
    """Adaptive-moment (HSM) axis ratio of the galaxy at the stamp centre."""
    n = img.shape[0]
    res = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(img, dtype=np.float64)),
                                     guess_centroid=galsim.PositionD(n / 2 + 0.5, n / 2 + 0.5), strict=False)
    return res.observed_shape.q if res.moments_status == 0 else np.nan


def _polar(img, row, inclination=None, pa=None):
    """Pixel radius (arcsec) and angle about the stamp centre; deprojected if inclination/PA given."""
    n = img.shape[0]
    c = (np.arange(n) - (n - 1) / 2) * row["pxscale"]
    x, y = np.meshgrid(c, c)
    if inclination is None:
        return np.hypot(x, y), np.arctan2(y, x)
    u = np.cos(pa) * x + np.sin(pa) * y
    v = (-np.sin(pa) * x + np.cos(pa) * y) / max(np.cos(inclination), 0.2)
    return np.hypot(u, v), np.arctan2(v, u)


def _arm_power(img, row):
    """Fourier m = 2..4 power of the residual from an elliptical-isophote model (Davis et al. 2012-like)."""
    n = img.shape[0]
    res = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(img, dtype=np.float64)),
                                     guess_centroid=galsim.PositionD(n / 2 + 0.5, n / 2 + 0.5), strict=False)
    sh = res.observed_shape
    c = np.arange(n, dtype=float)
    x, y = np.meshgrid(c - (res.moments_centroid.x - 1), c - (res.moments_centroid.y - 1))
    b = sh.beta.rad
    u = np.cos(b) * x + np.sin(b) * y
    v = (-np.sin(b) * x + np.cos(b) * y) / sh.q
    r, phi = np.hypot(u, v), np.arctan2(v, u)
    sigma = res.moments_sigma / np.sqrt(sh.q)
    ring = np.floor(r / 0.75).astype(int)
    cnt = np.bincount(ring.ravel())
    rmean = np.bincount(ring.ravel(), r.ravel()) / np.maximum(cnt, 1)
    imean = np.bincount(ring.ravel(), img.ravel()) / np.maximum(cnt, 1)
    ok = cnt > 0
    resid = img - np.interp(r, rmean[ok], imean[ok])  # the smooth elliptical-isophote model
    powers = []
    for k in range(int(1.0 * sigma / 0.75), int(3.0 * sigma / 0.75) + 1):
        sel = ring == k
        if sel.sum() < 8:
            continue
        tot = img[sel].sum()
        powers.append(sum(abs((resid[sel] * np.exp(-1j * m * phi[sel])).sum()) ** 2 for m in (2, 3, 4)) / tot**2)
    return float(np.sqrt(np.mean(powers))) if powers else np.nan


def _asymmetry(img, row):
    r, _ = _polar(img, row)
    sel = r < 1.5 * row["r50_arcsec"]
    return float(np.abs(img - img[::-1, ::-1])[sel].sum() / (2 * np.abs(img)[sel].sum()))


def _colour_gr(flux3, row):
    r, _ = _polar(flux3[1], row)
    sel = r < 1.5 * row["r50_arcsec"]
    return float(-2.5 * np.log10(flux3[0][sel].sum() / flux3[1][sel].sum()))


def _inner_m2(img, row):
    """Bar signal: the m = 2 light at 0.2–0.7 disk half-light radii that is *skewed* (±45°) from the
    disk's line of nodes. Projection of an axisymmetric disk and bulge only makes m = 2 light
    aligned with the line of nodes; a bar at a random angle in the disk adds a skewed part."""
    r, th = _polar(img, row)
    sel = (r > 0.2 * row["disk_re_arcsec"]) & (r < 0.7 * row["disk_re_arcsec"])
    a2 = (img[sel] * np.exp(-2j * (th[sel] - np.radians(row["pa_deg"])))).sum() / img[sel].sum()
    return float(abs(a2.imag))


def _pitch(img, row):
    """Pitch angle from how the phase of the m = n_arms Fourier component of the deprojected light
    winds with ln r (a logarithmic spiral has c_m(r) ∝ exp(-i m ln r / tan φ); cf. Davis et al.
    2012). A non-winding m-fold part (bulge deprojection, weak bars) is fitted alongside."""
    m = int(row["n_arms"])
    r, th = _polar(img, row, np.radians(row["inclination_deg"]), np.radians(row["pa_deg"]))
    edges = np.log(row["disk_re_arcsec"]) + np.linspace(np.log(0.5), np.log(2.4), 13)
    lr = np.log(np.maximum(r, 1e-6))
    bins = [(lr >= a) & (lr < b) for a, b in zip(edges[:-1], edges[1:])]
    keep = [k for k, sel in enumerate(bins) if sel.sum() >= 6 and img[sel].sum() > 0]
    coef = np.array([(img[bins[k]] * np.exp(-1j * m * th[bins[k]])).sum() / img[bins[k]].sum() for k in keep])
    x = 0.5 * (edges[1:] + edges[:-1])[keep]
    best, best_res = np.nan, np.inf
    for sign in (-1, 1):
        for phi in np.linspace(4, 50, 93):
            design = np.stack([np.exp(-1j * sign * m / np.tan(np.radians(phi)) * x), np.ones_like(x)], axis=1)
            sol = np.linalg.lstsq(design, coef, rcond=None)[0]
            res = float(np.sum(np.abs(coef - design @ sol) ** 2))
            if res < best_res:
                best, best_res = phi, res
    return float(best)


def _per_class(sample, fn, cls, band=1):
    data, _, truth = sample
    idx = np.flatnonzero(data["ans"] == cls)
    return np.array([fn(data["noiseless"][i] if band is None else data["noiseless"][i, band], truth.iloc[i])
                     for i in idx])


def _median(sample, fn, cls, band=1):
    return float(np.nanmedian(_per_class(sample, fn, cls, band)))


C = {name: i for i, name in enumerate(GALAXY10_CLASSES)}


# --------------------------------------------------------------------------------------------
# file schema
# --------------------------------------------------------------------------------------------
def test_hdf5_schema(sample):
    data, attrs, truth = sample
    n = 10 * PER_CLASS
    assert set(data) == {"images", "ans", "ra", "dec", "redshift", "pxscale", "id", "flux", "noiseless"}
    assert data["images"].shape == (n, SIZE, SIZE, 3) and data["images"].dtype == np.uint8
    assert data["flux"].shape == data["noiseless"].shape == (n, 3, SIZE, SIZE)
    assert data["flux"].dtype == data["noiseless"].dtype == np.float32
    for k in ("ans", "ra", "dec", "redshift", "pxscale", "id"):
        assert data[k].shape == (n,)
    assert data["id"].dtype.kind == "S" and data["id"][0].startswith(b"sim")
    assert attrs["bands"] == "grz" and attrs["generator"] == "galmo.simulate"
    assert json.loads(attrs["class_names"]) == GALAXY10_CLASSES
    assert json.loads(attrs["config"])["size"] == SIZE and "recipe_version" in json.loads(attrs["config"])
    # the truth table: one row per galaxy, same ids and classes, every promised column
    assert list(truth["id"]) == [i.decode() for i in data["id"]]
    assert (truth["class"].to_numpy() == data["ans"]).all()
    assert (truth["class_name"] == [GALAXY10_CLASSES[c] for c in data["ans"]]).all()
    for col in ["bulge_frac", "disk_frac", "bulge_n", "bulge_re_arcsec", "disk_re_arcsec", "bulge_q", "axis_ratio",
                "pa_deg", "inclination_deg", "bar_strength", "bar_length_arcsec", "n_arms", "pitch_deg",
                "arm_strength", "tidal_features", "has_neighbour", "has_star", "psf_fwhm_g", "psf_fwhm_r",
                "psf_fwhm_z", "sky_noise_r", "flux_g", "flux_r", "flux_z", "mag_g", "mag_r", "mag_z", "redshift",
                "is_anomaly", "anomaly_type", *ANSWER_COLUMNS]:
        assert col in truth.columns, col
    assert np.allclose(truth["redshift"], data["redshift"]) and np.allclose(truth["pxscale"], data["pxscale"])


def test_physical_ranges(sample):
    data, _, truth = sample
    assert truth["redshift"].between(0.02, 0.15).all()
    assert (truth["mag_r"] < 17.85).all() and (truth["mag_r"] > 11).all()
    assert np.allclose(truth["mag_r"], 22.5 - 2.5 * np.log10(truth["flux_r"]))
    assert truth[["psf_fwhm_g", "psf_fwhm_r", "psf_fwhm_z"]].stack().between(0.9, 1.6).all()
    # apparent size shrinks with redshift (angular-diameter distance): negative rank correlation
    assert truth["r50_arcsec"].corr(truth["redshift"], method="spearman") < -0.1
    # the noiseless image holds the galaxy's flux (plus field sources, minus what falls off the stamp)
    ratio = data["noiseless"][:, 1].sum(axis=(1, 2)) / truth["flux_r"].to_numpy()
    assert 0.7 < np.median(ratio) < 1.3
    # the noise is at DECaLS depth: residual rms ≈ the truth sky noise
    rms = (data["flux"][:, 1] - data["noiseless"][:, 1])[:, :8, :8].std(axis=(1, 2))
    assert np.allclose(np.median(rms / truth["sky_noise_r"].to_numpy()), 1.0, atol=0.15)


# --------------------------------------------------------------------------------------------
# determinism, classes, anomalies
# --------------------------------------------------------------------------------------------
def test_deterministic_across_workers_and_seeds(tmp_path):
    a = _load(simulate(12, size=32, seed=3, out=tmp_path / "a.h5", workers=1, progress=False))
    b = _load(simulate(12, size=32, seed=3, out=tmp_path / "b.h5", workers=2, progress=False))
    c = _load(simulate(12, size=32, seed=4, out=tmp_path / "c.h5", workers=2, progress=False))
    for k in ("images", "flux", "noiseless", "ans", "ra", "redshift", "pxscale", "id"):
        assert np.array_equal(a[0][k], b[0][k]), k
    pd.testing.assert_frame_equal(a[2], b[2])
    assert not np.array_equal(a[0]["flux"], c[0]["flux"])
    assert not np.allclose(a[2]["redshift"], c[2]["redshift"])


def test_class_balance_and_rare_mode(sample, tmp_path):
    counts = np.bincount(sample[0]["ans"], minlength=10)
    assert (counts == PER_CLASS).all()
    path = simulate(50, size=32, seed=2, out=tmp_path / "rare.h5", class_weights="rare:Merging=0.04",
                    workers=1, progress=False)
    counts = np.bincount(_load(path)[0]["ans"], minlength=10)
    assert counts[C["Merging"]] == 2 and counts.sum() == 50
    assert counts.max() - counts[np.arange(10) != C["Merging"]].min() <= 1
    w = parse_class_weights({"Round Smooth": 3, 5: 1})
    assert np.isclose(w[C["Round Smooth"]], 0.75) and np.isclose(w[5], 0.25) and np.isclose(w.sum(), 1)
    for bad in ("rare:Nonsense=0.1", "rare:Merging=2", "weird", {"Merging": -1}):
        with pytest.raises(GalmoError):
            parse_class_weights(bad)


def test_anomalies_flagged_and_galaxy_unchanged(tmp_path):
    clean = _load(simulate(16, size=32, seed=5, out=tmp_path / "clean.h5", workers=1, progress=False))
    odd = _load(simulate(16, size=32, seed=5, out=tmp_path / "odd.h5", anomalies=0.5, workers=1, progress=False))
    truth = odd[2]
    flagged = truth["is_anomaly"].to_numpy()
    assert flagged.sum() == 8 and not clean[2]["is_anomaly"].any()
    assert set(truth.loc[flagged, "anomaly_type"]) == set(ANOMALY_TYPES)
    assert (truth.loc[~flagged, "anomaly_type"] == "").all()
    assert np.array_equal(odd[0]["ans"], clean[0]["ans"])
    diff = np.abs(odd[0]["noiseless"] - clean[0]["noiseless"]).sum(axis=(1, 2, 3))
    assert (diff[~flagged] == 0).all() and (diff[flagged] > 0).all()
    # volunteers notice: "odd" votes are higher for anomalous galaxies
    assert truth.loc[flagged, "Class6.1"].mean() > truth.loc[~flagged, "Class6.1"].mean() + 0.2


def test_bad_arguments(tmp_path):
    for kw in ({"n": 0}, {"n": 5, "size": 4}, {"n": 5, "anomalies": 1.5}, {"n": 5, "seed": -1}):
        with pytest.raises(GalmoError):
            simulate(out=tmp_path / "x.h5", progress=False, **kw)
    assert not (tmp_path / "x.h5").exists()


# --------------------------------------------------------------------------------------------
# votes
# --------------------------------------------------------------------------------------------
def test_votes_obey_the_tree(sample):
    truth = sample[2]
    v = truth[ANSWER_COLUMNS].to_numpy()
    assert (v >= 0).all() and (v <= 1).all()
    col = {c: i for i, c in enumerate(ANSWER_COLUMNS)}
    for q, (a, b) in zip(QUESTIONS, QUESTION_SLICES):
        parent = 1.0 if q.parent is None else v[:, col[q.parent]]
        assert np.allclose(v[:, a:b].sum(1), parent, atol=1e-6), q.number
    assert truth["n_volunteers"].between(10, 80).all()


def test_votes_follow_the_truth(sample):
    truth = sample[2]
    by = truth.groupby("class")
    smooth = by["Class1.1"].mean()
    assert smooth[[2, 3, 4]].min() > smooth[[5, 6, 7, 8, 9]].max()
    assert by["Class2.1"].mean()[[8, 9]].min() > by["Class2.1"].mean()[[2, 5, 6, 7]].max()  # edge-on
    assert by["Class3.1"].mean()[5] > by["Class3.1"].mean()[6]  # bar
    assert by["Class6.1"].mean()[[0, 1]].min() > by["Class6.1"].mean()[[2, 3, 4, 5, 6, 7]].max()  # odd
    assert by["Class7.1"].mean()[2] > by["Class7.1"].mean()[3] > by["Class7.1"].mean()[4]  # roundness


# --------------------------------------------------------------------------------------------
# every class is statistically distinct on measured image quantities
# --------------------------------------------------------------------------------------------
def test_axis_ratios_order_the_smooth_and_edge_on_classes(sample):
    q = {c: _median(sample, lambda im, row: _axis_ratio(im), C[c]) for c in C}
    assert q["Edge-on without Bulge"] < q["Cigar Shaped Smooth"] < q["In-between Round Smooth"] < q["Round Smooth"]
    assert q["Edge-on with Bulge"] < q["In-between Round Smooth"]


def test_spiral_arm_power(sample):
    arms = {c: _median(sample, _arm_power, C[c], band=0) for c in C}
    for spiral in ("Barred Spiral", "Unbarred Tight Spiral", "Unbarred Loose Spiral"):
        assert arms[spiral] > 2.5 * arms["Round Smooth"], (spiral, arms)
        assert arms[spiral] > 1.3 * arms["In-between Round Smooth"], (spiral, arms)  # 30 % of these are S0s
    assert arms["Unbarred Loose Spiral"] > arms["Unbarred Tight Spiral"]  # open, broad arms stand out more


@pytest.fixture(scope="module")
def spirals(tmp_path_factory):
    """Barred, tight and loose spirals at 96 px, where bars and arms are resolved."""
    path = simulate(30, size=96, seed=7, out=tmp_path_factory.mktemp("spirals") / "spirals.h5", workers=2,
                    class_weights={"Barred Spiral": 1, "Unbarred Tight Spiral": 1, "Unbarred Loose Spiral": 1},
                    progress=False)
    return _load(path)


def test_bars_and_pitch_angles(spirals):
    bar = _per_class(spirals, _inner_m2, C["Barred Spiral"])
    unbarred = _per_class(spirals, _inner_m2, C["Unbarred Tight Spiral"])
    assert np.median(bar) > 2.5 * np.median(unbarred)
    tight = _per_class(spirals, _pitch, C["Unbarred Tight Spiral"], band=0)
    loose = _per_class(spirals, _pitch, C["Unbarred Loose Spiral"], band=0)
    assert np.median(loose) > np.median(tight) + 5
    truth = spirals[2]
    true = np.concatenate([truth.loc[truth["class"] == k, "pitch_deg"].to_numpy() for k in (6, 7)])
    # the measured winding tracks the drawn pitch angle for most galaxies
    assert np.median(np.abs(np.concatenate([tight, loose]) - true)) < 8


def test_colours_asymmetry_and_bulges(sample):
    colour = {c: _median(sample, _colour_gr, C[c], band=None) for c in C}
    for red in ("Round Smooth", "In-between Round Smooth", "Cigar Shaped Smooth"):
        for blue in ("Unbarred Loose Spiral", "Edge-on without Bulge", "Disturbed"):
            assert colour[red] > colour[blue] + 0.05, (red, blue, colour)
    asym = {c: _median(sample, _asymmetry, C[c]) for c in C}
    for odd in ("Merging", "Disturbed"):
        for calm in ("Round Smooth", "In-between Round Smooth", "Unbarred Tight Spiral"):
            assert asym[odd] > 1.5 * asym[calm], (odd, calm, asym)
    q = {c: _median(sample, lambda im, row: _axis_ratio(im), C[c]) for c in ("Edge-on with Bulge",
                                                                             "Edge-on without Bulge")}
    assert q["Edge-on with Bulge"] > q["Edge-on without Bulge"] + 0.05  # the bulge puffs up the centre


# --------------------------------------------------------------------------------------------
# the default sample and the cosmology behind it
# --------------------------------------------------------------------------------------------
# The first galaxies of the default sample (3000 galaxies, 64 px, seed 0) as rendered today: class,
# sum of the uint8 composite, sum of the flux, redshift. A change here changes the default sample and
# every number measured on it; bump RECIPE_VERSION (and these values) only when that is intended.
DEFAULT_SAMPLE_HEAD = [(4, 521107, 543.455292987559, 0.11211263626512075),  # recipe 1.5
                       (8, 585531, 1932.3281661046922, 0.040977783470708136),
                       (1, 519752, 1729.0068228414084, 0.055169906709204894),
                       (0, 691749, 2724.0458156657187, 0.046109690609851935)]


def test_default_sample_is_unchanged():
    from galmo.simulate import DEFAULT_N, DEFAULT_SIZE
    from galmo.simulate.render import render_galaxy
    from galmo.simulate.run import assign_classes

    classes = assign_classes(DEFAULT_N, parse_class_weights(None), 0)
    for i, (cls, image_sum, flux_sum, z) in enumerate(DEFAULT_SAMPLE_HEAD):
        assert classes[i] == cls
        g = render_galaxy(0, i, cls, DEFAULT_SIZE)
        assert int(g["image"].astype(np.int64).sum()) == image_sum
        assert float(g["flux"].astype(np.float64).sum()) == pytest.approx(flux_sum, rel=1e-6)
        assert g["truth"]["redshift"] == pytest.approx(z, rel=1e-12)


def test_cosmology_agrees_with_astropy():
    from astropy.cosmology import FlatLambdaCDM

    from galmo.simulate import physics as ph

    cosmo = FlatLambdaCDM(H0=ph.H0, Om0=ph.OMEGA_M, Tcmb0=0.0)
    z = np.linspace(0.01, 0.4, 40)
    np.testing.assert_allclose(ph.comoving_distance(z), cosmo.comoving_distance(z).to_value("Mpc"), rtol=1e-9)
    np.testing.assert_allclose(ph.distance_modulus(z), cosmo.distmod(z).to_value("mag"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ph.kpc_per_arcsec(z), 1 / cosmo.arcsec_per_kpc_proper(z).value, rtol=1e-7)


def test_class_weights_as_name_weight_pairs(tmp_path):
    w = parse_class_weights("Merging=2, Round Smooth=1")
    assert np.isclose(w[C["Merging"]], 2 / 3) and np.isclose(w[C["Round Smooth"]], 1 / 3) and np.isclose(w.sum(), 1)
    assert np.array_equal(parse_class_weights("1=2,2=1"), w)
    with pytest.raises(GalmoError, match="NAME=WEIGHT"):
        parse_class_weights("Merging=2,Disturbed")
    path = simulate(12, size=32, seed=1, out=tmp_path / "w.h5", class_weights="Merging=1", workers=1, progress=False)
    data, attrs, _ = _load(path)
    assert (data["ans"] == C["Merging"]).all()
    assert json.loads(attrs["config"])["class_weights_arg"] == {"Merging": 1.0}  # recorded as the dict


def test_vote_counts_of_a_campaign_in_the_truth_table(tmp_path):
    """--vote-schema decals-dr5: the truth table gets galaxy-datasets' count columns; the first
    question's total is the sum of its answers, every count is a non-negative integer, the source
    reads them, and the same seed draws the same votes."""
    from galmo.core.schema import get_schema
    from galmo.sources import as_source

    schema = get_schema("decals-dr5")
    a = simulate(16, 32, seed=3, out=tmp_path / "a.h5", workers=1, progress=False, vote_schema="decals-dr5")
    b = simulate(16, 32, seed=3, out=tmp_path / "b.h5", workers=1, progress=False, vote_schema="decals-dr5")
    ta, tb = pd.read_parquet(truth_path(a)), pd.read_parquet(truth_path(b))
    cols = list(schema.label_cols)
    assert set(cols) <= set(ta.columns) and ta[cols].equals(tb[cols])
    counts = ta[cols].to_numpy()
    assert counts.dtype.kind == "i" and (counts >= 0).all() and counts.sum() > 0
    first = [c for c in cols if c.startswith("smooth-or-featured")]
    assert (ta[first].sum(1) == ta["smooth-or-featured-dr5_total-votes"]).all()
    assert set(cols) <= set(as_source(a).catalog.columns)
    with pytest.raises(SystemExit):
        from galmo.cli import main

        main(["simulate", "--n", "2", "--out", str(tmp_path / "c.h5"), "--vote-schema", "gz2-kaggle"])
