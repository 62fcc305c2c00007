"""The AstroPT-like patch transformer: spiral order, causality, photometry tokens, pretraining."""

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from galmo.nn.checkpoint import load_checkpoint
from galmo.nn.models import create
from galmo.nn.models.patch_transformer import PatchTransformer, normalise_images, spiral_order
from galmo.nn.tasks.pretrain import PretrainTask
from galmo.nn.train import TrainConfig, fit


@pytest.mark.parametrize("g", [1, 2, 3, 4, 5, 8])
def test_spiral_order_centre_first_covers_every_patch_once(g):
    order = spiral_order(g)
    assert sorted(order.tolist()) == list(range(g * g))
    i, j = np.divmod(order, g)
    ring = np.maximum(np.abs(i - (g - 1) / 2), np.abs(j - (g - 1) / 2))
    assert ring[0] == ring.min()                      # starts at (one of) the central patch(es)
    assert np.all(np.diff(ring) >= 0)                 # never goes back inward
    steps = np.maximum(np.abs(np.diff(i)), np.abs(np.diff(j)))
    assert g == 1 or (steps == 1).mean() > 0.8                 # mostly walks to an adjacent patch (a spiral)
    if g == 3:
        assert order[0] == 4 and list(order[1:]) == [0, 1, 2, 5, 8, 7, 6, 3]  # clockwise ring


def _model(**kw):
    torch.manual_seed(0)
    base = dict(in_chans=2, img_size=16, patch_size=4, size="tiny")
    base.update(kw)
    return create("patch_transformer", **base).eval()


def test_causal_masking_future_patches_do_not_change_earlier_outputs():
    m = _model()
    x = torch.rand(2, 2, 16, 16)
    p = m.prepare(x)
    h = m.hidden(p)
    k = 7
    p2 = p.clone()
    p2[:, k:] += torch.randn_like(p2[:, k:])      # change every patch from position k on
    h2 = m.hidden(p2)
    assert torch.allclose(h[:, :k], h2[:, :k], atol=1e-5)
    assert not torch.allclose(h[:, k:], h2[:, k:], atol=1e-3)


def test_photometry_tokens_chained_after_image_tokens():
    m = _model(n_phot=3, phot_names=["mag:g", "mag:r", "color:g-r"])
    x = torch.rand(4, 2, 16, 16)
    phot = torch.tensor([[20.0, 19.5, 0.5]] * 4) + torch.randn(4, 3)
    m.set_photometry_stats(phot.numpy())
    h = m.hidden(m.prepare(x), m._phot_values(phot, 4, "cpu"))
    assert h.shape == (4, m.n_patches + 3, m.num_features)
    img_pred, phot_pred = m(x, phot)
    assert img_pred.shape == (4, m.n_patches - 1, 2 * 4 * 4) and phot_pred.shape == (4, 3)
    f1 = m.forward_features(x, phot)
    f2 = m.forward_features(x, phot + 3.0)
    assert f1.shape == (4, m.num_features) and not torch.allclose(f1, f2, atol=1e-4)
    # photometry tokens come after the image: image-token states do not depend on them (causal)
    h2 = m.hidden(m.prepare(x), m._phot_values(phot + 3.0, 4, "cpu"))
    assert torch.allclose(h[:, :m.n_patches], h2[:, :m.n_patches], atol=1e-5)
    with pytest.raises(Exception, match="photometry"):
        m.forward_features(x)
    # image-token embedding of the same weights: no photometry needed, equal to the image-state mean
    img_only = m.forward_features(x, tokens="image")
    assert torch.allclose(img_only, h[:, :m.n_patches].mean(1), atol=1e-5)


def test_normalisation_is_robust_and_scale_free():
    x = torch.rand(3, 3, 16, 16)
    y1, y2 = normalise_images(x), normalise_images(50 * x + 7)   # other units and sky level
    assert torch.allclose(y1, y2, atol=1e-4)
    x[0, 0, 0, 0] = float("nan")
    assert torch.isfinite(normalise_images(x)).all()


def test_pretraining_lowers_the_loss_and_checkpoint_roundtrips(tmp_path):
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16.0) - 7.5, torch.arange(16.0) - 7.5, indexing="ij")
    r = torch.rand(256, 1, 1, generator=g) * 3 + 1.5
    blobs = torch.exp(-(xx ** 2 + yy ** 2) / (2 * r ** 2))
    x = torch.stack([blobs, 0.7 * blobs], 1) + 0.02 * torch.randn(256, 2, 16, 16, generator=g)
    kw = dict(in_chans=2, img_size=16, patch_size=4, size="tiny")
    torch.manual_seed(0)
    model = create("patch_transformer", **kw)
    task = PretrainTask()
    val = TensorDataset(x[:64])
    with torch.no_grad():
        before = task.validate(model.eval(), [(x[:64],)])["val_loss"]
    cfg = TrainConfig(epochs=6, batch_size=32, lr=2e-3, device="cpu", progress=False, seed=0)
    summary = fit(model, TensorDataset(x[64:]), val, task, cfg, tmp_path, model_name="patch_transformer",
                  model_kwargs=kw)
    after = summary["best"]["val_loss"]
    assert after < 0.6 * before
    loaded, cfg_json = load_checkpoint(tmp_path)
    assert isinstance(loaded, PatchTransformer) and cfg_json["model"]["name"] == "patch_transformer"
    with torch.no_grad():
        assert torch.allclose(loaded.forward_features(x[:4]), model.eval().forward_features(x[:4]), atol=1e-5)


def test_dihedral_augment_draws_the_8_symmetries_reproducibly():
    from galmo.nn.tasks.pretrain import dihedral_augment

    x = torch.arange(2 * 16.0).view(1, 2, 4, 4).repeat(64, 1, 1, 1)
    y = dihedral_augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(y, dihedral_augment(x, torch.Generator().manual_seed(3)))
    r = torch.rand(64, 3, generator=torch.Generator().manual_seed(3)) < 0.5
    for i in range(64):  # flip left-right, then up-down, then transpose, each with probability 1/2
        want = x[i]
        want = want.flip(-1) if r[i, 0] else want
        want = want.flip(-2) if r[i, 1] else want
        want = want.transpose(-1, -2) if r[i, 2] else want
        assert torch.equal(y[i], want)
    assert len({tuple(v.flatten().tolist()) for v in y}) == 8


def test_validate_is_the_batch_weighted_mean_loss():
    from galmo.nn.tasks.classify_baseline import DihedralClassifyTask

    m = _model(n_phot=2, phot_names=["a", "b"])
    g = torch.Generator().manual_seed(1)
    x, phot = torch.rand(10, 2, 16, 16, generator=g), torch.randn(10, 2, generator=g)
    loader = [(x[:6], phot[:6]), (x[6:], phot[6:])]
    got = PretrainTask().validate(m, loader)
    with torch.no_grad():
        parts = [(m.pretrain_loss(xb, pb), len(xb)) for xb, pb in loader]
    want = sum(float(lo) * b for (lo, _), b in parts) / 10
    want_phot = sum(logs["phot_loss"] * b for (_, logs), b in parts) / 10
    assert list(got) == ["val_loss", "val_img_loss", "val_phot_loss"]
    assert got["val_loss"] == pytest.approx(want, abs=1e-6)
    assert got["val_phot_loss"] == pytest.approx(want_phot, abs=1e-6)
    cnn = create("simple_cnn", in_chans=2, num_outputs=3, width=4).eval()
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    res = DihedralClassifyTask().validate(cnn, [(x[:6], y[:6]), (x[6:], y[6:])])
    with torch.no_grad():
        logits = cnn(x)
    assert res["val_acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert res["val_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), abs=1e-6)
