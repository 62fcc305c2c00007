"""Real images end to end: ``galmo predict``, ``embed``, ``similar`` and ``cluster`` on real HST
cutouts (``shared/data/real_fits``: one band, 100–400 px, beside the checkout or ``$GALMO_REAL_FITS``)
and on crops of the Hubble Deep Field photograph shipped with scikit-image (colour JPEG, 60–128 px).
Models are tiny (a simple_cnn trained for one epoch on 48 sims of 32 px, Lite0 at 48 px): the point
is that every verb brings these images to the model by the one rule (galmo.core.resample) and gives
finite outputs that are the same when run again, not that the answers are good."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galmo.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from real_data import REAL_FITS_ENV, hdf_crops, hubble_deep_field, real_fits_catalog, real_fits_dir  # noqa: E402

QUIET = ["--device", "cpu", "--no-progress"]
LITE0 = ["--image-size", "48", "--batch-size", "8", *QUIET]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("real")


@pytest.fixture(scope="module")
def fits_cat(root):
    folder = real_fits_dir()
    if folder is None:
        pytest.skip(f"no real FITS cutouts: ../shared/data/real_fits is not beside the checkout and "
                    f"${REAL_FITS_ENV} is not set")
    return real_fits_catalog(root / "fits", folder)


@pytest.fixture(scope="module")
def hdf(root):
    if hubble_deep_field() is None:
        pytest.skip("scikit-image's data/hubble_deep_field.jpg is not installed")
    return hdf_crops(root / "hdf", n=16)


@pytest.fixture(scope="module")
def sources(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def run(root):
    from galmo.simulate import simulate

    sims = simulate(n=48, size=32, seed=0, out=root / "sims.h5", workers=1, progress=False)
    out = root / "run"
    assert main(["train", "--data", str(sims), "--out", str(out), "--model", "simple_cnn", "--width", "4",
                 "--epochs", "1", "--batch-size", "16", "--seed", "0", *QUIET]) == 0
    return out


def _twice(argv_of, capsys) -> tuple[list, str]:
    """Run the command lines ``argv_of(k)`` for k = 0, 1; (their outputs, the stderr of the first)."""
    outs, err = [], None
    for k in range(2):
        out = argv_of(k)
        assert main(out[0]) == 0
        err = capsys.readouterr().err if err is None else err
        outs.append(out[1])
    return outs, err


def test_the_sources_are_real(fits_cat, hdf):
    from galmo.sources import open_source

    f = open_source(fits_cat)
    assert len(f) == 5 and f.shape[0] == 1 and set(f.catalog["orig_height"]) == {100, 150, 162, 200, 400}
    assert f.catalog["pxscale"].notna().sum() == 4
    h = open_source(hdf)
    assert len(h) == 16 and h.shape[0] == 3 and h.catalog["orig_height"].nunique() > 3  # mixed sizes


@pytest.mark.parametrize("sources", ["fits_cat", "hdf"], indirect=True)
def test_predict_real_images_is_finite_and_deterministic(run, sources, root, capsys):
    name = Path(sources).stem
    outs, err = _twice(lambda k: (["predict", "--run", str(run), "--data", str(sources), "--out",
                                   str(root / f"pred_{name}_{k}.parquet"), *QUIET], root / f"pred_{name}_{k}.parquet"),
                       capsys)
    a, b = (pd.read_parquet(p) for p in outs)
    cols = [f"prob_{k}" for k in range(10)]
    assert len(a) == len(pd.read_csv(sources)) if str(sources).endswith(".csv") else len(a) == 16
    assert np.isfinite(a[cols].to_numpy()).all()
    np.testing.assert_allclose(a[cols].sum(1), 1, atol=1e-5)
    pd.testing.assert_frame_equal(a, b)
    said = [line for line in err.splitlines() if "to the model's 32x32" in line]
    assert len(said) == 1, err  # said once, for the whole source
    if name == "real_fits":
        assert "1 band repeated over the model's 3" in said[0]


@pytest.mark.parametrize("sources", ["fits_cat", "hdf"], indirect=True)
def test_embed_real_images_is_finite_and_deterministic(sources, root, capsys):
    from galmo.methods.embeddings.store import read_embeddings

    name = Path(sources).stem
    outs, err = _twice(lambda k: (["embed", "--data", str(sources), "--out", str(root / f"emb_{name}_{k}.parquet"),
                                   *LITE0], root / f"emb_{name}_{k}.parquet"), capsys)
    a, b = (read_embeddings(p) for p in outs)
    assert a.X.shape == (5 if name == "real_fits" else 16, 1280) and np.isfinite(a.X).all()
    np.testing.assert_array_equal(a.X, b.X)
    assert a.meta["framing"] == {"framing": "resize", "crop_frac": 1.0, "pxscale": None}
    assert "to the model's 48x48" in err
    zoom = root / f"emb_{name}_zoom.parquet"
    assert main(["embed", "--data", str(sources), "--out", str(zoom), "--crop-frac", "0.5", *LITE0]) == 0
    z = read_embeddings(zoom)
    assert z.meta["framing"]["crop_frac"] == 0.5 and np.abs(z.X - a.X).max() > 1e-3  # a zoom is another image


def test_similar_real_query_image_of_another_size_and_bands(fits_cat, hdf, root, capsys):
    emb = root / "emb_hdf_q.parquet"
    assert main(["embed", "--data", str(hdf), "--out", str(emb), *LITE0]) == 0
    query = pd.read_csv(fits_cat)["path"].iloc[2]  # the 150 px one-band spiral, against the colour HDF crops
    tables = []
    for k in range(2):
        out = root / f"sim_{k}.csv"
        assert main(["similar", "--emb", str(emb), "--image", query, "--top", "5", "--out", str(out)]) == 0
        tables.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(*tables)
    t = tables[0]
    assert len(t) == 5 and t["id"].str.startswith("hdf_").all() and np.isfinite(t["similarity"]).all()
    assert (np.diff(t["similarity"]) <= 1e-6).all() and (root / "sim_0.png").exists()


@pytest.mark.parametrize("sources", ["fits_cat", "hdf"], indirect=True)
def test_cluster_real_images_is_deterministic(sources, root, capsys):
    name = Path(sources).stem
    args = ["--k", "2", "--members", "kmeans", "agglomerative", "--image-size", "32", "--no-invariant",
            "--no-graph", "--morph-per-group", "0", "--batch-size", "8", "--seed", "0", *QUIET]
    outs, _ = _twice(lambda k: (["cluster", "--data", str(sources), "--out", str(root / f"cl_{name}_{k}"), *args],
                                root / f"cl_{name}_{k}" / "cluster_catalog.parquet"), capsys)
    a, b = (pd.read_parquet(p) for p in outs)
    assert len(a) == (5 if name == "real_fits" else 16)
    pd.testing.assert_frame_equal(a, b)
    num = a.select_dtypes("number")
    assert np.isfinite(num.to_numpy(float)).all()
