"""Contrastive (SimCLR-style) pretraining: the loss, the views, the run and its embeddings."""

import json
import math

import numpy as np
import pytest
import torch

from galmo.nn.tasks.contrastive import ContrastiveTask, contrastive_views, nt_xent
from tests.test_embed import make_toy_h5


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_h5(tmp_path_factory.mktemp("toy") / "toy.h5", n=48, size=32)


def test_nt_xent_equals_a_hand_computation():
    """Two galaxies, two views each: the loss is the mean over the 4 views of −log softmax of the
    partner's cosine similarity / T among the 3 other views."""
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    t = 0.5
    u = [np.array(v) / np.linalg.norm(v) for v in ([1, 0], [0, 1], [1, 1], [0, -1])]
    partner = {0: 2, 1: 3, 2: 0, 3: 1}
    hand = 0.0
    for i in range(4):
        logits = {j: float(u[i] @ u[j]) / t for j in range(4) if j != i}
        hand += -(logits[partner[i]] - math.log(sum(math.exp(v) for v in logits.values())))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(hand / 4, rel=1e-6)
    # identical, well separated views give a small loss; swapped partners a large one
    e = torch.eye(4) * 10
    assert float(nt_xent(e, e, 0.1)) < 1e-3 < 10 < float(nt_xent(e, e.roll(1, 0), 0.1))


def test_views_are_reproducible_and_keep_the_image_level():
    """The two views come from the loop's generator (exactly reproducible) and differ from each other;
    augmentation keeps the mean brightness within the gain's range."""
    x = torch.rand(4, 3, 32, 32) * 0.2
    x[:, :, 12:20, 12:20] += 0.6
    from galmo.nn.augment import augment

    cfg = contrastive_views()
    a = augment(x, torch.Generator().manual_seed(3), cfg)
    b = augment(x, torch.Generator().manual_seed(3), cfg)
    c = augment(x, torch.Generator().manual_seed(4), cfg)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    ratio = (a.mean((1, 2, 3)) / x.mean((1, 2, 3))).numpy()
    assert np.all((ratio > 0.5) & (ratio < 2.0))


def test_contrastive_pretraining_runs_and_embeds_invariantly(toy, tmp_path):
    """One epoch of contrastive pretraining from the ImageNet weights lowers nothing by magic but runs
    through the one loop; `galmo embed` with the run gives finite, deterministic embeddings that do
    not change when the galaxy is flipped or transposed (the mean over the 8 symmetries)."""
    from galmo.methods.embeddings.config import PretrainConfig
    from galmo.methods.embeddings.encoders import load_encoder
    from galmo.methods.embeddings.run import run_pretrain

    cfg = PretrainConfig(data=str(toy), out=str(tmp_path / "c"), objective="contrastive", epochs=1, image_size=(32,),
                         batch_size=16, device="cpu", progress=False, seed=1)
    s = run_pretrain(cfg)
    assert s["epochs_run"] == 1 and np.isfinite(s["best"]["val_loss"]) and np.isfinite(s["best"]["train_loss"])
    assert "Contrastive" in (tmp_path / "c" / "report.html").read_text()
    sec = json.loads((tmp_path / "c" / "sections" / "embeddings.json").read_text())
    assert sec["title"] == "Pretraining (contrastive backbone)"
    enc = load_encoder(tmp_path / "c", device="cpu")
    x = np.random.default_rng(0).random((3, 3, 32, 32)).astype(np.float32)
    e1, e2 = enc.encode(x), enc.encode(x)
    assert e1.shape == (3, 1280) and np.isfinite(e1).all() and np.array_equal(e1, e2)
    e_flip = enc.encode(np.ascontiguousarray(x[..., ::-1].swapaxes(-1, -2)))
    np.testing.assert_allclose(e_flip, e1, rtol=1e-4, atol=1e-4)


def test_validation_loss_is_the_same_for_the_same_weights(toy):
    """The validation views are drawn from a fixed generator: the same model gives the same val_loss."""
    from torch.utils.data import DataLoader, TensorDataset

    from galmo.nn.models import create

    torch.manual_seed(0)
    model = create("contrastive_encoder", weights=None, img_size=32).eval()
    loader = DataLoader(TensorDataset(torch.rand(10, 3, 32, 32)), batch_size=4)
    task = ContrastiveTask(0.2)
    v1, v2 = task.validate(model, loader)["val_loss"], task.validate(model, loader)["val_loss"]
    assert v1 == v2 and 0 < v1 < math.log(2 * 4 * 10)


def test_embed_dihedral_mean_of_a_timm_backbone(toy, tmp_path):
    """--dihedral-mean on the ImageNet backbone: the embedding is the mean of the 8 plain embeddings
    of the rotated/flipped images, unchanged by a flip, and recorded in the embeddings' metadata (which
    `galmo similar --image` reads to embed a query the same way)."""
    from galmo.cli import main
    from galmo.methods.embeddings.encoders import load_encoder
    from galmo.methods.embeddings.store import read_embeddings
    from galmo.nn.models.rotinv import dihedral_orbit

    x = np.random.default_rng(1).random((2, 3, 32, 32)).astype(np.float32)
    plain = load_encoder("tf_efficientnet_lite0", size=32)
    sym = load_encoder("tf_efficientnet_lite0", size=32, dihedral_mean=True)
    by_hand = np.mean([plain.encode(v.numpy()) for v in dihedral_orbit(torch.from_numpy(x))], 0)
    np.testing.assert_allclose(sym.encode(x), by_hand, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sym.encode(np.ascontiguousarray(x[..., ::-1])), by_hand, rtol=1e-4, atol=1e-5)
    assert not np.allclose(plain.encode(x), by_hand, atol=1e-3)
    out = tmp_path / "e.parquet"
    assert main(["embed", "--data", str(toy), "--out", str(out), "--image-size", "32", "--dihedral-mean",
                 "--no-progress"]) == 0
    e = read_embeddings(out)
    assert e.meta["dihedral_mean"] is True and e.X.shape == (48, 1280)
