"""The view-pooling network: exact invariance to the dihedral group, one batched pass, vote head."""

import numpy as np
import pytest
import torch

from galmo.nn.augment import AugmentConfig, augment
from galmo.nn.models import create
from galmo.nn.models.rotinv import N_VIEWS, dihedral, make_views, rotate
from galmo.core.schema import QUESTION_SLICES, QUESTIONS, normalise_votes


def _images(n=4, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
    blob = torch.exp(-((xx - 3) ** 2 / 60 + (yy + 2) ** 2 / 15))  # off-centre, elongated: not symmetric
    return (blob + 0.3 * torch.rand(n, 3, size, size, generator=g)).float()


@pytest.mark.parametrize("pool", ["mean", "max", "meanmax"])
def test_exactly_invariant_to_90deg_rotations_and_flips(pool):
    torch.manual_seed(0)
    model = create("rotinv", num_outputs=10, image_size=64, width=8, downsample=2, pool=pool).eval()
    x = _images()
    with torch.no_grad():
        p = model(x).softmax(1)
        deltas = [(model(dihedral(x, k)).softmax(1) - p).abs().max().item() for k in range(8)]
        d30 = (model(rotate(x, 30.0)).softmax(1) - p).abs().max().item()
    assert max(deltas) < 1e-5, deltas
    assert not torch.allclose(model(x[:1]).softmax(1), model(x[1:2]).softmax(1))  # not trivially constant
    # 30° is not in the group: a change far above the dihedral rounding (measured 3e-5 to 8e-5 vs 7e-9),
    # yet small, since the 45° views make the pooled features nearly invariant to any rotation
    assert 100 * max(deltas) < d30 < 1e-3, (d30, max(deltas))


def test_concat_pooling_is_not_invariant_but_mean_is():
    torch.manual_seed(0)
    concat = create("rotinv", num_outputs=10, image_size=64, width=8, pool="concat").eval()
    x = _images()
    with torch.no_grad():
        d = (concat(dihedral(x, 1)).softmax(1) - concat(x).softmax(1)).abs().max().item()
    assert d > 1e-5  # the paper's concatenation is only approximately invariant


def test_dihedral_transform_permutes_the_views():
    x = _images(n=2)
    v = make_views(x, crop=44, downsample=1).view(N_VIEWS, 2, 3, 44, 44)
    for k in range(1, 8):
        w = make_views(dihedral(x, k), crop=44, downsample=1).view(N_VIEWS, 2, 3, 44, 44)
        for orbit in (range(0, 8), range(8, 16)):  # each view of g·x is one view of x in the same orbit
            for a in orbit:
                err = min((w[a] - v[b]).abs().max().item() for b in orbit)
                assert err < 1e-5, (k, a, err)


def test_one_batched_pass_equals_naive_loop():
    torch.manual_seed(1)
    model = create("rotinv", num_outputs=5, image_size=32, width=4).eval()
    x = _images(n=3, size=32)
    with torch.no_grad():
        assert torch.allclose(model(x), model.forward_naive(x), atol=1e-5)
        one_pass = model(x)
        model.max_views_per_pass = 20  # 48 views → passes of 20, 20, 8 (inference only)
        assert torch.allclose(model(x), one_pass, atol=1e-6)


def test_vote_head_obeys_the_decision_tree():
    torch.manual_seed(2)
    model = create("rotinv", num_outputs=37, image_size=32, width=4).eval()
    with torch.no_grad():
        v = normalise_votes(model(_images(n=5, size=32)) + 0.05)
    assert (v >= 0).all()
    done = {}
    for q, (a, b) in zip(QUESTIONS, QUESTION_SLICES):
        for k, c in enumerate(q.columns):
            done[c] = v[:, a + k]
    for q, (a, b) in zip(QUESTIONS, QUESTION_SLICES):
        weight = torch.ones(5) if q.parent is None else done[q.parent]
        assert torch.allclose(v[:, a:b].sum(1), weight, atol=1e-5), q.number


def test_augment_is_seeded_batched_and_switchable():
    x = _images(n=6, size=32)
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    c = augment(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(augment(x, torch.Generator().manual_seed(5), AugmentConfig.off()), x)
    # brightness only: a positive per-image gain, same geometry
    only_b = AugmentConfig.off()
    only_b.brightness = 0.2
    y = augment(x, torch.Generator().manual_seed(0), only_b)
    ratio = (y / x).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)
    # mixed-precision training: the warp is still computed in fp32 (a bf16 grid is off by ~0.1 px)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = augment(x, torch.Generator().manual_seed(5))
    assert d.dtype == torch.float32 and torch.allclose(d, a, atol=1e-6)


def test_augment_observing_conditions_blur_and_noise():
    """The views of the invariant projection: a point source blurred by σ ≤ blur keeps its flux and
    widens as a Gaussian of that σ would; the added noise is at most ``noise`` times each band's own."""
    from galmo.core.transforms import noise_sigma

    x = torch.zeros(8, 2, 33, 33)
    x[:, :, 16, 16] = 1.0
    cfg = AugmentConfig.off()
    cfg.blur = 1.5
    y = augment(x, torch.Generator().manual_seed(0), cfg)
    assert torch.allclose(y.sum((2, 3)), torch.ones(8, 2), atol=1e-5)
    yy = (torch.arange(33.0) - 16) ** 2
    var = (y[:, 0] * (yy[:, None] + yy[None, :])).sum((1, 2)) / 2  # per-axis variance = σ² of the kernel
    assert torch.all(var.sqrt() <= 1.5 + 1e-3) and var.sqrt().max() > 0.5 and torch.equal(y[:, 0], y[:, 1])
    g = torch.Generator().manual_seed(1)
    flat = 0.5 + 0.01 * torch.randn(64, 3, 32, 32, generator=g) * torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
    cfg = AugmentConfig.off()
    cfg.noise = 1.0
    z = augment(flat, torch.Generator().manual_seed(2), cfg)
    before, after = noise_sigma(flat.numpy()), noise_sigma(z.numpy())
    ratio = after / before
    assert np.all(ratio >= 0.9) and np.all(ratio <= np.sqrt(2) * 1.1) and ratio.mean() > 1.05
    # scaled to each band's own noise (one draw per image for all bands), not one level for all bands
    assert abs(ratio[:, 0].mean() - ratio[:, 2].mean()) < 0.05 and np.corrcoef(ratio[:, 0], ratio[:, 2])[0, 1] > 0.7
    obs = AugmentConfig.observing()
    assert obs.blur > 0 and obs.noise > 0 and obs.rotate and obs.colour == 0
    v1 = augment(flat, torch.Generator().manual_seed(3), obs)
    assert torch.equal(v1, augment(flat, torch.Generator().manual_seed(3), obs))


def test_simple_cnn_features():
    m = create("simple_cnn", in_chans=3, num_outputs=7, width=8).eval()
    x = _images(n=2, size=32)
    f = m.forward_features(x)
    assert f.shape == (2, m.num_features) and m(x).shape == (2, 7)
    assert np.isfinite(f.detach().numpy()).all()


def test_rotation_grid_cache_is_bounded_and_usable_in_training():
    from galmo.nn.models.rotinv import GRID_CACHE_SIZE, _grid, rotation_grid

    _grid.cache_clear()
    for a in range(GRID_CACHE_SIZE + 20):
        rotation_grid(8, 8, a + 0.5)
    assert _grid.cache_info().currsize == GRID_CACHE_SIZE
    assert torch.equal(rotation_grid(8, 8, 10.5), rotation_grid(8, 8, 10.5, device="cpu"))
    # a grid first built under inference_mode (predictions) is a normal tensor: training reuses it
    x = torch.rand(2, 1, 12, 12, requires_grad=True)
    with torch.inference_mode():
        rotate(x.detach(), 17.0)
    rotate(x, 17.0).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
