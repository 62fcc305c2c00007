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
