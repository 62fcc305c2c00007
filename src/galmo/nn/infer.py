"""The ONE batched inference loop: every forward pass that is not training goes through here.

``infer(fn, X)`` runs ``fn`` (an ``nn.Module`` or any callable of tensors) over ``X`` in batches
under ``torch.inference_mode`` on the chosen device, with a progress bar in images, and writes the
outputs into one array allocated once (memory: the inputs, one batch, the output). ``X`` is a numpy
array, a tuple of arrays (``fn`` then takes one tensor per array) or an iterator of such batches
(streamed from a source). ``infer_batches`` yields the output of each batch instead, for callers
that keep only a reduction of it.

Encoders, the denoiser, predictions (with TTA), embeddings and every evaluation call these; a backend
(ONNX Runtime) plugs in here and nowhere else.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from galmo.nn.device import resolve_device


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
                  desc: str = "inference", dtype=torch.float32, total: int | None = None) -> Iterator[np.ndarray]:
    """Yield ``fn(batch)`` as float32 numpy, one batch at a time (see the module docstring)."""
    dev = resolve_device(device) if isinstance(device, (str, type(None))) else device
    if isinstance(fn, torch.nn.Module):
        fn = fn.to(dev).eval()
    batches, n = _slices(X, batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n if n is not None else total, desc=desc, unit="img", leave=False)
    try:
        with torch.inference_mode():
            for b in batches:
                out = fn(*(_to_device(a, dev, dtype) for a in b))
                if bar is not None:
                    bar.update(len(b[0]))
                yield out.float().cpu().numpy()
    finally:
        if bar is not None:
            bar.close()


def infer(fn: Callable, X, *, batch_size: int = 256, device="cpu", progress: bool = False, desc: str = "inference",
          dtype=torch.float32, total: int | None = None) -> np.ndarray:
    """All outputs of ``fn`` over ``X`` as one float32 array (N, ...), allocated once when N is known."""
    batches, n = _slices(X, batch_size)
    out = None
    pos = 0
    parts = []
    for y in infer_batches(fn, X, batch_size=batch_size, device=device, progress=progress, desc=desc, dtype=dtype,
                           total=total):
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

