"""The ONNX Runtime backend of the one inference loop (galmo.nn.infer): same numbers as PyTorch, the
exported model cached per weights and input shape, a clean fallback to PyTorch, and no onnxruntime
import when PyTorch is asked for."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from galmo.nn import onnx_backend
from galmo.nn.infer import infer, resolve_backend, set_backend


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_backend, "_warned", set())
    yield
    set_backend("auto")


def _tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 4))


def _images(n=10, size=32, seed=0):
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


def test_auto_is_onnx_on_cpu_and_torch_on_cuda():
    assert resolve_backend("auto", "cpu") == "onnx"
    assert resolve_backend("auto", torch.device("cuda")) == "torch" if torch.cuda.is_available() else True
    assert resolve_backend("torch", "cpu") == "torch"


def test_tiny_model_onnx_equals_torch_and_cache_is_reused_and_invalidated():
    m, X = _tiny(), _images()
    ref = infer(m, X, batch_size=4, backend="torch")
    n0 = onnx_backend.stats["exports"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        got = infer(m, X, batch_size=4, backend="onnx")
        assert onnx_backend.stats["exports"] == n0 + 1
        assert onnx_backend.max_rel_diff(got, ref) <= 1e-4
        again = infer(m, X, batch_size=3, backend="onnx")  # other batch size: same file (dynamic batch axis)
    assert onnx_backend.stats["exports"] == n0 + 1
    np.testing.assert_array_equal(again[:3], got[:3])
    infer(m, _images(size=16), batch_size=4, backend="onnx")  # another input shape: a new export
    assert onnx_backend.stats["exports"] == n0 + 2
    with torch.no_grad():
        m[0].weight.mul_(2)  # new weights: the cache does not hold them
    ref2 = infer(m, X, batch_size=4, backend="torch")
    got2 = infer(m, X, batch_size=4, backend="onnx")
    assert onnx_backend.stats["exports"] == n0 + 3
    assert onnx_backend.max_rel_diff(got2, ref2) <= 1e-4
    assert not np.allclose(ref2, ref)


def test_lite0_encoder_onnx_equals_torch():
    from galmo.nn.backbones import create_backbone, encode

    m = create_backbone(weights="offline")
    X = _images(6, 40)
    for kw in ({"size": 32}, {"size": (32, 48), "layer": (2, 4), "pool": "meanstd"}):
        set_backend("torch")
        ref = encode(m, X, batch_size=4, **kw)
        set_backend("onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = encode(m, X, batch_size=4, **kw)
        assert got.shape == ref.shape
        assert onnx_backend.max_rel_diff(got, ref) <= 1e-4, kw


class _NoExport(torch.nn.Module):
    def forward(self, x):  # antialiased resize: no ONNX operator
        return F.interpolate(x, size=(8, 8), mode="bilinear", antialias=True).flatten(1)


class _Mismatch(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1) * (2.0 if torch.onnx.is_in_onnx_export() else 1.0)


@pytest.mark.parametrize("module, words", [(_NoExport, "does not export"), (_Mismatch, "differ")])
def test_fallback_to_torch_with_one_warning(module, words):
    m, X = module(), _images(5, 16)
    ref = infer(m, X, batch_size=2, backend="torch")
    with pytest.warns(RuntimeWarning, match=words) as rec:
        got = infer(m, X, batch_size=2, backend="onnx")
        got2 = infer(m, X, batch_size=2, backend="onnx")
    assert len([w for w in rec if "ONNX" in str(w.message)]) == 1
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got2, ref)


def test_closures_stay_on_torch():
    m, X = _tiny(), _images(4)
    n0 = onnx_backend.stats["exports"]
    out = infer(lambda x: m(x) + 1, X, backend="onnx")
    assert onnx_backend.stats["exports"] == n0
    np.testing.assert_allclose(out, infer(m, X, backend="torch") + 1, rtol=1e-6)


def test_torch_backend_never_imports_onnxruntime():
    code = ("import sys, numpy as np, torch\n"
            "from galmo.nn.infer import infer, set_backend\n"
            "set_backend('torch')\n"
            "m = torch.nn.Linear(4, 2)\n"
            "infer(m, np.zeros((3, 4), np.float32))\n"
            "print('onnxruntime' in sys.modules, 'galmo.nn.onnx_backend' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert r.stdout.split()[-2:] == ["False", "False"]


def test_the_export_cache_keeps_the_most_recently_used_files(tmp_path, monkeypatch):
    import os

    from galmo.nn import onnx_backend

    files = []
    for i in range(5):
        f = tmp_path / f"m{i}.onnx"
        f.write_bytes(b"x" * 100)
        os.utime(f, (1000 + i, 1000 + i))  # m4 the most recent
        files.append(f)
    monkeypatch.setattr(onnx_backend, "MAX_CACHE_FILES", 2)
    onnx_backend.prune_cache(tmp_path, keep=files[0])
    assert sorted(f.name for f in tmp_path.glob("*.onnx")) == ["m0.onnx", "m3.onnx", "m4.onnx"]
    monkeypatch.setattr(onnx_backend, "MAX_CACHE_BYTES", 150)
    onnx_backend.prune_cache(tmp_path)
    assert [f.name for f in tmp_path.glob("*.onnx")] == ["m4.onnx"]


# ---------------------------------------------------------------- TTA / ensembles and embeddings as one module
def _tiny_votes(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 16 * 16, 37))


def _onnx_equals_torch(module, X, batch_size=3):
    """(torch output, ONNX output) of ``module`` over ``X``; fails on a fallback (a warning)."""
    ref = infer(module, X, batch_size=batch_size, backend="torch")
    n0 = onnx_backend.stats["exports"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = infer(module, X, batch_size=batch_size, backend="onnx")
    assert onnx_backend.stats["exports"] == n0 + 1
    assert got.shape == ref.shape and onnx_backend.max_rel_diff(got, ref) <= 1e-4
    return ref, got


@pytest.mark.parametrize("target, tta", [("class", 8), ("votes", 9)])
def test_tta_and_ensemble_module_onnx_equals_torch(target, tta):
    """galmo predict's batch function (TTA over the dihedral group; tta 9 adds a 45° bilinear rotation)
    is one module: ONNX Runtime runs all of it, for a member alone and for an ensemble of two."""
    from galmo.methods.supervised.run import apply_transform, ensemble_fn, tta_transforms

    a, b = _tiny_votes(0), _tiny_votes(1)
    X = _images(5, 16)
    ref, _ = _onnx_equals_torch(ensemble_fn([a], target, tta), X)
    with torch.no_grad():  # the module is the average of the transformed predictions, as before
        outs = [a(apply_transform(torch.from_numpy(X), k, ang)) for k, ang in tta_transforms(tta)]
        by_hand = torch.stack([o.softmax(1) if target == "class" else _votes(o) for o in outs]).mean(0)
    np.testing.assert_allclose(ref, by_hand.numpy(), atol=1e-6)
    if target == "class":
        ens, _ = _onnx_equals_torch(ensemble_fn([a, b], target, tta), X)
        np.testing.assert_allclose(ens, (ref + infer(ensemble_fn([b], target, tta), X, backend="torch")) / 2,
                                   atol=1e-6)
    else:
        one, _ = _onnx_equals_torch(ensemble_fn([a], target, 1), X)  # other transforms: another cached graph
        assert np.abs(one - ref).max() > 1e-4


def _votes(o):
    from galmo.core.schema import normalise_votes

    return normalise_votes(o)


def test_dihedral_is_torch_rot90_to_the_bit():
    """rotinv's dihedral transforms are flips and transposes (they export to ONNX), equal to torch.rot90."""
    from galmo.nn.models.rotinv import dihedral, rotate

    x = torch.randn(2, 3, 5, 7)
    for k in range(8):
        ref = torch.rot90(x, k % 4, dims=(-2, -1))
        assert torch.equal(dihedral(x, k), ref.flip(-1) if k >= 4 else ref)
    assert all(torch.equal(rotate(x, 90.0 * k), torch.rot90(x, k, dims=(-2, -1))) for k in range(-2, 5))


def test_rotinv_tta_predictions_equal_torch_whichever_backend_runs_them():
    """The view-pooling network under TTA: ONNX Runtime where its views export, else PyTorch with
    a warning; the predictions are torch's either way."""
    from galmo.methods.supervised.run import ensemble_fn
    from galmo.nn.models import create

    torch.manual_seed(0)
    rot = create("rotinv", num_outputs=4, image_size=16, width=4, downsample=1).eval()
    X = _images(4, 16)
    ref = infer(ensemble_fn([rot], "class", 2), X, batch_size=2, backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = infer(ensemble_fn([rot], "class", 2), X, batch_size=2, backend="onnx")
    assert onnx_backend.max_rel_diff(got, ref) <= 1e-4


@pytest.mark.parametrize("n_phot, tokens, size", [(0, "all", 16), (2, "all", 24), (2, "image", 16)])
def test_patch_transformer_encoder_onnx_equals_torch(n_phot, tokens, size):
    """The embeddings method's patch-transformer encoder is one module (robust normalisation, resize,
    photometry tokens included), so ONNX Runtime runs it; same embeddings as PyTorch."""
    from galmo.methods.embeddings.encoders import EmbeddingModel
    from galmo.nn.models import create

    torch.manual_seed(0)
    names = [f"p{k}" for k in range(n_phot)]
    pt = create("patch_transformer", in_chans=3, img_size=16, patch_size=8, size="tiny", n_phot=n_phot,
                phot_names=names).eval()
    enc = EmbeddingModel("pt", "patch_transformer", pt, pt.num_features, names if tokens == "all" else [],
                         tokens=tokens)
    X = _images(5, size)
    phot = np.random.default_rng(1).normal(20, 1, (5, n_phot)).astype(np.float32)
    args = (X, phot) if enc.phot_names else X
    _onnx_equals_torch(enc.module(), args)
    set_backend("torch")
    with torch.no_grad():
        direct = pt.forward_features(torch.from_numpy(X), torch.from_numpy(phot) if n_phot else None, tokens=tokens)
    np.testing.assert_allclose(enc.encode(X, phot if enc.phot_names else None), direct.numpy(), atol=1e-6)


def test_checkpoint_encoder_onnx_equals_torch():
    from galmo.methods.embeddings.encoders import EmbeddingModel
    from galmo.nn.models import create

    torch.manual_seed(0)
    cnn = create("simple_cnn", num_outputs=3, width=4).eval()
    enc = EmbeddingModel("cnn", "checkpoint", cnn, 0)
    ref, _ = _onnx_equals_torch(enc.module(), _images(5, 16))
    with torch.no_grad():
        want = cnn.forward_features(torch.from_numpy(_images(5, 16)))
    np.testing.assert_allclose(ref, want.flatten(2).mean(-1).numpy() if want.ndim > 2 else want.numpy(), atol=1e-6)


def test_large_batches_run_in_pieces_with_the_same_numbers():
    m, X = _tiny(), _images(150, 16)
    ref = infer(m, X, batch_size=150, backend="torch")
    got = infer(m, X, batch_size=150, backend="onnx")  # 64 + 64 + 22 rows per ONNX Runtime call
    assert got.shape == ref.shape and onnx_backend.max_rel_diff(got, ref) <= 1e-4


def test_auto_keeps_a_module_that_asks_for_torch_on_torch():
    m, X = _tiny(), _images(4)
    m.onnx_auto = False
    n0 = onnx_backend.stats["exports"]
    assert resolve_backend("auto", "cpu", m) == "torch" and resolve_backend("onnx", "cpu", m) == "onnx"
    infer(m, X, backend="auto")
    assert onnx_backend.stats["exports"] == n0
    infer(m, X, backend="onnx")  # forced: exported
    assert onnx_backend.stats["exports"] == n0 + 1


def test_a_failing_export_prints_nothing(capfd):
    """TorchScript prints a failing graph from C++; the export silences the file descriptors."""
    from galmo.nn.models.rotinv import dihedral

    class _Rot90(torch.nn.Module):  # torch.rot90 has no ONNX exporter
        def forward(self, x):
            return torch.rot90(x, 1, dims=(-2, -1)).flatten(1)

    X = _images(3, 8)
    with pytest.warns(RuntimeWarning, match="does not export"):
        got = infer(_Rot90(), X, backend="onnx")
    out, err = capfd.readouterr()
    assert "graph" not in out and "%" not in out and "aten::" not in err
    np.testing.assert_array_equal(got, dihedral(torch.from_numpy(X), 1).flatten(1).numpy())


def test_the_export_key_changes_with_the_code_of_the_module(tmp_path, monkeypatch):
    import importlib

    src = tmp_path / "galmo_tmp_module.py"
    src.write_text("import torch\nclass M(torch.nn.Linear):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("galmo_tmp_module")
    m = mod.M(3, 2)
    before = onnx_backend.model_key(m, ((3,),), ("float32",))
    src.write_text("import torch\nclass M(torch.nn.Linear):\n    pass  # edited\n")
    assert onnx_backend.model_key(m, ((3,),), ("float32",)) != before
