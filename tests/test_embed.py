"""Embeddings: faiss exact vs ANN, similarity, outliers, probes, and the CLI verbs end to end."""

import json

import numpy as np
import pandas as pd
import pytest

from galmo.methods.embeddings.index import SimilarityIndex, index_for, neighbour_agreement, neighbours
from galmo.methods.embeddings.outliers import outlier_scores
from galmo.methods.embeddings.probe import probe, probe_splits
from galmo.methods.embeddings.store import read_embeddings, write_embeddings
from galmo.core.errors import GalmoError


# ---------------------------------------------------------------- a toy Galaxy10-schema source
def make_toy_h5(path, n=120, size=32, seed=0, anomalies=0.1):
    """Three blob classes (round, elongated, ring) with redshift-dependent size, flux and colour, plus
    injected anomalies (a bright off-centre streak) flagged in the truth parquet."""
    import h5py

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    label = np.arange(n) % 3
    z = rng.uniform(0.05, 0.4, n)
    anom = np.zeros(n, bool)
    anom[rng.choice(n, size=int(round(anomalies * n)), replace=False)] = True
    flux = np.zeros((n, 3), np.float32)
    images = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        r0 = 0.6 / z[i] * size / 32
        th = rng.uniform(0, np.pi)
        u = xx * np.cos(th) + yy * np.sin(th)
        v = -xx * np.sin(th) + yy * np.cos(th)
        if label[i] == 0:
            prof = np.exp(-(u ** 2 + v ** 2) / (2 * r0 ** 2))
        elif label[i] == 1:
            prof = np.exp(-(u ** 2 / (2 * (2 * r0) ** 2) + v ** 2 / (2 * (0.35 * r0) ** 2)))
        else:
            rr = np.hypot(u, v)
            prof = np.exp(-((rr - 1.6 * r0) ** 2) / (2 * (0.35 * r0) ** 2)) + 0.5 * np.exp(-rr ** 2 / (0.5 * r0 ** 2))
        if anom[i]:
            prof = prof + 1.5 * np.exp(-((v - 0.25 * size) ** 2) / 2.0)
        colour = np.array([1.0 - z[i], 1.0, 1.0 + 2 * z[i]])  # g, r, z
        f = 30 / z[i] ** 2 * colour
        flux[i] = f
        img = prof[None] * f[:, None, None] / f.max() + rng.normal(0, 0.03, (3, size, size))
        images[i] = np.clip(img[::-1].transpose(1, 2, 0) * 220, 0, 255).astype(np.uint8)  # RGB = z, r, g
    ids = np.array([f"toy{i:04d}" for i in range(n)])
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["ans"] = label
        f["redshift"] = z
        f["id"] = ids.astype("S")
        f.attrs["class_names"] = json.dumps(["round", "elongated", "ring"])
        f.attrs["bands"] = "g,r,z"
    truth = pd.DataFrame({"id": ids, "flux_g": flux[:, 0], "flux_r": flux[:, 1], "flux_z": flux[:, 2],
                          "is_anomaly": anom, "anomaly_type": np.where(anom, "streak", "")})
    truth.to_parquet(str(path)[:-3] + ".truth.parquet", index=False)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_h5(tmp_path_factory.mktemp("toy") / "toy.h5")


def _clusters(n=600, d=16, k=4, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, d))
    y = np.arange(n) % k
    return centres[y] + spread * rng.normal(0, 1, (n, d)), y


# ---------------------------------------------------------------- faiss
def test_exact_and_ann_agree_on_small_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 32)).astype(np.float32)
    Q = X[:100] + 0.05 * rng.normal(size=(100, 32)).astype(np.float32)
    _, exact = SimilarityIndex("exact").fit(X).search(Q, 10)
    _, hnsw = SimilarityIndex("hnsw", M=16, ef_search=128).fit(X).search(Q, 10)
    _, ivf = SimilarityIndex("ivf", nlist=32, nprobe=32).fit(X).search(Q, 10)  # nprobe = nlist: exhaustive
    _, pq = SimilarityIndex("pq").fit(X).search(Q, 10)
    rec = lambda a: np.mean([len(set(a[i]) & set(exact[i])) / 10 for i in range(len(Q))])  # noqa: E731
    assert rec(hnsw) >= 0.95 and rec(pq) >= 0.95
    assert rec(ivf) == pytest.approx(1.0)
    # brute-force cosine gives the same top-1 as faiss exact
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    assert np.array_equal((Qn @ Xn.T).argmax(1), exact[:, 0])


def test_similar_returns_query_first_and_index_is_reused(tmp_path):
    X, y = _clusters()
    ids = [f"g{i}" for i in range(len(X))]
    p = write_embeddings(tmp_path / "emb.parquet", ids, X, {"model": "test"})
    index, emb, reused = index_for(p)
    assert not reused and (tmp_path / "emb.parquet.faiss").exists()
    t = neighbours(index, emb, "g7", k=10)
    assert t["id"].iloc[0] == "g7" and t["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert (y[t["position"].to_numpy()] == y[7]).mean() == 1.0  # well-separated clusters
    _, _, reused = index_for(p)
    assert reused
    write_embeddings(p, ids, X * 2 + 1, {"model": "test"})  # changed file → rebuilt
    _, _, reused = index_for(p)
    assert not reused
    assert neighbour_agreement(X, y, k=10) > 0.95
    with pytest.raises(GalmoError, match="not in the embeddings"):
        neighbours(index, emb, "nope")


def test_embeddings_parquet_roundtrip(tmp_path):
    X = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    p = write_embeddings(tmp_path / "e.parquet", list("abcdefg"), X, {"model": "m"},
                         extra=pd.DataFrame({"label": np.arange(7)}))
    e = read_embeddings(p)
    assert e.meta["dim"] == 5 and e.meta["model"] == "m"
    np.testing.assert_array_equal(e.X, X)
    assert list(e.ids) == list("abcdefg") and "label" in e.table.columns
    (tmp_path / "bad.parquet").write_text("nope")
    with pytest.raises(GalmoError, match="bad.parquet"):
        read_embeddings(tmp_path / "bad.parquet")


def test_duplicate_ids_in_an_embeddings_file_are_refused_by_every_reader(tmp_path, capsys):
    from galmo.cli import main

    X = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    p = write_embeddings(tmp_path / "dup.parquet", ["a", "b", "a", "c", "b", "a"], X)
    with pytest.raises(GalmoError, match=r"dup\.parquet: 3 duplicate ids \(e\.g\. 'a'\)"):
        read_embeddings(p)
    for argv in (["similar", "--emb", str(p), "--id", "c"], ["outliers", "--emb", str(p), "--out", str(tmp_path / "o")],
                 ["probe", "--emb", str(p), "--labels", "label", "--no-cnn"]):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.startswith(f"galmo: error: {p}: 3 duplicate ids (e.g. 'a')"), argv
    assert not (tmp_path / "o").exists() and not (tmp_path / "dup.parquet.faiss").exists()


# ---------------------------------------------------------------- outliers and probes
def test_outlier_auroc_on_obvious_anomalies():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 8))
    anom = np.zeros(500, bool)
    anom[rng.choice(500, 25, replace=False)] = True
    X[anom] += rng.normal(0, 1, (25, 8)) * 4 + 3
    score, parts = outlier_scores(X, return_parts=True)
    assert roc_auc_score(anom, score) > 0.95
    assert roc_auc_score(anom, parts["isolation_forest"]) > 0.9 and roc_auc_score(anom, parts["lof"]) > 0.9
    assert 0 < score.min() and score.max() <= 1


def test_outliers_score_sims_without_anomalies_and_evaluate_only_when_both_kinds_exist(tmp_path):
    """Ordinary sims (is_anomaly all False) and sources without truth are scored; the AUROC only
    when anomalous and normal galaxies are both flagged, the metrics saying why not otherwise."""
    from sklearn.metrics import roc_auc_score

    from galmo.cli import main
    from galmo.methods.embeddings.outliers import injected_metrics
    from galmo.sources import open_source

    h5 = make_toy_h5(tmp_path / "plain.h5", n=30, size=16, anomalies=0.0)
    src = open_source(h5)
    assert not src.catalog["is_anomaly"].any()
    im = src.read(slice(None))
    X = im.reshape(30, 3, 4, 4, 4, 4).mean((3, 5)).reshape(30, -1)  # 4x4-pixel block means: 48-d
    emb = write_embeddings(tmp_path / "e.parquet", src.catalog["id"], X, {"data": str(h5)})
    for out in ("with_truth", "no_truth"):
        if out == "no_truth":
            (tmp_path / "plain.truth.parquet").unlink()  # no is_anomaly column at all
        assert main(["outliers", "--emb", str(emb), "--out", str(tmp_path / out), "--top", "4"]) == 0
        m = json.loads((tmp_path / out / "outliers_metrics.json").read_text())
        ranked = pd.read_csv(tmp_path / out / "outliers.csv")
        assert m["n"] == 30 and m["auroc_injected"] is None and len(ranked) == 30
        assert (tmp_path / out / "top_outliers.png").stat().st_size > 1000
        expected = np.sort(outlier_scores(read_embeddings(emb).X, seed=0))[::-1]
        np.testing.assert_allclose(ranked["anomaly_score"], expected)  # scored exactly as with truth
    assert m["auroc_note"] == "not evaluated: the catalog has no is_anomaly column"
    m = json.loads((tmp_path / "with_truth" / "outliers_metrics.json").read_text())
    assert m["n_anomalous"] == 0 and m["n_normal"] == 30
    assert m["auroc_note"].startswith("not evaluated: no galaxy is flagged anomalous (is_anomaly)")
    # both kinds: the AUROC over the flagged rows (a missing flag is left out, not counted as True)
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.3])
    flags = [True, np.nan, False, False, True, None]
    m = injected_metrics(scores, flags)
    assert m["n_anomalous"] == 2 and m["n_normal"] == 2 and "auroc_note" not in m
    assert m["auroc_injected"] == roc_auc_score([1, 0, 0, 1], [0.9, 0.1, 0.2, 0.7]) == 1.0
    m = injected_metrics(scores, [True] * 6)
    assert m["auroc_injected"] is None and "no galaxy is flagged normal" in m["auroc_note"]


def test_probe_with_fraction():
    X, y = _clusters(n=1000, d=16, k=4, spread=1.5)
    splits = probe_splits(y, 0.01, folds=5, seed=0)
    assert all(len(np.unique(y[tr])) == 4 and 8 <= len(tr) <= 12 and not set(tr) & set(te) for tr, te in splits)
    lo, hi = probe(X, y, 0.01), probe(X, y, 1.0)
    assert lo["n_train_mean"] < 15 and hi["n_train_mean"] == 800
    assert 0.4 < lo["mean"] < hi["mean"] and hi["mean"] > 0.85
    chance = probe(np.random.default_rng(3).normal(size=X.shape), y, 1.0)
    assert chance["mean"] < 0.35
    # regression: a redshift linear in the features is recovered, σ_NMAD small
    z = 0.3 + 0.05 * X[:, 0]
    r = probe(X, z, 0.1, kind="regression")
    assert r["metric"] == "sigma_nmad" and r["mean"] < 0.01
    with pytest.raises(GalmoError, match="fraction"):
        probe(X, y, 0.0)


# ---------------------------------------------------------------- the verbs, end to end on a toy source
def test_cli_end_to_end(toy, tmp_path, capsys):
    from galmo.cli import main

    run = tmp_path / "pt"
    assert main(["pretrain", "--method", "astropt", "--data", str(toy), "--out", str(run), "--epochs", "2", "--photometry",
                 "--device", "cpu", "--batch-size", "32", "--patch-size", "8"]) == 0
    assert (run / "model.safetensors").exists() and (run / "config.json").exists()
    emb = tmp_path / "emb.parquet"
    assert main(["embed", "--encoder", str(run), "--data", str(toy), "--out", str(emb), "--no-progress"]) == 0
    e = read_embeddings(emb)
    assert e.X.shape == (120, 64) and e.meta["model"] == str(run) and e.meta["photometry_tokens"]
    capsys.readouterr()
    assert main(["similar", "--emb", str(emb), "--id", "toy0005", "--top", "5", "--out",
                 str(tmp_path / "nb.csv")]) == 0
    nb = pd.read_csv(tmp_path / "nb.csv")
    assert nb["id"].iloc[0] == "toy0005" and len(nb) == 5 and (tmp_path / "nb.png").exists()
    assert main(["outliers", "--emb", str(emb), "--out", str(tmp_path / "out"), "--top", "8"]) == 0
    m = json.loads((tmp_path / "out" / "outliers_metrics.json").read_text())
    assert m["auroc_injected"] > 0.5
    ranked = pd.read_csv(tmp_path / "out" / "outliers.csv")
    assert len(ranked) == 120 and ranked["anomaly_score"].is_monotonic_decreasing
    assert main(["probe", "--emb", str(emb), "--labels", "label", "--fraction", "0.5", "--folds", "3",
                 "--no-cnn", "--out", str(tmp_path / "probe.json")]) == 0
    r = json.loads((tmp_path / "probe.json").read_text())["results"][0]
    assert r["mean"] > 0.5  # three toy classes: well above chance (1/3)
    # a timm backbone is an encoder too (offline EfficientNet-Lite0, small input for speed)
    e2 = tmp_path / "lite0.parquet"
    assert main(["embed", "--data", str(toy), "--out", str(e2), "--image-size", "32", "--no-progress"]) == 0
    assert read_embeddings(e2).X.shape == (120, 1280)
    # bad input: one clear message, exit status 2
    assert main(["similar", "--emb", str(tmp_path / "missing.parquet"), "--id", "x"]) == 2
    assert "missing.parquet" in capsys.readouterr().err


def test_demo_section_quick(toy, tmp_path):
    from galmo.methods.embeddings.run import demo_section
    from galmo.sources import open_source

    res = demo_section(tmp_path, open_source(toy), quick=True)
    sec = json.loads((tmp_path / "sections" / "embeddings.json").read_text())
    assert sec["key"] == "embeddings" and len(sec["figures"]) == 3
    assert all((tmp_path / f).exists() for f in sec["figures"])
    tasks = {r["task"] for r in res["table"]}
    assert {"class accuracy", "redshift σ_NMAD", "10-NN same class", "outlier AUROC (injected)"} <= tasks
    encoders = {r["encoder"] for r in res["table"]}
    assert any("photometry" in e for e in encoders) and any("simple_cnn" in e for e in encoders)
    # reruns reuse the pretrained models (weights not rewritten) and the embeddings (none computed)
    weights = sorted((tmp_path / "foundation").glob("*/model.safetensors"))
    stamps = [w.stat().st_mtime_ns for w in weights]
    res2 = demo_section(tmp_path, open_source(toy), quick=True)
    assert len(weights) == 2 and [w.stat().st_mtime_ns for w in weights] == stamps
    assert "images_per_s" not in res2
    # the report section is rendered again from the run folder's files alone (galmo report)
    from galmo.methods.embeddings.report import section

    sec_path = tmp_path / "sections" / "embeddings.json"
    sec_path.unlink()
    assert section(tmp_path) and json.loads(sec_path.read_text())["figures"] == sec["figures"]
    assert "patch transformer (tiny)" in json.loads(sec_path.read_text())["body"]
    assert not section(tmp_path / "figures")  # a folder without embeddings results


# ---------------------------------------------------------------- configs → flags, and galmo run
def _embeddings_parser():
    import argparse

    from galmo.cli.embeddings import register

    parser = argparse.ArgumentParser(prog="galmo")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_flags_come_from_the_configs_with_help_and_defaults():
    parser = _embeddings_parser()
    verbs = parser._subparsers._group_actions[0].choices
    flags = {v: {s for a in p._actions for s in a.option_strings} for v, p in verbs.items()}
    assert {"--encoder", "--image-size", "--progress", "--no-progress"} <= flags["embed"]
    assert "--model" not in flags["embed"]
    assert {"--emb", "--top", "--id", "--image"} <= flags["similar"] and not {"-k", "--index"} & flags["similar"]
    assert {"--model-size", "--epochs", "--lr", "--progress", "--no-augment"} <= flags["pretrain"]
    assert "--size" not in flags["pretrain"]
    assert {"--emb", "--folds", "--fraction", "--no-cnn"} <= flags["probe"] and "--emb" in flags["outliers"]
    for verb, p in verbs.items():
        for a in p._actions:
            if a.option_strings and a.dest != "help" and not a.required:
                assert "(default: " in a.help, (verb, a.option_strings)
    args = parser.parse_args(["similar", "--emb", "e.parquet", "--id", "g1", "--top", "3"])
    from galmo.methods.embeddings.config import SimilarConfig

    cfg = SimilarConfig.from_args(args)
    assert (cfg.emb, cfg.id, cfg.top, cfg.index_method, cfg.image) == ("e.parquet", "g1", 3, "auto", None)


def test_model_sizes_match_the_model():
    from galmo.methods.embeddings.config import MODEL_SIZES
    from galmo.nn.models.patch_transformer import SIZES

    assert tuple(SIZES) == MODEL_SIZES


def test_pretrain_run_is_rerun_from_its_config(toy, tmp_path):
    """config.json of a pretrain run is both the checkpoint's and the method's: galmo run repeats it
    exactly (seeded initial weights), and the run folder gets its report."""
    from galmo.cli.embeddings import run_config
    from galmo.methods.embeddings.config import PretrainConfig
    from galmo.methods.embeddings.run import run_pretrain
    from galmo.nn.checkpoint import load_state_dict

    cfg = PretrainConfig(data=str(toy), out=str(tmp_path / "a"), objective="astropt", epochs=1, device="cpu", batch_size=32,
                         max_images=60, progress=False)
    s = run_pretrain(cfg)
    assert s["epochs_run"] == 1 and (tmp_path / "a" / "report.html").exists()
    assert PretrainConfig.load(tmp_path / "a") == cfg
    sec = json.loads((tmp_path / "a" / "sections" / "embeddings.json").read_text())
    assert sec["title"].startswith("Pretraining") and "tiny" in sec["body"]
    assert run_config(tmp_path / "a" / "config.json", tmp_path / "b") == 0
    wa, wb = (load_state_dict(tmp_path / r / "model.safetensors") for r in "ab")
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    with pytest.raises(GalmoError, match="--out"):
        run_pretrain(cfg.replace(out=None))


# ---------------------------------------------------------------- one inference loop, same outputs
def test_encoders_give_the_same_embeddings_as_a_direct_forward(toy, tmp_path):
    """Every encoder kind through embed_source (galmo.nn.infer / backbones.encode) equals the plain
    forward pass it replaced, to 1e-6."""
    import torch

    from galmo.methods.embeddings.encoders import embed_source, load_encoder
    from galmo.methods.embeddings.photometry import default_photometry_names, photometry_table
    from galmo.nn.checkpoint import save_checkpoint
    from galmo.nn.models import create
    from galmo.sources import open_source

    src = open_source(toy)
    names = default_photometry_names(src.catalog, src.bands)
    phot = photometry_table(src.catalog, names)
    images = src.read(np.arange(len(src)), kind="image")
    torch.manual_seed(0)
    kw = dict(in_chans=3, img_size=32, patch_size=8, size="tiny", n_phot=len(names), phot_names=names)
    pt = create("patch_transformer", **kw).eval()
    pt.set_photometry_stats(phot)
    save_checkpoint(tmp_path / "pt", pt, "patch_transformer", kw)
    cnn_kw = dict(in_chans=3, num_outputs=3, width=8)
    cnn = create("simple_cnn", **cnn_kw).eval()
    save_checkpoint(tmp_path / "cnn", cnn, "simple_cnn", cnn_kw)
    x, p = torch.from_numpy(images), torch.from_numpy(phot)
    with torch.no_grad():
        direct = {("pt", "all"): torch.cat([pt.forward_features(x[s:s + 50], p[s:s + 50]) for s in range(0, 120, 50)]),
                  ("pt", "image"): pt.forward_features(x, tokens="image"), ("cnn", "all"): cnn.forward_features(x)}
    for (folder, tokens), want in direct.items():
        enc = load_encoder(tmp_path / folder, tokens=tokens)
        ids, X = embed_source(enc, src, batch_size=50, progress=False)
        assert X.dtype == np.float32 and list(ids) == list(src.catalog["id"].astype(str))
        np.testing.assert_allclose(X, want.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(enc.encode(images[:7], phot[:7] if tokens == "all" and folder == "pt" else None),
                                   want.numpy()[:7], rtol=0, atol=1e-5)
    from galmo.nn.backbones import encode

    lite0 = load_encoder("tf_efficientnet_lite0", size=32)
    _, X = embed_source(lite0, src, batch_size=64, progress=False)
    want = np.concatenate([encode(lite0.model, images[s:s + 64], size=32, batch_size=64) for s in (0, 64)])
    np.testing.assert_allclose(X, want, rtol=0, atol=1e-6)
