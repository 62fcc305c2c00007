"""The ONNX export clean-ups (galmo.nn.onnx_graph): timm's run-time SAME pads become constants and then
the convolutions' own pads, with the numbers unchanged and no Pad node left in the graph."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from timm.layers.conv2d_same import Conv2dSame

from galmo.nn import onnx_backend
from galmo.nn.onnx_graph import StaticPadConv2d, fuse_pads, simplify, static_padding


pytestmark = pytest.mark.filterwarnings("ignore:Constant folding")  # the exporter's note on strided slices


def _same_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(Conv2dSame(3, 6, 3, stride=2), torch.nn.ReLU(),
                               Conv2dSame(6, 6, 5, stride=2, groups=6), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, 4, 3, padding=1)).eval()


def _export(module, x) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=onnx_backend.OPSET, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    return buf.getvalue()


def _ops(data: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(data).graph.node]


def _run(data: bytes, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("hw", [(32, 32), (33, 20)])
def test_static_padding_copies_the_module_with_the_same_numbers(hw):
    net, x = _same_net(), torch.rand(3, 3, *hw)
    fixed = static_padding(net, x[:1])
    assert isinstance(net[0], Conv2dSame) and isinstance(fixed[0], StaticPadConv2d)  # the original is untouched
    # TF SAME at stride 2: the odd remainder goes to the end (right/bottom), as timm's pad_same puts it
    assert fixed[0].pads == ((0, 1, 0, 1) if hw == (32, 32) else (0, 1, 1, 1))  # (left, right, top, bottom)
    with torch.inference_mode():
        torch.testing.assert_close(fixed(x), net(x), rtol=0, atol=1e-6)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3))
    assert static_padding(plain, x) is plain  # nothing to change: no copy


def test_fused_export_has_no_pad_node_and_equals_torch():
    net, x = _same_net(), torch.rand(4, 3, 32, 32)
    data = _export(static_padding(net, x[:1]), x[:1])
    assert "Pad" in _ops(data)
    fused, n = fuse_pads(simplify_only_folding(data))
    assert n == 2 and "Pad" not in _ops(fused)
    pads = [list(a.ints) for node in onnx.load_from_string(fused).graph.node if node.op_type == "Conv"
            for a in node.attribute if a.name == "pads"]
    assert pads[:2] == [[0, 0, 1, 1], [1, 1, 2, 2]]  # [top, left, bottom, right]: 3×3 and 5×5 SAME at stride 2
    with torch.inference_mode():
        ref = net(x).numpy()
    np.testing.assert_allclose(_run(fused, x.numpy()), ref, rtol=0, atol=1e-5)
    assert "Pad" not in _ops(simplify(data))


def simplify_only_folding(data: bytes) -> bytes:
    from galmo.nn.onnx_graph import fold_constants

    return fold_constants(data)


def test_a_pad_that_is_not_zero_or_feeds_two_nodes_is_kept():
    class Reflect(torch.nn.Module):
        def forward(self, x):
            y = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
            return torch.nn.functional.conv2d(y, torch.ones(2, 3, 3, 3)) + y.mean()

    class Shared(torch.nn.Module):
        def forward(self, x):
            y = torch.nn.functional.pad(x, (0, 1, 0, 1))
            return torch.nn.functional.conv2d(y, torch.ones(2, 3, 3, 3)).sum((1, 2, 3)) + y.sum((1, 2, 3))

    x = torch.rand(2, 3, 8, 8)
    for module in (Reflect(), Shared()):
        data = simplify_only_folding(_export(module, x))
        fused, n = fuse_pads(data)
        assert n == 0 and fused == data
        with torch.inference_mode():
            np.testing.assert_allclose(_run(simplify(data), x.numpy()), module(x).numpy(), rtol=1e-5, atol=1e-5)


def test_the_lite0_encoder_is_exported_without_pads_and_quietly(tmp_path, monkeypatch, capfd):
    from galmo.nn.backbones import create_backbone, encode

    monkeypatch.setenv("GALMO_CACHE", str(tmp_path))
    m = create_backbone(weights=None)
    X = np.random.default_rng(0).random((6, 3, 40, 40), dtype=np.float32)
    ref = encode(m, X, size=64, backend="torch")
    got = encode(m, X, size=64, backend="onnx")
    assert onnx_backend.max_rel_diff(got, ref) <= 1e-4
    files = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(files) == 1
    ops = _ops(files[0].read_bytes())
    assert "Pad" not in ops and ops.count("Conv") >= 30  # all of timm's SAME pads now sit in the convolutions
    err = capfd.readouterr().err
    assert "onnxruntime" not in err and "initializer" not in err  # ONNX Runtime's C++ notes stay out of the terminal
