"""Astroformer (timm MaxxVit, layout C-C-C-T) and the regularisation recipe of the one training loop."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from galmo.core.errors import GalmoError
from galmo.nn.models import create, list_models


def test_every_published_size_is_registered_with_the_coatnet_widths():
    from timm.models.maxxvit import model_cfgs

    from galmo.nn.models.astroformer import astroformer_cfg

    names = [m for m in list_models() if m.startswith("astroformer-")]
    assert sorted(names) == sorted(f"astroformer-{s}" for s in ("tiny", "small", "0", "1", "2", "3", "4", "5"))
    for k in range(6):
        cfg, coat = astroformer_cfg(str(k)), model_cfgs[f"coatnet_{k}"]
        assert cfg.block_type == ("C", "C", "C", "T") and coat.block_type == ("C", "C", "T", "T")
        assert (cfg.embed_dim, cfg.depths, cfg.stem_width) == (coat.embed_dim, coat.depths, coat.stem_width)
    assert astroformer_cfg("4").embed_dim == (192, 384, 768, 1536) and astroformer_cfg("4").depths == (2, 12, 28, 2)
    with pytest.raises(GalmoError, match="unknown astroformer size"):
        astroformer_cfg("7")


@pytest.mark.parametrize("size,bands", [(64, 3), (96, 1), ((64, 96), 5), (69, 3)])
def test_shapes_at_several_resolutions_and_band_counts(size, bands):
    torch.manual_seed(0)
    m = create("astroformer-tiny", image_size=size, num_outputs=7, in_chans=bands).eval()
    h, w = size if isinstance(size, tuple) else (size, size)
    x = torch.randn(3, bands, h, w)
    with torch.no_grad():
        assert m(x).shape == (3, 7)
        assert m.forward_features(x).shape == (3, m.num_features)
    kinds = [type(s.blocks[0]).__name__ for s in m.net.stages]
    assert kinds == ["MbConvBlock", "MbConvBlock", "MbConvBlock", "TransformerBlock2d"]


def test_relative_position_bias_follows_the_resolution_as_timm_defines_it():
    """The last stage's token grid is (H/32, W/32); timm's RelPosBias holds (2h−1)(2w−1) entries per head."""
    tables = {}
    for size in (64, 96, (64, 128)):
        m = create("astroformer-tiny", image_size=size)
        rp = m.net.stages[3].blocks[0].attn.rel_pos
        h, w = (size, size) if isinstance(size, int) else size
        assert rp.window_size == (h // 32, w // 32)
        heads = 256 // 32  # last width / dim_head
        assert tuple(rp.relative_position_bias_table.shape) == ((2 * h // 32 - 1) * (2 * w // 32 - 1), heads)
        assert rp.relative_position_index.numel() == (h // 32 * w // 32) ** 2
        tables[size] = rp.relative_position_bias_table.shape[0]
    assert tables == {64: 9, 96: 25, (64, 128): 21}


def test_stochastic_depth_is_timms_drop_path_increasing_over_blocks():
    from timm.layers import DropPath

    m = create("astroformer-tiny", drop_path_rate=0.2)
    rates = [mod.drop_prob for mod in m.modules() if isinstance(mod, DropPath)]
    # 7 blocks (depths 1, 2, 3, 1): rates linspace(0, 0.2, 7), the first (0) an Identity; the
    # transformer block has two (attention and MLP)
    assert np.allclose(rates, [0.2 * k / 6 for k in (1, 2, 3, 4, 5, 6, 6)], atol=1e-6)
    assert not any(isinstance(mod, DropPath) for mod in create("astroformer-tiny").modules())


def _two_class_batch(n=8, size=16):
    """Image i is constant: 1.0 for class 0, 0.0 for class 1 (alternating)."""
    y = torch.arange(n) % 2
    x = (1.0 - y.float())[:, None, None, None].expand(n, 1, size, size).clone()
    return x, y


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixing_mixes_labels_by_the_same_lambda_as_pixels(mode):
    from galmo.nn.mix import MixConfig, mix_batch

    x, y = _two_class_batch()
    cfg = MixConfig(mixup=0.8 if mode == "mixup" else 0.0, cutmix=1.0 if mode == "cutmix" else 0.0)
    state = np.random.get_state()
    lams = []
    for seed in range(6):
        xm, t, lam = mix_batch(x, y, torch.Generator().manual_seed(seed), cfg, num_classes=2)
        lams.append(lam)
        # the fraction of each image's pixels that came from its own class (class-0 pixels are 1.0)
        own = xm.mean((1, 2, 3))
        own = torch.where(y == 0, own, 1 - own)
        assert torch.allclose(own, torch.full_like(own, lam), atol=1e-6)
        assert torch.allclose(t[torch.arange(len(y)), y], torch.full((len(y),), lam), atol=1e-6)
        assert torch.allclose(t.sum(1), torch.ones(len(y)))
    assert len(set(np.round(lams, 6))) == 6 and all(0 <= v <= 1 for v in lams)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the caller's numpy RNG is untouched
    assert torch.equal(x, _two_class_batch()[0])  # the input batch is not modified
    again = mix_batch(x, y, torch.Generator().manual_seed(3), cfg, num_classes=2)
    assert again[2] == lams[3]  # seeded by the step's generator: reproducible


def test_vote_fractions_are_mixed_linearly_and_odd_batches_stay_unmixed():
    from galmo.nn.mix import MixConfig, mix_batch

    x, _ = _two_class_batch()
    v = torch.rand(8, 37)
    xm, t, lam = mix_batch(x, v, torch.Generator().manual_seed(1), MixConfig(mixup=1.0), num_classes=None)
    assert 0 < lam < 1 and torch.allclose(t, lam * v + (1 - lam) * v.flip(0))
    xo, to, lam_odd = mix_batch(x[:7], v[:7], torch.Generator().manual_seed(1), MixConfig(mixup=1.0), None)
    assert lam_odd == 1.0 and torch.equal(xo, x[:7]) and torch.equal(to, v[:7])


def test_label_smoothing_changes_the_loss_as_expected():
    """Smoothed targets: (1 − ε)·CE(y) + ε·mean_k(−log p_k), which is torch's label_smoothing."""
    from galmo.nn.mix import MixConfig, mix_batch, soft_cross_entropy

    torch.manual_seed(0)
    logits, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    x = torch.zeros(6, 1, 4, 4)
    eps = 0.1
    _, t, lam = mix_batch(x, y, torch.Generator().manual_seed(0), MixConfig(label_smoothing=eps), num_classes=5)
    assert lam == 1.0
    loss = soft_cross_entropy(logits, t)
    logp = logits.log_softmax(1)
    expected = ((1 - eps) * -logp[torch.arange(6), y] + eps * -logp.mean(1)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.allclose(loss, F.cross_entropy(logits, y, label_smoothing=eps), atol=1e-6)
    assert not torch.allclose(loss, F.cross_entropy(logits, y))


def test_policy_changes_seeing_and_depth_but_not_shape():
    """The augmentation policy blurs, adds noise and rescales, but moves no light: the centroid and the
    second-moment ellipticity of a galaxy stay (no shear, no geometric op)."""
    from galmo.nn.augment import AugmentConfig, augment

    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    u, v = (xx - 23.5), (yy - 23.5)
    g = torch.exp(-(u ** 2 / (2 * 6.0 ** 2) + v ** 2 / (2 * 3.0 ** 2)))
    x = (g + 0.01 * torch.randn(16, 2, 48, 48, generator=torch.Generator().manual_seed(0)))
    cfg = AugmentConfig.off()
    cfg.ops, cfg.magnitude = 2, 1.0
    out = augment(x, torch.Generator().manual_seed(1), cfg)
    assert not torch.allclose(out, x)
    aperture = (u ** 2 + v ** 2 < 16 ** 2).float()  # unclamped moments in an aperture: noise averages out

    def shape(img):
        w = img.mean(1) * aperture
        f = w.sum((1, 2))
        cx, cy = (w * xx).sum((1, 2)) / f, (w * yy).sum((1, 2)) / f
        qxx, qyy = (w * u ** 2).sum((1, 2)) / f, (w * v ** 2).sum((1, 2)) / f
        return cx, cy, (qxx - qyy) / (qxx + qyy)

    cx0, cy0, e0 = shape(x)
    cx, cy, e = shape(out)
    assert torch.allclose(cx, cx0, atol=0.2) and torch.allclose(cy, cy0, atol=0.2)
    assert torch.all(e0 > 0.5) and torch.all((e - e0).abs() < 0.08)  # blur rounds it a little, no more
    again = augment(x, torch.Generator().manual_seed(1), cfg)
    assert torch.equal(out, again)
    with pytest.raises(GalmoError, match="policy"):
        augment(x, torch.Generator(), AugmentConfig(ops=9))


def test_recipe_presets_resolve_and_explicit_flags_win():
    from galmo.methods.supervised.config import SupervisedConfig
    from galmo.methods.supervised.run import augment_settings, mix_settings, model_kwargs

    plain = SupervisedConfig(data="x", out="y")
    assert mix_settings(plain) is None and augment_settings(plain).ops == 0 and plain.resolved("drop_rate") is None
    cfg = SupervisedConfig(data="x", out="y", model="astroformer-tiny", recipe="astroformer", mixup=0.2)
    mix = mix_settings(cfg)
    assert (mix.mixup, mix.cutmix, mix.label_smoothing) == (0.2, 1.0, 0.1)
    assert augment_settings(cfg).ops == 2
    kw = model_kwargs(cfg.model, target="class", n_classes=10, in_chans=3, image_size=64,
                      drop_rate=cfg.resolved("drop_rate"), drop_path=cfg.resolved("drop_path"))
    assert kw == {"num_outputs": 10, "in_chans": 3, "image_size": [64, 64], "drop_path_rate": 0.1, "drop_rate": 0.1}
    with pytest.raises(GalmoError, match="no stochastic depth"):
        model_kwargs("rotinv", target="class", n_classes=3, in_chans=3, image_size=32, drop_path=0.1)
    votes = SupervisedConfig(data="x", out="y", target="votes", label_smoothing=0.1)
    with pytest.raises(GalmoError, match="class target"):
        mix_settings(votes)


def test_train_frac_keeps_val_and_test_and_marks_the_rest_unused(tmp_path):
    import pandas as pd

    from supervised_data import make_tiny_source

    from galmo.methods.supervised.run import train

    src = make_tiny_source(tmp_path / "tiny.h5", n=120, size=32)
    common = dict(model="simple_cnn", width=8, epochs=1, batch_size=16, progress=False, evaluate_at_end=False,
                  augment=False, log=lambda *a: None)
    train(src, tmp_path / "full", **common)
    train(src, tmp_path / "part", train_frac=0.25, **common)
    full = pd.read_csv(tmp_path / "full" / "split.csv", dtype={"id": str}).set_index("id")["split"]
    part = pd.read_csv(tmp_path / "part" / "split.csv", dtype={"id": str}).set_index("id")["split"]
    assert (full == "test").equals(part == "test") and (full == "val").equals(part == "val")
    n_train = int((full == "train").sum())
    assert int((part == "train").sum()) == round(0.25 * n_train)
    assert int((part == "unused").sum()) == n_train - round(0.25 * n_train)
    assert set(part.index[part == "train"]) <= set(full.index[full == "train"])


def test_astroformer_one_epoch_saves_and_resumes_through_the_shared_loop(tmp_path):
    """Stopped after 3 steps and resumed, a recipe run (mixup, cutmix, smoothing, drop path, policy)
    ends with the same weights and metrics as the uninterrupted run; the checkpoint loads back."""
    from supervised_data import make_tiny_source

    from galmo.methods.supervised.run import predict, train
    from galmo.nn import checkpoint as ckpt
    from galmo.nn.train import TrainingInterrupted

    src = make_tiny_source(tmp_path / "tiny.h5", n=96, size=32)
    common = dict(model="astroformer-tiny", recipe="astroformer", epochs=1, batch_size=16, progress=False,
                  evaluate_at_end=False, log=lambda *a: None, checkpoint_every=1)
    full = train(src, tmp_path / "a", **common)
    with pytest.raises(TrainingInterrupted):
        train(src, tmp_path / "b", stop_after_steps=3, **common)
    resumed = train(src, tmp_path / "b", resume=True, **common)
    def same(m):  # the throughput is wall-clock
        return {k: v for k, v in m.items() if k != "train_images_per_s"}

    assert same(resumed["fit"]["best"]) == same(full["fit"]["best"])
    wa, wb = ckpt.load_state_dict(tmp_path / "a" / ckpt.MODEL_FILE), ckpt.load_state_dict(tmp_path / "b" / ckpt.MODEL_FILE)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    model, cfg = ckpt.load_checkpoint(tmp_path / "a")
    assert type(model).__name__ == "Astroformer" and cfg["model"]["name"] == "astroformer-tiny"
    p = predict(tmp_path / "a", src)  # through the inference loop (ONNX Runtime on a CPU)
    probs = p[[c for c in p.columns if c.startswith("prob_")]].to_numpy()
    assert probs.shape[0] == 96 and np.allclose(probs.sum(1), 1, atol=1e-5)


def _documented_galaxy10_command() -> list[str]:
    import shlex
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "supervised.md").read_text()
    line = next(ln for ln in doc.splitlines() if ln.startswith("galmo train --data Galaxy10_DECals.h5"))
    return shlex.split(line)[1:]


def _tiny_galaxy10_decals(path, n=24, side=96, seed=0):
    """A file in the Galaxy10 DECals schema (astroNN): images (N, H, W, 3) uint8 (256² in the real file;
    96² here to keep the test fast), ans uint8, ra, dec, redshift, pxscale."""
    import h5py

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] - side / 2
    ans = (np.arange(n) % 10).astype(np.uint8)
    imgs = np.empty((n, side, side, 3), np.uint8)
    for i, c in enumerate(ans):
        r = np.hypot(xx, yy * (1 + 0.3 * (c % 3)))
        imgs[i] = np.clip(255 * np.exp(-r / (8 + c))[..., None] + rng.normal(8, 3, (side, side, 3)), 0, 255)
    with h5py.File(path, "w") as f:
        f["images"], f["ans"] = imgs, ans
        for k, v in (("ra", rng.uniform(0, 360, n)), ("dec", rng.uniform(-10, 30, n)),
                     ("redshift", rng.uniform(0.01, 0.2, n)), ("pxscale", np.full(n, 0.262))):
            f[k] = v.astype(np.float64)
    return path


def test_the_documented_galaxy10_command_runs_on_a_tiny_file_of_that_schema(tmp_path):
    """The docs' Galaxy10 DECals command, with a tiny model, one epoch and the CPU in place of the GPU."""
    import json

    from galmo.cli import main

    argv = _documented_galaxy10_command()
    assert argv[:3] == ["train", "--data", "Galaxy10_DECals.h5"]
    over = {"--data": str(_tiny_galaxy10_decals(tmp_path / "Galaxy10_DECals.h5")), "--out": str(tmp_path / "run"),
            "--model": "astroformer-tiny", "--epochs": "1", "--batch-size": "8", "--device": "cpu",
            "--precision": "fp32"}
    for k, v in over.items():
        argv[argv.index(k) + 1] = v
    assert main(argv + ["--no-progress"]) == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["config"]["recipe"] == "astroformer" and cfg["config"]["lr"] == 2e-5
    assert cfg["supervised"]["shape"] == [3, 96, 96] and cfg["model"]["kwargs"]["image_size"] == [96, 96]
    assert cfg["supervised"]["mix"]["mixup"] == 0.8 and cfg["supervised"]["augment"]["ops"] == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert metrics["n"] == 3 and 0.0 <= metrics["top1"] <= 1.0  # 10 % of 24 galaxies


def test_balanced_class_weights_weight_the_loss_by_inverse_frequency():
    from galmo.methods.supervised.config import SupervisedConfig
    from galmo.methods.supervised.run import class_weights
    from galmo.nn.tasks.classify import SupervisedTask

    y = torch.tensor([0] * 8 + [1] * 2)  # class 2 absent from the training labels
    w = class_weights(SupervisedConfig(data="x", out="y", class_weight="balanced"), y, 3)
    assert torch.allclose(w, torch.tensor([10 / (2 * 8), 10 / (2 * 2), 1.0]))
    assert class_weights(SupervisedConfig(data="x", out="y"), y, 3) is None
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randn(10, 1, 2, 2)
    logits = model(x)
    loss, _ = SupervisedTask("class", class_weights=w).loss(model, (x, y), torch.Generator())
    per = F.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(loss, (w[y] * per).sum() / w[y].sum())  # each class weighs the same in all
    assert not torch.allclose(loss, per.mean())
    from galmo.nn.mix import MixConfig

    with pytest.raises(GalmoError, match="without mixup"):
        SupervisedTask("class", mix_cfg=MixConfig(mixup=0.8), n_classes=3, class_weights=w)


def test_init_from_starts_from_another_runs_weights(tmp_path):
    from supervised_data import make_tiny_source

    from galmo.methods.supervised.run import train
    from galmo.nn import checkpoint as ckpt

    src = make_tiny_source(tmp_path / "tiny.h5", n=64, size=32)
    common = dict(model="simple_cnn", width=4, batch_size=16, progress=False, evaluate_at_end=False, augment=False,
                  log=lambda *a: None)
    train(src, tmp_path / "a", epochs=2, **common)
    train(src, tmp_path / "b", epochs=1, init_from=str(tmp_path / "a"), lr=1e-12, **common)  # (almost) no update
    wa, wb = ckpt.load_state_dict(tmp_path / "a" / ckpt.MODEL_FILE), ckpt.load_state_dict(tmp_path / "b" / ckpt.MODEL_FILE)
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa if "running" not in k
               and "num_batches" not in k)
    fresh = train(src, tmp_path / "c", epochs=1, lr=1e-12, **common)["fit"]["best"]
    assert fresh["val_loss"] != train(src, tmp_path / "d", epochs=1, lr=1e-12, init_from=str(tmp_path / "a"),
                                      **common)["fit"]["best"]["val_loss"]
    with pytest.raises(GalmoError, match="init-from"):
        train(src, tmp_path / "e", epochs=1, init_from=str(tmp_path / "a"), **{**common, "model": "rotinv"})
