"""Graph clean-ups of an ONNX export that ONNX Runtime does not do itself (used by :mod:`galmo.nn.onnx_backend`).

timm's TensorFlow ports (``tf_efficientnet_lite0``, galmo's default encoder, and every ``tf_*`` model)
pad their stride-2 convolutions "SAME" at run time (``Conv2dSame``): the pad amounts are computed from
the input's shape in the graph, and the zero pad is a separate ``Pad`` node. ONNX Runtime's blocked
(NCHWc) convolutions cannot run through a ``Pad``, so each one costs a reorder out of and back into
the blocked layout. Measured on the Lite0 encoder at 96 px (batch 64, 2 cores): the 5 pads and their
10 reorders took 34 % of the run (``Pad`` 15 %, reorders 19 %). Two steps remove them, exactly:

1. :func:`static_padding`: each ``Conv2dSame`` becomes a convolution with the pad of the one input
   size the export sees (a constant, as ONNX models are exported per input shape here);
2. :func:`fuse_pads`, after ONNX Runtime's basic optimisations (constant folding: portable, standard
   operators only) have made the pads initializers: a constant zero ``Pad`` of the spatial axes whose
   only consumer is a ``Conv`` becomes that convolution's own (possibly asymmetric) ``pads``.

The export is still compared with PyTorch on a probe batch afterwards (:data:`~galmo.nn.onnx_backend.RTOL`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


class StaticPadConv2d(torch.nn.Conv2d):
    """A ``Conv2dSame`` with the zero pad ``pads`` = (left, right, top, bottom) it gives for one input size."""

    def __init__(self, conv: torch.nn.Conv2d, pads):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        self.load_state_dict(conv.state_dict())
        self.pads = tuple(int(p) for p in pads)

    def forward(self, x):
        return F.conv2d(F.pad(x, self.pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _same_conv_class():
    try:
        from timm.layers.conv2d_same import Conv2dSame
    except ImportError:  # a timm without it has no such layers either
        return None
    return Conv2dSame


def static_padding(module: torch.nn.Module, *example) -> torch.nn.Module:
    """``module`` itself when it holds no ``Conv2dSame``; else a copy in which each one pads by the
    constant amounts of the input size it gets from ``example`` (one forward pass records them)."""
    same = _same_conv_class()
    if same is None or not any(isinstance(m, same) for m in module.modules()):
        return module
    from timm.layers.padding import get_same_padding

    module = copy.deepcopy(module)
    sizes, hooks = {}, []
    for name, m in module.named_modules():
        if isinstance(m, same):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, n=name: sizes.__setitem__(n, tuple(args[0].shape[-2:]))))
    try:
        with torch.inference_mode():
            module(*example)
    finally:
        for h in hooks:
            h.remove()
    for name, (ih, iw) in sizes.items():
        conv = module.get_submodule(name)
        ph = get_same_padding(ih, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pw = get_same_padding(iw, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        parent, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, leaf,
                StaticPadConv2d(conv, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))
    return module


def fold_constants(data: bytes) -> bytes:
    """The model after ONNX Runtime's basic optimisations (constant folding, redundant nodes removed):
    standard operators only, so the file stays portable."""
    import os
    import tempfile

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3  # its notes about unused initializers are not the user's business
    fd, tmp = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        so.optimized_model_filepath = tmp
        ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        with open(tmp, "rb") as f:
            return f.read()
    finally:
        os.unlink(tmp)


def _constants(graph) -> dict:
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _zero_spatial_pad(node, consts) -> list[int] | None:
    """The 4-D pads [top, left, bottom, right] of a constant zero ``Pad`` of H and W only, else None."""
    mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
    if mode != "constant" or len(node.input) < 2 or node.input[1] not in consts:
        return None
    if len(node.input) > 2 and node.input[2] and (node.input[2] not in consts or float(consts[node.input[2]]) != 0):
        return None
    if len(node.input) > 3 and node.input[3]:  # explicit axes: not the layout this handles
        return None
    pads = [int(v) for v in consts[node.input[1]].ravel()]
    if len(pads) != 8 or min(pads) < 0 or any(pads[i] for i in (0, 1, 4, 5)):
        return None
    return [pads[2], pads[3], pads[6], pads[7]]


def fuse_pads(data: bytes) -> tuple[bytes, int]:
    """(the model with each constant zero spatial ``Pad`` that feeds one ``Conv`` merged into that
    convolution's ``pads``, how many were merged)."""
    import onnx
    from onnx import helper

    proto = onnx.load_from_string(data)
    g = proto.graph
    consts, outputs, users = _constants(g), {o.name for o in g.output}, {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    fused = []
    for n in g.node:
        pad = _zero_spatial_pad(n, consts) if n.op_type == "Pad" and n.output[0] not in outputs else None
        convs = users.get(n.output[0], [])
        if pad is None or len(convs) != 1 or convs[0].op_type != "Conv":
            continue
        conv = convs[0]
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute):
            continue
        old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
        for a in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", [o + p for o, p in zip(old, pad)]))
        conv.input[0] = n.input[0]
        fused.append(n)
    for n in fused:
        g.node.remove(n)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for init in [i for i in g.initializer if i.name not in used]:  # the merged pads' amounts
        g.initializer.remove(init)
    return (proto.SerializeToString() if fused else data), len(fused)


def simplify(data: bytes) -> bytes:
    """:func:`fold_constants`, then :func:`fuse_pads`; ``data`` unchanged when it has no ``Pad`` node (most
    exports: the folding session is not worth building for them) or no pad to merge."""
    import onnx

    if not any(n.op_type == "Pad" for n in onnx.load_from_string(data).graph.node):
        return data
    folded = fold_constants(data)
    fused, n = fuse_pads(folded)
    return fused if n else data
