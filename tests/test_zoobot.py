"""zoobot / galaxy-datasets catalogs end to end: a catalog in their layout (id_str, file_loc, vote counts of
the DECaLS DR5 campaign, totals and fractions) trains with zoobot's Dirichlet-multinomial loss, predicts in
zoobot's column names and evaluates; the loss against hand arithmetic; a missing vote column named; the
simulator's vote counts for every campaign."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from galmo.cli import main
from galmo.core.schema import get_schema
from galmo.core.schemas import SCHEMA_NAMES
from galmo.methods.supervised import run as S
from galmo.nn.tasks.votes import dirichlet_multinomial_nll, dirichlet_std
from galmo.simulate.votes import campaign_counts, walk_tree

DR5 = get_schema("decals-dr5")
TRAIN = ["--target", "votes", "--model", "simple_cnn", "--width", "4", "--epochs", "1", "--batch-size", "16",
         "--device", "cpu", "--no-progress", "--seed", "0"]


def _image(rng, smooth: bool, size: int = 32) -> np.ndarray:
    """A round blob (smooth) or a thin bar with a faint disk (featured), uint8 RGB."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    t = rng.uniform(0, np.pi)
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    f = np.exp(-(u ** 2 + v ** 2) / 18) if smooth else np.exp(-(u ** 2 / 60 + v ** 2 / 3)) + 0.3 * np.exp(-(u ** 2 + v ** 2) / 90)
    img = f[..., None] * np.array([0.9, 0.8, 0.7]) + rng.normal(0, 0.03, (size, size, 3))
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def write_zoobot_catalog(root, n: int = 48, seed: int = 0, drop=()) -> str:
    """A catalog in galaxy-datasets' DR5 layout (iauname, id_str, ra, dec, subfolder, filename, file_loc,
    the 34 vote counts, <question>_total-votes, <answer>_fraction), JPEGs and PNGs in sub-folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        smooth = i % 2 == 0
        name = f"J{i:03d}{rng.integers(1000, 9999)}.{i:02d}+0{i % 7}1234.5"
        sub, fname = name[:4], name + (".jpg" if i % 3 else ".png")
        (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(rng, smooth)).save(root / sub / fname)
        probs = [np.full(len(q.columns), 1 / len(q.columns)) for q in DR5.questions]
        probs[0] = np.array([0.8, 0.15, 0.05]) if smooth else np.array([0.15, 0.8, 0.05])
        counts = walk_tree(rng, DR5, probs, int(rng.integers(30, 50)))
        row = {"iauname": name, "id_str": name, "ra": rng.uniform(0, 360), "dec": rng.uniform(-10, 30),
               "subfolder": sub, "filename": fname, "file_loc": str(root / sub / fname)}
        row.update(zip(DR5.label_cols, counts.astype(int)))
        row.update(zip(DR5.total_columns, DR5.totals(counts[None])[0].astype(int)))
        row.update(zip(DR5.fraction_columns, DR5.shares(counts[None])[0]))
        rows.append(row)
    path = root / "decals_dr5_ortho_train_catalog.parquet"
    pd.DataFrame(rows).drop(columns=list(drop)).to_parquet(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return write_zoobot_catalog(tmp_path_factory.mktemp("gz_decals"))


# ---------------------------------------------------------------- the loss, by hand
def test_dirichlet_multinomial_equals_hand_computation():
    # question 1: counts (2, 1, 0), concentrations (1, 2, 3): N = 3, A = 6
    #   p = 3!/(2!·1!·0!) · Γ(6)/Γ(9) · Γ(3)/Γ(1) · Γ(3)/Γ(2) · Γ(3)/Γ(3) = 3 · 120/40320 · 2 · 2 · 1 = 1/28
    # question 2: counts (1, 1), concentrations (1, 1): the beta-binomial with a flat prior, p = 1/3
    # question 3: nobody answered it: p = 1
    counts = torch.tensor([[2.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]])
    conc = torch.tensor([[1.0, 2.0, 3.0, 1.0, 1.0, 5.0, 7.0]])
    nll = dirichlet_multinomial_nll(counts, conc, [(0, 3), (3, 5), (5, 7)])
    assert float(nll[0]) == pytest.approx(math.log(28) + math.log(3), rel=1e-6)
    # the spread of a Dirichlet(1, 2, 3) answer: sqrt(a (A − a) / (A² (A + 1))), e.g. a = 3: sqrt(9 / 252)
    std = dirichlet_std(conc.numpy()[:, :3].astype(np.float64), [(0, 3)])
    np.testing.assert_allclose(std[0], np.sqrt([5 / 252, 8 / 252, 9 / 252]), rtol=1e-12)


# ---------------------------------------------------------------- end to end
def test_zoobot_catalog_trains_predicts_evaluates(catalog, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", catalog, "--out", str(run), *TRAIN, "--vote-loss", "dirichlet"]) == 0
    sup = json.loads((run / "config.json").read_text())["supervised"]
    assert (sup["schema"], sup["vote_loss"]) == ("decals-dr5", "dirichlet")  # --schema auto found the campaign
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["n"] == 10 and test["schema"] == "decals-dr5" and 0 < test["rmse"] < 0.4
    assert 0 < test["dirichlet_nll"] < 200 and set(test["rmse_per_question"]) == {q.name for q in DR5.questions}

    out = tmp_path / "zoobot_preds.csv"
    assert main(["predict", "--run", str(run), "--data", catalog, "--out", str(out), "--format", "zoobot",
                 "--triage", "0.5", "--no-progress"]) == 0
    z = pd.read_csv(out)
    cat = pd.read_parquet(catalog)
    assert list(z.columns[:3]) == ["id_str", "smooth-or-featured-dr5_smooth_fraction",
                                   "smooth-or-featured-dr5_featured-or-disk_fraction"]
    assert z["id_str"].tolist() == cat["id_str"].tolist() and z["auto_classified"].sum() == 24
    conc = z[[f"{c}_concentration" for c in DR5.label_cols]].to_numpy()
    frac = z[DR5.fraction_columns].to_numpy()
    assert ((conc > 1) & (conc < 101)).all()
    for a, b in DR5.slices:  # every question's predicted fractions are its concentrations' shares
        np.testing.assert_allclose(frac[:, a:b], conc[:, a:b] / conc[:, a:b].sum(1, keepdims=True), rtol=1e-5)
    # triage's confidence: the top smooth-or-featured fraction less one Dirichlet standard deviation of it
    c0 = conc[0, :3]
    top = c0.argmax()
    std = np.sqrt(c0[top] * (c0.sum() - c0[top]) / (c0.sum() ** 2 * (c0.sum() + 1)))
    assert z["uncertainty"].iat[0] == pytest.approx(std, rel=1e-5)
    assert z["confidence"].iat[0] == pytest.approx(c0[top] / c0.sum() - std, rel=1e-5)
    galmo = S.predict(run, catalog, device="cpu")  # galmo's own format: the same numbers beside 'id'
    np.testing.assert_allclose(galmo[DR5.fraction_columns].to_numpy(), frac, rtol=1e-5)

    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--data", catalog, "--out", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())["test"]
    assert again["rmse"] == pytest.approx(test["rmse"], abs=1e-6)
    assert "vote RMSE" in capsys.readouterr().out


def test_mse_on_counts_and_the_loss_choice_matters(catalog, tmp_path):
    """The fraction loss trains on the same catalog (counts → cumulative fractions); the two losses give
    different models, and the Dirichlet run's validation loss is the per-galaxy likelihood, not an MSE."""
    res = S.train(catalog, tmp_path / "mse", model="simple_cnn", target="votes", width=4, epochs=1, batch_size=16,
                  device="cpu", progress=False, seed=0, log=lambda *a: None)
    assert res["test"]["schema"] == "decals-dr5" and 0 < res["test"]["rmse"] < 0.4
    assert "dirichlet_nll" not in res["test"]
    p = S.predict(tmp_path / "mse", catalog, device="cpu")
    assert not any(c.endswith("_concentration") for c in p.columns)
    for a, b in DR5.slices:
        np.testing.assert_allclose(p[DR5.fraction_columns].to_numpy()[:, a:b].sum(1), 1, atol=1e-5)
    with pytest.raises(Exception, match="this run predicts classes|vote"):
        S.zoobot_frame(p, {"target": "class"})


def test_missing_vote_column_is_named(tmp_path, capsys):
    bad = write_zoobot_catalog(tmp_path, n=24, drop=["bar-dr5_weak"])
    capsys.readouterr()
    assert main(["train", "--data", bad, "--out", str(tmp_path / "run"), *TRAIN, "--schema", "decals-dr5"]) == 2
    err = capsys.readouterr().err
    assert "decals_dr5_ortho_train_catalog.parquet" in err and "no vote column 'bar-dr5_weak'" in err
    assert "Traceback" not in err
    assert main(["train", "--data", bad, "--out", str(tmp_path / "r2"), *TRAIN]) == 2  # auto: still DR5, still named
    assert "bar-dr5_weak" in capsys.readouterr().err


def test_catalog_source_reads_zoobot_names(catalog):
    from galmo.sources import open_source

    src = open_source(catalog)
    cat = src.catalog
    assert src.format == "catalog+folder" and len(src) == 48 and src.shape == (3, 32, 32)
    assert cat["id"].tolist() == cat["id_str"].tolist() and cat["ref"].iat[0].endswith(".png")
    raw = pd.read_parquet(catalog)
    np.testing.assert_array_equal(cat["smooth-or-featured-dr5_total-votes"], raw[DR5.label_cols[:3]].sum(1))


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_simulated_volunteers_for_every_campaign(name):
    schema = get_schema(name)
    rng = np.random.default_rng(3)
    truth = pd.DataFrame({"id": [f"s{i}" for i in range(20)], "class": rng.integers(0, 10, 20),
                          "anomaly_type": "", "psf_fwhm_r": 1.1, "r50_arcsec": rng.uniform(1, 4, 20),
                          "arm_strength": rng.uniform(0, 0.5, 20), "clumpiness": rng.uniform(0, 1, 20),
                          "disk_frac": rng.uniform(0, 1, 20), "inclination_deg": rng.uniform(0, 90, 20),
                          "axis_ratio": rng.uniform(0.2, 1, 20), "bar_strength": rng.uniform(0, 0.2, 20),
                          "bulge_frac": rng.uniform(0, 0.6, 20), "tidal_features": False,
                          "dust_tau_g": rng.uniform(0, 1, 20), "ring_radius_arcsec": np.nan,
                          "pitch_deg": rng.uniform(5, 40, 20), "n_arms": rng.integers(0, 5, 20)})
    a, b = campaign_counts(truth, name, seed=1), campaign_counts(truth, name, seed=1)
    pd.testing.assert_frame_equal(a, b)  # seeded
    counts = a[schema.label_cols].to_numpy()
    index = {c: k for k, c in enumerate(schema.label_cols)}
    for q, (s, e), tot in zip(schema.questions, schema.slices, schema.total_columns):
        asked = a["n_volunteers"].to_numpy() if q.parent is None else counts[:, index[q.parent]]
        np.testing.assert_array_equal(counts[:, s:e].sum(1), asked)  # everyone who reached it answered
        np.testing.assert_array_equal(a[tot], asked)
    assert (a["n_volunteers"] >= 10).all() and counts[:, :3].sum() == a["n_volunteers"].sum()
