"""statmorph wrapper: real HST galaxy, NaN instead of crashes, Lotz lines."""

from pathlib import Path

import numpy as np
import pytest

from galmo.morphology import COLUMNS, group_medians, lotz_class, measure

DATA = Path(__file__).parent / "data"


def _real_galaxy():
    from astropy.io import fits

    p = DATA / "abell_2744_spiral_galaxy_f105w.fits.gz"
    if not p.exists():
        p = Path("/work/shared/data/real_fits/abell_2744_spiral_galaxy_f105w.fits.gz")
    if not p.exists():
        pytest.skip("no real galaxy cutout available")
    return fits.getdata(p).astype(np.float64)


def test_statmorph_on_a_real_spiral():
    img = _real_galaxy()
    df = measure([img])
    r = df.iloc[0]
    assert r["error"] == "" and r["flag"] <= 1
    assert 0.4 < r["gini"] < 0.75
    assert -2.5 < r["m20"] < -0.8
    assert 2.0 < r["concentration"] < 5.0
    assert 0.0 < r["sersic_n"] < 4.0
    assert r["rhalf_circ"] > 3


def test_bad_images_give_nan_not_crash():
    rng = np.random.default_rng(0)
    df = measure([np.full((32, 32), np.nan), rng.normal(0, 1, (32, 32)), np.zeros((40, 40))])
    assert len(df) == 3
    assert df[COLUMNS].isna().all(axis=1).all()
    assert (df["error"] != "").all()
    med = group_medians(df.assign(group=[0, 0, 1]))
    assert med["n"].tolist() == [2, 1] and med["n_failed"].tolist() == [2, 1]


def test_lotz_classes():
    assert lotz_class([0.65, 0.58, 0.45, np.nan], [-1.0, -2.2, -2.0, -2.0]).tolist() == \
        ["merger", "E/S0/Sa", "Sb-Ir", ""]
