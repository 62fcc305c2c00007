"""Stages of the unsupervised pipeline: polar unwrap rotation behaviour, AutoPCA choice, denoiser
PSNR gain, encoder offline loading."""

import numpy as np
import pytest

from galmo.core.errors import GalmoError
from galmo.core.transforms import noise_sigma
from sklearn.utils.estimator_checks import parametrize_with_checks

from galmo.stages import AutoPCA, Denoiser, Encoder, GraphEmbedding, PolarUnwrap
from galmo.stages.voting import VotingClustering


def _galaxies(n, size=32, seed=0, noise=0.02):
    """Elongated exponential discs with a two-armed pattern, random orientation, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = []
    for _ in range(n):
        q, pa, s = rng.uniform(0.35, 0.7), rng.uniform(0, np.pi), rng.uniform(size / 12, size / 7)
        xr = xx * np.cos(pa) + yy * np.sin(pa)
        yr = -xx * np.sin(pa) + yy * np.cos(pa)
        r, th = np.hypot(xr, yr / q), np.arctan2(yr, xr)
        out.append(0.8 * np.exp(-r / s) * (1 + 0.4 * np.cos(2 * th - r / 2)))
    clean = np.repeat(np.array(out, np.float32)[:, None], 3, 1)
    return clean, (clean + rng.normal(0, noise, clean.shape)).astype(np.float32)


def test_polar_unwrap_is_rotation_normalised():
    _, x = _galaxies(12, size=48, noise=0.01)
    rot = np.rot90(x, 1, axes=(2, 3)).copy()
    pu = PolarUnwrap()
    a, b = pu.fit_transform(x), pu.transform(rot)
    assert a.shape == (12, 3, 24, 2 * 126)  # radius rows × (angle columns, mirrored)
    rel = lambda u, v: np.linalg.norm((u - v).reshape(len(u), -1), axis=1) / np.linalg.norm(u.reshape(len(u), -1), axis=1)
    before, after = rel(x, rot), rel(a, b)
    assert np.median(after) < 0.25 * np.median(before)
    # a different galaxy stays far away after the unwrap: the unwrap did not wash everything out
    other = rel(a, np.roll(a, 1, axis=0))
    assert np.median(after) < 0.5 * np.median(other)


def _ridge_angles(polar):
    """Angle (rad, unwrapped along the rows) of the brightest column in each row of (R, A)."""
    A = polar.shape[-1]
    return np.unwrap(polar.argmax(-1) * 2 * np.pi / A)


def test_log_polar_turns_a_logarithmic_spiral_into_a_straight_line():
    """A one-armed logarithmic spiral of pitch φ, θ = ln(r)/tan φ: with log-spaced rows the arm's angle
    grows linearly with the row, with slope ln(R/r_min)/((R−1) tan φ); with linear rows it does not."""
    size, R, pitch = 97, 48, np.radians(20.0)  # odd: the centre is a pixel, where the origin lands
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r, th = np.hypot(xx, yy), np.arctan2(yy, xx)
    d = np.angle(np.exp(1j * (th - np.log(np.maximum(r, 0.5)) / np.tan(pitch))))  # angular distance to the arm
    img = np.exp(-d ** 2 / 0.08) * (r > 3) * (r < R) + 2.0 * np.exp(-r ** 2 / 4)  # arm + central bulge
    x = np.repeat(img[None, None].astype(np.float32), 3, 1)
    rows = slice(16, 47)  # where the arm is: r from 3.4 px (outside the bulge) to 44 px
    lp = PolarUnwrap(radial="log", r_min=1.0, mirror=False).fit_transform(x)[0, 0]
    ang = _ridge_angles(lp[rows])
    i = np.arange(len(ang))
    slope, icpt = np.polyfit(i, ang, 1)
    assert abs(slope) == pytest.approx(np.log(R / 1.0) / ((R - 1) * np.tan(pitch)), rel=0.1)
    resid_log = np.sqrt(np.mean((ang - (slope * i + icpt)) ** 2))
    lin = PolarUnwrap(radial="linear", mirror=False).fit_transform(x)[0, 0]
    ang_lin = _ridge_angles(lin[4:47])
    j = np.arange(len(ang_lin))
    resid_lin = np.sqrt(np.mean((ang_lin - np.polyval(np.polyfit(j, ang_lin, 1), j)) ** 2))
    assert resid_log < 0.1 and resid_lin > 3 * resid_log
    with pytest.raises(ValueError, match="radial"):
        PolarUnwrap(radial="spiral").fit_transform(x)


def test_log_polar_unwrap_is_rotation_normalised():
    _, x = _galaxies(12, size=48, noise=0.01)
    rot = np.rot90(x, 1, axes=(2, 3)).copy()
    pu = PolarUnwrap(radial="log")
    a, b = pu.fit_transform(x), pu.transform(rot)
    rel = lambda u, v: np.linalg.norm((u - v).reshape(len(u), -1), axis=1) / np.linalg.norm(u.reshape(len(u), -1), axis=1)
    assert np.median(rel(a, b)) < 0.25 * np.median(rel(x, rot))


def test_polar_unwrap_origin_is_brightest_smoothed_pixel_near_centre():
    x = np.zeros((1, 1, 32, 32), np.float32)
    x[0, 0, 17, 14] = 1.0  # a point source off-centre (within the search box)
    x[0, 0, 1, 1] = 5.0  # a brighter pixel far from the centre is ignored
    pu = PolarUnwrap().fit(x)
    before = dict(vars(pu))
    out, origins, angles = pu.unwrap(x)
    assert origins[0].tolist() == [17, 14] and angles.shape == (1,)
    np.testing.assert_array_equal(pu.transform(x), out)
    assert vars(pu).keys() == before.keys()  # transform and unwrap write no state


def test_encoder_refuses_to_transform_before_fit():
    from sklearn.exceptions import NotFittedError

    _, x = _galaxies(2, size=32)
    with pytest.raises(NotFittedError, match="Encoder is not fitted"):
        Encoder(size=32).transform(x)
    with pytest.raises(GalmoError, match="call fit first"):
        Encoder(size=32).transform(x)


def test_autopca_chooses_components():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(400, 3)) * np.array([10.0, 7.0, 5.0])
    X = latent @ rng.normal(size=(3, 40)) + 0.05 * rng.normal(size=(400, 40))
    ap = AutoPCA(variance=0.99).fit(X)
    assert ap.n_components_ == 3
    assert ap.transform(X).shape == (400, 3)
    assert AutoPCA(method="elbow").fit(X).n_components_ == 3
    assert AutoPCA(variance=0.5, min_components=2).fit(X).n_components_ == 2
    w = AutoPCA(variance=0.99, whiten=True).fit(X).transform(X)
    assert np.allclose(w.std(0), 1.0, atol=0.05)
    with pytest.raises(GalmoError):
        AutoPCA(method="guess").fit(X)


def test_denoiser_improves_psnr(tmp_path):
    clean, noisy = _galaxies(200, size=32, noise=0.08)
    assert np.allclose(noise_sigma(noisy).mean(), 0.08, rtol=0.25)
    den = Denoiser(epochs=5, batch_size=16, widths=(16, 32), run_dir=tmp_path / "den", seed=0).fit(noisy)
    gain = den.psnr_gain(noisy, clean)
    assert gain["psnr_gain"] > 1.0, gain
    assert (tmp_path / "den" / "model.safetensors").exists()  # trained by galmo.nn.train.fit, checkpointed
    again = Denoiser(checkpoint=tmp_path / "den").fit(noisy[:2])  # reload without training
    assert again.data_range_ == den.data_range_  # the clip range of the training images travels with the weights
    np.testing.assert_array_equal(again.transform(noisy[:8]), den.transform(noisy[:8]))


def test_denoiser_transform_is_the_model_through_the_inference_loop_and_leaves_no_folder(tmp_path, monkeypatch):
    """Without run_dir the checkpoint goes to a temporary folder that is removed after the fit; the
    transform equals the model applied directly, clipped to the training range, whatever the batch."""
    import tempfile

    import torch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    clean, noisy = _galaxies(40, size=16, noise=0.05)
    den = Denoiser(epochs=1, batch_size=16, widths=(8, 16), seed=0, device="cpu").fit(noisy)
    assert list(tmp_path.iterdir()) == [] and den.checkpoint_dir_ is None
    with torch.inference_mode():
        ref = den.model_(torch.from_numpy(noisy)).numpy()
    lo, hi = den.data_range_
    assert (lo, hi) == (float(noisy.min()), float(noisy.max()))
    out = den.transform(noisy)
    np.testing.assert_allclose(out, np.clip(ref, lo, hi), atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([den.transform(noisy[:7]), den.transform(noisy[7:])]), out)
    sub = Denoiser(epochs=1, batch_size=16, widths=(8, 16), seed=0, device="cpu", max_train=20).fit(noisy)
    keep = np.random.default_rng(0).random(40) < 0.5  # the draw galmo cluster makes
    assert sub.data_range_ == (float(noisy[keep].min()), float(noisy[keep].max()))


def test_backbone_encode_goes_through_the_inference_loop_unchanged():
    """galmo.nn.backbones.encode (Encoder stage, embeddings) equals the plain channels-last forward pass
    it replaced, to 1e-6."""
    import torch
    import torch.nn.functional as F

    from galmo.nn.backbones import create_backbone, data_config, encode, to_rgb

    x = np.random.default_rng(1).random((10, 3, 24, 24), dtype=np.float32)
    m = create_backbone(weights="offline").eval().to(memory_format=torch.channels_last)
    cfg = data_config(m)
    with torch.inference_mode():
        t = F.interpolate(to_rgb(torch.from_numpy(x)), size=(32, 48), mode="bilinear", align_corners=False,
                          antialias=True)
        t = (t - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        ref = np.concatenate([m(b.contiguous(memory_format=torch.channels_last)).numpy() for b in t.split(4)])
    out = encode(m, x, size=(32, 48), batch_size=4, device="cpu", backend="torch")  # ONNX: tests/test_onnx.py
    np.testing.assert_allclose(out, ref, atol=1e-6, rtol=1e-5)
    batches = encode(m, iter([x[:3], x[3:]]), size=(32, 48), device="cpu", backend="torch")  # an iterator of batches
    np.testing.assert_allclose(batches, ref, atol=1e-6, rtol=1e-5)


def test_encoder_offline_weights_give_imagenet_features():
    _, x = _galaxies(6, size=32)
    enc = Encoder(size=64, batch_size=4).fit()
    f = enc.transform(x)
    assert f.shape == (6, 1280) and np.isfinite(f).all()
    assert f.std(0).mean() > 1e-3  # non-trivial, image-dependent features
    # pretrained, not random: every tensor of the backbone is the packaged ImageNet tensor at its
    # position, and a randomly initialised backbone differs from it
    import torch

    from galmo.nn.backbones import create_backbone, offline_weights

    packaged = list(offline_weights("tf_efficientnet_lite0").values())
    stem = next(v for v in packaged if v.ndim == 4)
    assert torch.equal(enc.model_.conv_stem.weight.detach().cpu(), stem)
    rand = create_backbone(weights=None, num_classes=0)
    assert (rand.conv_stem.weight.detach() - stem).abs().max() > 0.1


def test_encoder_mid_level_mean_std_features_match_the_backbone_blocks():
    """``layer=4, pool="meanstd"``: the mean and standard deviation over positions of the map after
    EfficientNet's 4th block (stem → blocks 0–3), at a non-square input size."""
    import torch
    import torch.nn.functional as F

    from galmo.nn.backbones import data_config, to_rgb

    _, x = _galaxies(3, size=32)
    enc = Encoder(size=(32, 96), layer=4, pool="meanstd").fit()
    f = enc.transform(x)
    m = enc.model_
    assert enc.n_features_ == 2 * m.blocks[3][-1].conv_pwl.out_channels == f.shape[1] == 160
    cfg = data_config(m)
    with torch.inference_mode():
        t = F.interpolate(to_rgb(torch.from_numpy(x)), size=(32, 96), mode="bilinear", align_corners=False,
                          antialias=True)
        t = (t - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        h = m.bn1(m.conv_stem(t))
        for b in m.blocks[:4]:
            h = b(h)
        ref = torch.cat([h.mean((2, 3)), h.flatten(2).std(2, correction=0)], 1).numpy()
    assert np.allclose(f, ref, atol=1e-4)
    assert Encoder(size=64, pool="meanstd").fit().n_features_ == 2 * 1280
    tiny = Encoder(size=16, layer=4, pool="meanstd").fit().transform(x)  # a 1×1 map: std 0, not NaN
    assert np.isfinite(tiny).all() and np.all(tiny[:, 80:] == 0)
    with pytest.raises(GalmoError, match="layer 40 does not exist"):
        Encoder(layer=40).fit()


def test_encoder_unknown_model_without_weights_is_a_clear_error():
    with pytest.raises(GalmoError, match="no offline weights"):
        Encoder(backbone="resnet18").fit()


def test_graph_embedding_makes_non_convex_groups_agree():
    """Two interleaved moons: in the raw coordinates KMeans/Ward/Birch cut across them and the
    classified galaxies are impure; on the graph embedding the members agree on almost every
    point and the groups are the moons. Galaxies outside the fitted subsample are placed by their
    fitted neighbours and land in the right group."""
    from sklearn.datasets import make_moons

    from galmo.stages.voting import VotingClustering
    from galmo.core.metrics import clustering_scores
    from galmo.stages import GraphEmbedding

    X, y = make_moons(n_samples=600, noise=0.08, random_state=0)
    raw = VotingClustering(n_clusters=2, random_state=0).fit(X)
    ok = raw.labels_ >= 0
    raw_purity = clustering_scores(raw.labels_[ok], y[ok])["purity"]
    assert raw_purity < 0.9
    ge = GraphEmbedding(n_components=2, n_neighbors=10, random_state=0)
    E = ge.fit_transform(X)
    assert E.shape == (600, 2) and np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    assert np.allclose(ge.transform(X), E, atol=1e-6)  # fitted galaxies keep their own embedding
    vc = VotingClustering(n_clusters=2, random_state=0).fit(E)
    ok = vc.labels_ >= 0
    assert ok.mean() > 0.95
    assert clustering_scores(vc.labels_[ok], y[ok])["purity"] > 0.99
    # out of sample: fit on 300, place the other 300 by their neighbours
    sub = GraphEmbedding(n_components=2, n_neighbors=10, max_fit=300, random_state=0)
    E2 = sub.fit_transform(X)
    assert sub.n_fit_ == 300 and E2.shape == (600, 2)
    lab = VotingClustering(n_clusters=2, random_state=0).fit(E2).labels_
    ok = lab >= 0
    assert ok.mean() > 0.9 and clustering_scores(lab[ok], y[ok])["purity"] > 0.98
    with pytest.raises(GalmoError, match="fitted on 2-d"):
        ge.transform(np.zeros((3, 5)))
    with pytest.raises(GalmoError, match="at least 12 galaxies"):
        GraphEmbedding(n_components=10, n_neighbors=10).fit(X[:8])
    # a refit forgets the first data: its fitted galaxies map onto the new embedding exactly
    ge.fit(X[::-1] * 2.0)
    np.testing.assert_allclose(ge.transform(X[::-1] * 2.0), ge.fit_transform(X[::-1] * 2.0), atol=1e-6)


def test_invariant_projection_keeps_what_galaxies_share_across_views():
    """Two classes differ along 2 of 12 feature directions; 6 others share two strong factors that
    change in every observation of the same galaxy (nuisance: think seeing and depth). Standardised
    PCA's leading components follow the nuisance; the invariant projection's follow the classes."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.model_selection import cross_val_score

    from galmo.stages import InvariantProjection

    rng = np.random.default_rng(0)
    n, d = 400, 12
    y = rng.integers(0, 2, n)
    base = rng.normal(0, 0.3, (n, d))
    base[:, :2] += np.where(y[:, None] == 1, 1.0, -1.0)

    load = rng.normal(0, 1, (2, 6))

    def observe():
        x = base.copy()
        x[:, 2:8] += rng.normal(0, 3.0, (n, 2)) @ load  # nuisance: new in every view
        return x

    X, views = observe(), np.stack([observe() for _ in range(3)])
    ip = InvariantProjection(n_components=2, reg=1e-3).fit(X, views=views)
    P = ip.transform(X)
    assert P.shape == (n, 2) and P.dtype == np.float32 and ip.n_views_ == 3
    assert np.all(np.diff(ip.ratio_) <= 0) and ip.ratio_[0] > 10
    knn = KNeighborsClassifier(5)
    inv_acc = cross_val_score(knn, P, y, cv=5).mean()
    pca_acc = cross_val_score(knn, AutoPCA(min_components=2, max_components=2, standardize=True).fit_transform(X),
                              y, cv=5).mean()
    assert inv_acc > 0.98 and pca_acc < 0.75
    np.testing.assert_allclose(P, ((X - ip.mean_) / ip.scale_) @ ip.components_.T, rtol=1e-4, atol=1e-4)
    # N galaxies span at most N − 1 between-galaxy directions: no more components than that
    few = InvariantProjection(n_components=60).fit(X[:8], views=views[:, :8])
    assert few.n_components_ <= 7 and few.transform(X).shape == (n, few.n_components_)
    with pytest.raises(GalmoError, match="reg > 0"):
        InvariantProjection(reg=0).fit(X, views=views)
    # the same galaxy seen again lands close to where it was, relative to the spread between galaxies
    spread = np.linalg.norm(P - P.mean(0), axis=1).mean()
    assert np.linalg.norm(ip.transform(observe()) - P, axis=1).mean() < 0.2 * spread
    with pytest.raises(GalmoError, match="needs views"):
        InvariantProjection().fit(X)
    with pytest.raises(GalmoError, match=r"views \(M, N, D\)"):
        InvariantProjection().fit(X, views=views[:, :10])
    with pytest.raises(GalmoError, match="fitted on 12-d"):
        ip.transform(X[:, :5])


def test_invariant_features_step_in_a_pipeline_is_reproducible():
    from sklearn.pipeline import Pipeline

    from galmo.stages import InvariantFeatures

    _, x = _galaxies(12, size=32)
    feat = Pipeline([("polar", PolarUnwrap(radial="log")), ("encode", Encoder(size=(32, 64), layer=(3, 4),
                                                                              pool="meanstd", device="cpu"))])
    a = InvariantFeatures(feat, views=2, n_components=5, random_state=0).fit(x)
    b = InvariantFeatures(feat, views=2, n_components=5, random_state=0).fit(x)
    c = InvariantFeatures(feat, views=2, n_components=5, random_state=1).fit(x)
    assert a.transform(x).shape == (12, 5)
    assert np.array_equal(a.transform(x), b.transform(x))
    assert not np.allclose(a.transform(x), c.transform(x))  # other views, another projection
    assert a.projection_.n_views_ == 2 and a.featurizer_.named_steps["encode"].n_features_ == 2 * (40 + 80)


def test_encoder_several_layers_are_the_single_layers_side_by_side():
    _, x = _galaxies(3, size=32)
    both = Encoder(size=(32, 64), layer=(3, 4), pool="meanstd").fit()
    f = both.transform(x)
    f3 = Encoder(size=(32, 64), layer=3, pool="meanstd").fit().transform(x)
    f4 = Encoder(size=(32, 64), layer=4, pool="meanstd").fit().transform(x)
    assert both.n_features_ == f.shape[1] == 2 * 40 + 2 * 80
    np.testing.assert_allclose(f, np.concatenate([f3, f4], 1), atol=1e-5)



# The stages that take plain (N, D) arrays follow scikit-learn's estimator contract (the image stages take
# (N, C, H, W) images, and InvariantProjection needs views=, which the generic checks cannot give).
@pytest.mark.filterwarnings("ignore:Graph is not fully connected")
@parametrize_with_checks([AutoPCA(), GraphEmbedding(n_components=2, n_neighbors=5), VotingClustering(n_clusters=3)])
def test_stages_pass_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
