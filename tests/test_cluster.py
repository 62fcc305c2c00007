"""VotingClustering: Hungarian alignment, agreement rule, bagging, scale-out paths, metrics."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from galmo.stages.voting import VotingClustering, align_labels, greedy_mapping, overlap_matrix, vote
from galmo.core.errors import GalmoError
from galmo.core.metrics import clustering_scores, contingency, purity


def test_permuted_labelling_aligns_back_exactly():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 7, size=500)
    perm = rng.permutation(7)
    aligned, mapping = align_labels(ref, perm[ref], 7)
    assert np.array_equal(aligned, ref)
    assert np.array_equal(mapping[perm], np.arange(7))


def test_hungarian_never_collides_where_greedy_does():
    # member cluster 1 overlaps reference cluster 0 most (3 vs 2): greedy maps both clusters to 0
    ref = np.array([0] * 6 + [1] * 2)
    lab = np.array([0] * 3 + [1] * 5)
    greedy = greedy_mapping(ref, lab, 2)
    assert list(greedy) == [0, 0]  # eUML's mapping: two clusters overwrite each other
    aligned, mapping = align_labels(ref, lab, 2)
    assert sorted(mapping) == [0, 1]  # one-to-one
    assert list(mapping) == [0, 1]
    assert (aligned == ref).sum() == overlap_matrix(ref, lab, 2)[[0, 1], [0, 1]].sum() == 5


def test_vote_all_and_min_agree():
    L = np.array([[0, 0, 0],
                  [0, 0, 1],
                  [2, 1, 0],
                  [-1, 3, 3]])
    lab, top = vote(L)  # all three must agree
    assert lab.tolist() == [0, -1, -1, -1]
    assert top.tolist() == [3, 2, 1, 2]
    lab2, _ = vote(L, min_agree=2)
    assert lab2.tolist() == [0, 0, -1, 3]
    with pytest.raises(GalmoError):
        vote(L, min_agree=4)


def test_voting_clustering_on_blobs_and_k_list():
    X, y = make_blobs(600, centers=5, n_features=8, cluster_std=0.6, random_state=0)
    vc = VotingClustering(n_clusters=[5, 8], random_state=0).fit(X)
    assert vc.fraction_classified_ == 1.0  # well separated: every member finds the same 5 groups
    s = clustering_scores(vc.labels_, y)
    assert s["purity"] == 1.0 and s["nmi"] > 0.99 and s["ari"] > 0.99
    fr = vc.fraction_classified()
    assert set(fr) == {5, 8} and fr[8] <= 1.0
    assert vc.member_labels_.shape == (600, 3)
    # aligned members agree label-for-label where classified
    ok = vc.labels_ >= 0
    assert (vc.member_labels_[ok] == vc.labels_[ok, None]).all()
    # predict reproduces the fit on the same points
    assert (vc.predict(X) == vc.labels_).mean() > 0.99


def test_min_agree_classifies_more_and_bagging_runs():
    X, y = make_blobs(400, centers=4, n_features=6, cluster_std=2.5, random_state=1)
    strict = VotingClustering(6, random_state=0).fit(X)
    loose = VotingClustering(6, min_agree=2, random_state=0).fit(X)
    assert loose.fraction_classified_ >= strict.fraction_classified_
    assert ((strict.labels_ >= 0) <= (loose.labels_ >= 0)).all()  # strictly classified ⊂ loosely classified
    bag = VotingClustering(4, bagging=2, random_state=0).fit(X)
    assert len(bag.members_[0]) == 2 and bag.labels_.shape == (400,)
    assert clustering_scores(bag.labels_, y)["purity"] > 0.9


def test_scale_out_paths_subsample_and_minibatch():
    X, y = make_blobs(3000, centers=6, n_features=16, cluster_std=1.0, random_state=2)
    vc = VotingClustering(6, subsample=500, birch_subsample=800, minibatch_above=1000, random_state=0).fit(X)
    assert type(vc.members_[0][0]).__name__ == "_Member"
    assert vc.fraction_classified_ > 0.95
    assert clustering_scores(vc.labels_, y)["purity"] > 0.99


def test_bad_input_messages():
    with pytest.raises(GalmoError, match="2-D"):
        VotingClustering(3).fit(np.zeros((10, 2, 2)))
    with pytest.raises(GalmoError, match="NaN"):
        VotingClustering(3).fit(np.full((10, 2), np.nan))
    with pytest.raises(GalmoError, match="unknown clustering member"):
        VotingClustering(3, members=["kmeans", "dbscan"]).fit(np.random.default_rng(0).normal(size=(30, 2)))
    with pytest.raises(GalmoError, match="K"):
        VotingClustering(0).fit(np.zeros((10, 2)))
    with pytest.raises(GalmoError, match="not fitted"):
        VotingClustering(3).predict(np.zeros((10, 2)))


def test_predict_members_and_nearest_centroid():
    """predict_members gives what the fit gives on its own points (well separated), and the nearest
    centroid (scikit-learn's pairwise_distances_argmin) equals the brute-force argmin."""
    from galmo.stages.voting import _nearest_centroid

    X, _ = make_blobs(500, centers=4, n_features=5, cluster_std=0.5, random_state=3)
    vc = VotingClustering([4, 5], random_state=0).fit(X)
    lab, agree, members = vc.predict_members(X)
    assert np.array_equal(lab, vc.labels_) and np.array_equal(agree, vc.agreement_)
    assert np.array_equal(members, vc.member_labels_)
    assert np.array_equal(vc.predict(X, k=5), vc.predict_members(X, 5)[0])
    rng = np.random.default_rng(0)
    P, C = rng.normal(size=(3000, 7)).astype(np.float32), rng.normal(size=(9, 7)).astype(np.float32)
    brute = ((P[:, None, :].astype(np.float64) - C[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(_nearest_centroid(P, C), brute)


def test_purity_and_contingency():
    g = np.array([0, 0, 0, 1, 1, -1])
    c = np.array([1, 1, 2, 3, 3, 0])
    table, gu, cu = contingency(g, c)
    assert gu.tolist() == [0, 1] and cu.tolist() == [1, 2, 3]
    assert table.tolist() == [[2, 1, 0], [0, 0, 2]]
    assert purity(g, c) == pytest.approx(4 / 5)


def test_cli_cluster_end_to_end(tmp_path):
    import json

    import pandas as pd

    from galmo.cli import main
    from galmo.simulate import simulate

    data = simulate(n=48, size=32, seed=0, out=tmp_path / "tiny.h5")
    out = tmp_path / "run"
    rc = main(["cluster", "--data", str(data), "--k", "4", "6", "--out", str(out), "--image-size", "32",
               "--denoise", "--denoise-epochs", "1", "--morph-per-group", "1", "--min-agree", "2", "--no-progress"])
    assert rc == 0
    cat = pd.read_parquet(out / "cluster_catalog.parquet")
    assert len(cat) == 48 and {"id", "group", "agreement", "label_kmeans", "label_agglomerative",
                               "label_birch", "group_k6", "inv_1"} <= set(cat.columns)
    m = json.loads((out / "metrics.json").read_text())
    frac = float((cat["group"] >= 0).mean())
    assert m["fraction_classified"] == pytest.approx(frac)
    assert set(m["fraction_classified_by_k"]) == {"4", "6"}
    assert ((cat["agreement"] >= 2) == (cat["group"] >= 0)).all()
    ok = cat["group"] >= 0
    assert m["purity"] == pytest.approx(purity(cat["group"][ok], cat["label"][ok]))
    # 60 asked for, but 48 galaxies span at most 47 between-galaxy directions
    assert "psnr_gain" in m and 2 <= m["invariant_components"] <= 47 and m["pca_components"] is None
    assert len(m["invariant_ratio"]) == m["invariant_components"] and m["invariant_n_fit"] == 48
    assert m["stages"] == {"denoise": True, "polar": True, "invariant": True, "pca": False, "graph": True}
    assert m["invariant_views"] == "16 views of 48 galaxies" and m["graph_fitted_on"] == 48
    assert np.all(np.diff(m["invariant_ratio"]) <= 0)
    for f in ("report.html", "figures/cluster_map.png", "figures/cluster_confusion.png", "cluster_confusion.csv",
              "figures/cluster_gini_m20.png", "cluster_morphology.parquet", "config.json"):
        assert (out / f).exists(), f
    assert "Unsupervised groups" in (out / "report.html").read_text()
    # galmo report RUN renders the same section from the folder's files
    sec = json.loads((out / "sections" / "cluster.json").read_text())
    (out / "sections" / "cluster.json").unlink()
    assert main(["report", str(out)]) == 0
    assert json.loads((out / "sections" / "cluster.json").read_text()) == sec
    assert "<table" in sec["body"] and "Groups × true classes" in sec["body"] and len(sec["figures"]) >= 5


def test_cli_cluster_graph_embedding(tmp_path):
    import json

    import pandas as pd

    from galmo.cli import main
    from galmo.simulate import simulate

    data = simulate(n=60, size=32, seed=1, out=tmp_path / "tiny.h5")
    out = tmp_path / "run"
    assert main(["cluster", "--data", str(data), "--k", "5", "--out", str(out), "--image-size", "32",
                 "--graph-components", "4", "--graph-neighbors", "8", "--morph-per-group", "0", "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert m["stages"]["graph"] is True and m["graph_fitted_on"] == 60 and cfg["graph_components"] == 4 and cfg["graph_neighbors"] == 8
    cat = pd.read_parquet(out / "cluster_catalog.parquet")
    assert m["fraction_classified"] == pytest.approx(float((cat["group"] >= 0).mean()))
    assert m["fraction_classified"] > 0.3
    # galmo run CONFIG.json re-runs it: same settings, same seed, same groups
    assert main(["run", str(out / "config.json"), "--out", str(tmp_path / "again")]) == 0
    again = pd.read_parquet(tmp_path / "again" / "cluster_catalog.parquet")
    assert again["group"].tolist() == cat["group"].tolist()


def _tiny_config(out, **kw):
    from galmo.methods.unsupervised.config import ClusterConfig

    base = dict(out=str(out), k=(4,), image_size=(32, 64), layer="4", views=2, views_max_fit=12, graph_components=4,
                graph_neighbors=6, batch_size=7, morph_per_group=0, report=False, progress=False, device="cpu")
    return ClusterConfig(**{**base, **kw})


def test_run_is_the_pipeline_fitted_then_streamed(tmp_path):
    """run_cluster fits make_pipeline(cfg) on the fit sample and streams the other galaxies through it:
    the fitted galaxies keep the groups of Pipeline.fit, the others get Pipeline.predict; with every
    galaxy in the fit sample the groups are those of make_pipeline(cfg).fit_predict(images)."""
    import pandas as pd

    from galmo.methods.unsupervised.run import cluster_features, features, make_pipeline, run_cluster, transform_steps
    from galmo.simulate import simulate
    from galmo.sources import open_source

    src = open_source(simulate(n=40, size=32, seed=3, out=tmp_path / "tiny.h5"))
    X = src.read(np.arange(len(src)))
    cfg = _tiny_config(tmp_path / "all")
    m = run_cluster(cfg, src=src, log=lambda s: None)
    cat = pd.read_parquet(tmp_path / "all" / "cluster_catalog.parquet")
    pipe = make_pipeline(cfg, n_fit=40)
    assert [n for n, _ in pipe.steps] == ["denoise", "invariant", "graph", "cluster"]
    groups = pipe.fit_predict(X)
    assert m["n_fit"] == m["n"] == 40 and np.array_equal(cat["group"].to_numpy(), groups)
    assert np.array_equal(cat["label_birch"].to_numpy(), pipe[-1].member_labels_[:, 2])
    # the in-memory study functions run the same stages with the same draws
    F, V, idx, _ = features(X, cfg)
    assert np.array_equal(idx, pipe.named_steps["invariant"].view_index_) and 3 <= len(idx) < 40
    assert V.shape == (2, len(idx), 2 * 80) and np.all(np.diff(idx) > 0)
    vc, red, P, _ = cluster_features(F, cfg, V, idx)
    assert np.array_equal(vc.labels_, groups)
    np.testing.assert_allclose(cat[[f"inv_{i + 1}" for i in range(P.shape[1])]].to_numpy(), P, atol=1e-5)
    d = np.linalg.norm(V[0][:, None] - F[None], axis=2)  # a view is another observation of the same galaxy
    assert (d.argmin(1) == idx).mean() > 0.5
    # a fit sample of 24: those keep their fit groups, the other 16 are streamed through the fitted pipeline
    part = cfg.replace(out=str(tmp_path / "part"), fit_max=24)
    m2 = run_cluster(part, src=src, log=lambda s: None)
    cat2 = pd.read_parquet(tmp_path / "part" / "cluster_catalog.parquet")
    fit = np.sort(np.random.default_rng(0).choice(40, 24, replace=False))
    rest = np.setdiff1d(np.arange(40), fit)
    pipe2 = make_pipeline(part, n_fit=24).fit(X[fit])
    assert m2["n"] == 40 and m2["n_fit"] == 24 and cat2["id"].tolist() == src.catalog["id"].tolist()
    assert np.array_equal(cat2["group"].to_numpy()[fit], pipe2[-1].labels_)
    assert np.array_equal(cat2["group"].to_numpy()[rest], pipe2.predict(X[rest]))
    inv = transform_steps(pipe2, X[rest])["invariant"]
    np.testing.assert_allclose(cat2[[f"inv_{i + 1}" for i in range(inv.shape[1])]].to_numpy()[rest], inv, atol=1e-5)
    assert m2["fraction_classified"] == pytest.approx(float((cat2["group"] >= 0).mean()))


def test_feature_presets_and_overrides():
    from galmo.core.errors import GalmoError
    from galmo.methods.unsupervised.config import ClusterConfig as C

    assert C(features="euml").encoding() == {"radial": "linear", "layer": None, "pool": "avg", "size": 160}
    tex = C().encoding()
    assert tex["radial"] == "log" and tex["layer"] == (2, 3, 4, 5, 6) and tex["pool"] == "meanstd"
    assert C(layer="3, 4").encoding()["layer"] == (3, 4) and C(layer=[5]).encoding()["layer"] == 5
    assert C(layer="5,3,5").encoding()["layer"] == (3, 5)  # as timm returns them: in block order, once
    assert C(image_size=(48,), layer="final").encoding()["size"] == 48
    assert C(image_size=48, layer="final").encoding()["layer"] is None
    assert C(features="euml", image_size=(32, 120), radial="log", layer="3", pool="meanstd").encoding() == {
        "radial": "log", "layer": 3, "pool": "meanstd", "size": (32, 120)}
    assert C(polar=False).encoder_size() == 127 and C().encoder_size() == (64, 252)
    for bad in ({"features": "best"}, {"image_size": (1, 2, 3)}, {"layer": "deep"}, {"layer": "3,x"}):
        with pytest.raises(GalmoError):
            C(**bad).encoding()


def test_cluster_config_validation_lives_in_the_config():
    from galmo.methods.unsupervised.config import ClusterConfig as C

    assert C().validate() == C()
    for bad, msg in (({"k": (20, 1)}, "--k must be ≥ 2"), ({"min_agree": 4}, "--min-agree must be between 1"),
                     ({"whiten": True}, "--whiten set the PCA that --no-invariant uses"),
                     ({"pca_variance": 0.8, "standardize": False}, "--pca-variance, --no-standardize set"),
                     ({"views": 0}, "--views ≥ 1"), ({"members": ("kmeans", "dbscan")}, "--members"),
                     ({"fit_max": 10}, "fewer galaxies than K=20")):
        with pytest.raises(GalmoError, match=msg):
            C(**bad).validate()
    assert C(invariant=False, whiten=True, pca_variance=0.8).validate().whiten  # fine with the PCA path
    assert C(k=5).k == (5,) and C(weights="none").weights is None


def test_cli_cluster_euml_features_record_their_settings(tmp_path):
    import json

    from galmo.cli import main
    from galmo.simulate import simulate

    data = simulate(n=40, size=32, seed=2, out=tmp_path / "tiny.h5")
    for name, extra in (("e", ["--features", "euml", "--no-invariant", "--no-graph"]),
                        ("t", ["--features", "texture"])):
        assert main(["cluster", "--data", str(data), "--k", "4", "--out", str(tmp_path / name), *extra,
                     "--image-size", "32", "--morph-per-group", "0", "--no-progress"]) == 0
    de = json.loads((tmp_path / "e" / "config.json").read_text())
    dt = json.loads((tmp_path / "t" / "config.json").read_text())
    ce, ct = de["encoding"], dt["encoding"]
    assert de["method"] == dt["method"] == "cluster" and de["config"]["features"] == "euml"
    assert (ce["radial"], ce["layer"], ce["pool"], ce["size"]) == ("linear", None, "avg", 32)
    assert (ct["radial"], ct["layer"], ct["pool"]) == ("log", [2, 3, 4, 5, 6], "meanstd")
    assert (de["config"]["invariant"], de["config"]["graph"], dt["config"]["invariant"], dt["config"]["graph"]) == (
        False, False, True, True)
    me = json.loads((tmp_path / "e" / "metrics.json").read_text())
    mt = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert me["pca_components"] >= 2 and me["invariant_components"] is None and me["stages"]["pca"]
    assert me["n"] == mt["n"] == 40 and 0 < me["fraction_classified"] <= 1 and 0 < mt["fraction_classified"] <= 1
    assert "log-polar unwrap" in (tmp_path / "t" / "report.html").read_text()
    # without the unwrap the 64×252 texture input becomes the square of the same pixel count, as recorded
    assert main(["cluster", "--data", str(data), "--k", "4", "--out", str(tmp_path / "n"), "--no-polar",
                 "--morph-per-group", "0", "--no-progress"]) == 0
    assert json.loads((tmp_path / "n" / "config.json").read_text())["encoding"]["size"] == 127


def test_cli_cluster_bad_input(tmp_path, capsys):
    from galmo.cli import main

    assert main(["cluster", "--data", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "r")]) == 2
    assert "no such file" in capsys.readouterr().err
    # settings of the PCA path given while the invariant projection runs: said, not silently ignored
    assert main(["cluster", "--data", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "r"), "--whiten"]) == 2
    assert "--no-invariant" in capsys.readouterr().err


def test_demo_cluster_section_has_its_own_run_folder(tmp_path):
    """The demo runs the clustering in run/cluster/ (its own config.json for galmo run) and the demo's
    report shows it; galmo report rebuilds the same section from the files."""
    import json

    from galmo.methods.unsupervised.run import demo_section
    from galmo.report import rebuild
    from galmo.simulate import simulate
    from galmo.sources import open_source

    data = simulate(n=60, size=32, seed=2, out=tmp_path / "s.h5")
    run = tmp_path / "demo"
    m = demo_section(run, open_source(data), quick=True)
    assert json.loads((run / "cluster" / "config.json").read_text())["method"] == "cluster"
    assert not (run / "config.json").exists()
    sec = json.loads((run / "sections" / "cluster.json").read_text())
    assert sec["figures"] and all(f.startswith("cluster/figures/") for f in sec["figures"])
    assert f"{m['n_classified']}" in sec["body"]
    (run / "sections" / "cluster.json").unlink()
    rebuild(run)
    assert json.loads((run / "sections" / "cluster.json").read_text()) == sec
