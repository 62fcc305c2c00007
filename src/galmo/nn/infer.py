"""The ONE batched inference loop: every forward pass that is not training goes through here.

``infer(fn, X)`` runs ``fn`` (an ``nn.Module`` or any callable of tensors) over ``X`` in batches
under ``torch.inference_mode`` on the chosen device, with a progress bar in images, and writes the
outputs into one array allocated once (memory: the inputs, one batch, the output). ``X`` is a numpy
array, a tuple of arrays (``fn`` then takes one tensor per array) or an iterator of such batches
(streamed from a source). ``infer_batches`` yields the output of each batch instead, for callers
that keep only a reduction of it.

Encoders, the denoiser, predictions (with TTA), embeddings and every evaluation call these.

The backend (``backend=`` or the process-wide :func:`set_backend`, set from ``--backend``): ``auto``
runs an ``nn.Module`` with ONNX Runtime on CPU and with PyTorch on CUDA; ``torch`` and ``onnx``
force one. Only ``nn.Module`` callables with float inputs go to ONNX Runtime (exported once per
weights and input shape, cached, checked against PyTorch: :mod:`galmo.nn.onnx_backend`); other
callables (closures, bound methods) always run with PyTorch. ``torch`` never imports onnxruntime.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from galmo.nn.device import resolve_device

BACKENDS = ("auto", "torch", "onnx")
_backend = "auto"


def _checked(name: str) -> str:
    if name not in BACKENDS:
        from galmo.core.errors import GalmoError

        raise GalmoError(f"--backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return name


def set_backend(name: str | None) -> str:
    """Set the process-wide backend (``auto``, ``torch`` or ``onnx``; None: leave it); returns it."""
    global _backend
    if name is not None:
        _backend = _checked(name)
    return _backend


def resolve_backend(backend: str | None, device, module=None) -> str:
    """``torch`` or ``onnx`` for a device (``auto``: ONNX Runtime on CPU, PyTorch elsewhere, and PyTorch
    for a module whose ``onnx_auto`` attribute is False: one measured to run faster on PyTorch)."""
    b = _backend if backend is None else _checked(backend)
    if b == "auto":
        cpu = torch.device(device).type == "cpu"
        return "onnx" if cpu and getattr(module, "onnx_auto", True) else "torch"
    return b


def _as_tuple(b) -> tuple:
    return tuple(b) if isinstance(b, (tuple, list)) else (b,)


def _slices(X, batch_size: int) -> tuple[Iterator[tuple], int | None]:
    """Batches of ``X`` (array, tuple of arrays, or iterator of batches) and the row count when known."""
    if isinstance(X, (np.ndarray, torch.Tensor)) or (isinstance(X, tuple) and X and
                                                      isinstance(X[0], (np.ndarray, torch.Tensor))):
        arrays = _as_tuple(X)
        n = len(arrays[0])
        return ((tuple(a[s:s + batch_size] for a in arrays) for s in range(0, n, batch_size)), n)
    return ((_as_tuple(b) for b in X), None)


def _to_device(a, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    if t.is_floating_point() and dtype is not None:
        t = t.to(dtype)
    return t.to(device, non_blocking=True)


def infer_batches(fn: Callable, X, *, batch_size: int = 256, device="cpu", progress: bool = False,
                  desc: str = "inference", dtype=torch.float32, total: int | None = None,
                  backend: str | None = None) -> Iterator[np.ndarray]:
    """Yield ``fn(batch)`` as float32 numpy, one batch at a time (see the module docstring)."""
    dev = resolve_device(device) if isinstance(device, (str, type(None))) else device
    runner = None
    if isinstance(fn, torch.nn.Module):
        fn = fn.to(dev).eval()
        if resolve_backend(backend, dev, fn) == "onnx" and dtype in (None, torch.float32):
            from galmo.nn.onnx_backend import OnnxRunner

            runner = OnnxRunner(fn, dev)
    batches, n = _slices(X, batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n if n is not None else total, desc=desc, unit="img", leave=False)
    try:
        with torch.inference_mode():
            for b in batches:
                y = None
                if runner is not None:
                    arrays = [_to_device(a, "cpu", dtype).numpy() for a in b]
                    if all(a.dtype == np.float32 for a in arrays):
                        y = runner.run(arrays)
                if y is None:
                    y = fn(*(_to_device(a, dev, dtype) for a in b)).float().cpu().numpy()
                if bar is not None:
                    bar.update(len(b[0]))
                yield np.asarray(y, dtype=np.float32)
    finally:
        if bar is not None:
            bar.close()


def infer(fn: Callable, X, *, batch_size: int = 256, device="cpu", progress: bool = False, desc: str = "inference",
          dtype=torch.float32, total: int | None = None, backend: str | None = None) -> np.ndarray:
    """All outputs of ``fn`` over ``X`` as one float32 array (N, ...), allocated once when N is known."""
    _, n = _slices(X, batch_size)  # the row count, when X is an array (the batches are made below)
    out = None
    pos = 0
    parts = []
    for y in infer_batches(fn, X, batch_size=batch_size, device=device, progress=progress, desc=desc, dtype=dtype,
                           total=total, backend=backend):
        if n is None:
            parts.append(y)
            continue
        if out is None:
            out = np.empty((n, *y.shape[1:]), dtype=np.float32)
        out[pos:pos + len(y)] = y
        pos += len(y)
    if n is None:
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)
    return out if out is not None else np.zeros((0,), np.float32)

