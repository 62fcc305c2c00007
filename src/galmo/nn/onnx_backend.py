"""ONNX Runtime behind :mod:`galmo.nn.infer` (imported only when the ONNX backend is chosen).

An ``nn.Module`` given to the inference loop is exported once per (weights, input shape) with a
dynamic batch axis (``torch.onnx.export(dynamo=False)``, the TorchScript exporter: the dynamo one
needs onnxscript) into ``cache_dir()/onnx/<key>.onnx``; ``key`` hashes the module's class and repr
(architecture and wrapper settings), its state_dict bytes, the input shapes and dtypes and the
versions of torch, onnxruntime and galmo. At export the ONNX outputs are compared with PyTorch's on
a probe batch (max |onnx - torch| / max |torch| ≤ ``RTOL``); a module that does not export or does
not match runs with PyTorch, with one warning per model and process (and a ``<key>.failed`` note so
later processes do not try again). Sessions (intra-op threads = torch's thread count, which
:func:`galmo.nn.device.set_threads` sets; sequential execution; every graph optimisation) are
cached per model file and reused across batches and calls.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from galmo.nn.onnx_graph import simplify, static_padding

RTOL = 1e-4
OPSET = 18
PROBE_ROWS = 8
EXPORT_REVISION = 2  # how galmo shapes an export (2: static SAME pads merged into the convolutions, onnx_graph)
RUN_ROWS = 64  # rows per ONNX Runtime call: larger batches ran slower (activations out of cache), measured
# Bounds: models trained and used once (a probe's CNN per fold, a denoiser) export files no later run
# reuses; the least recently used files beyond these go, and at most MAX_SESSIONS stay loaded.
MAX_CACHE_FILES = 64
MAX_CACHE_BYTES = 2 << 30
MAX_SESSIONS = 8
stats = {"exports": 0}  # counted for the tests and benchmarks
_sessions: OrderedDict = OrderedDict()
_warned: set = set()


def _versions() -> str:
    import onnxruntime

    from galmo import __version__ as galmo_version

    return (f"torch={torch.__version__};onnxruntime={onnxruntime.__version__};galmo={galmo_version};opset={OPSET};"
            f"export={EXPORT_REVISION}")


def weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        t = t.contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def code_hash(module: torch.nn.Module) -> str:
    """A hash of the source files that define the classes of ``module`` and its submodules: an export
    made before the code changed (a forward pass edited within one galmo version) is not reused."""
    import inspect

    h = hashlib.sha256()
    for f in sorted({inspect.getsourcefile(type(m)) or "" for m in module.modules()}):
        try:
            h.update(f.encode() + Path(f).read_bytes())
        except OSError:
            h.update(f.encode())
    return h.hexdigest()


def model_key(module: torch.nn.Module, shapes: tuple, dtypes: tuple) -> str:
    h = hashlib.sha256()
    h.update(f"{type(module).__module__}.{type(module).__qualname__}\n{module!r}\n".encode())
    h.update(weights_hash(module).encode())
    h.update(code_hash(module).encode())
    h.update(f"{shapes};{dtypes};{_versions()}".encode())
    return h.hexdigest()[:32]


def onnx_dir() -> Path:
    from galmo.core.io import cache_dir

    d = cache_dir() / "onnx"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _providers(device) -> list[str]:
    import onnxruntime as ort

    if getattr(device, "type", "cpu") == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(path: Path, device=None):
    """The (cached) ONNX Runtime session of a model file, options set once."""
    import onnxruntime as ort

    threads = torch.get_num_threads()
    providers = _providers(device)
    key = (str(path), threads, tuple(providers))
    s = _sessions.get(key)
    if s is None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        s = _sessions[key] = ort.InferenceSession(str(path), so, providers=providers)
        os.utime(path)  # recently used: kept by prune_cache
        while len(_sessions) > MAX_SESSIONS:
            _sessions.popitem(last=False)
    _sessions.move_to_end(key)
    return s


def prune_cache(folder: Path, keep: Path | None = None) -> None:
    """Delete the least recently used ``.onnx`` files (and stale ``.failed`` notes) of ``folder`` beyond
    :data:`MAX_CACHE_FILES` files or :data:`MAX_CACHE_BYTES` bytes; ``keep`` is never deleted."""
    files = sorted(folder.glob("*.onnx"), key=lambda f: f.stat().st_mtime, reverse=True)
    total = 0
    for i, f in enumerate(files):
        total += f.stat().st_size
        if f != keep and (i >= MAX_CACHE_FILES or total > MAX_CACHE_BYTES):
            f.unlink(missing_ok=True)
    notes = sorted(folder.glob("*.failed"), key=lambda f: f.stat().st_mtime, reverse=True)
    for f in notes[MAX_CACHE_FILES:]:
        f.unlink(missing_ok=True)


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (b the reference)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if b.size == 0:
        return 0.0
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0 if np.array_equal(a, b, equal_nan=True) else float("inf")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@contextmanager
def _quiet_fds():
    """Silence stdout and stderr at the file-descriptor level: a failing TorchScript export prints its
    whole graph from C++, which no Python-level redirect catches."""
    import sys
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


class OnnxRunner:
    """Runs one module with ONNX Runtime, exporting per input shape; ``None`` from :meth:`run` = use PyTorch."""

    def __init__(self, module: torch.nn.Module, device=None):
        self.module = module
        self.device = device
        self.sessions: dict = {}  # (shapes, dtypes) -> session or None (fallback)

    def run(self, arrays: list[np.ndarray]):
        shapes = tuple(tuple(a.shape[1:]) for a in arrays)
        dtypes = tuple(str(a.dtype) for a in arrays)
        sig = (shapes, dtypes)
        if sig not in self.sessions:
            self.sessions[sig] = self._prepare(arrays, shapes, dtypes)
        s = self.sessions[sig]
        if s is None:
            return None
        n = len(arrays[0])
        if n <= RUN_ROWS:
            return s.run(None, {f"x{i}": a for i, a in enumerate(arrays)})[0]
        parts = [s.run(None, {f"x{i}": a[k:k + RUN_ROWS] for i, a in enumerate(arrays)})[0]
                 for k in range(0, n, RUN_ROWS)]
        return np.concatenate(parts)

    def _fallback(self, key: str, reason: str):
        if key not in _warned:
            _warned.add(key)
            warnings.warn(f"ONNX Runtime backend: {type(self.module).__name__} runs with PyTorch instead ({reason}); "
                          "--backend torch silences this", RuntimeWarning, stacklevel=4)
        return None

    def _prepare(self, arrays, shapes, dtypes):
        try:
            key = model_key(self.module, shapes, dtypes)
        except Exception as e:  # noqa: BLE001 - an unhashable module just runs on torch
            return self._fallback(f"id{id(self.module)}", f"cannot hash its weights: {type(e).__name__}: {e}")
        d = onnx_dir()
        path, failed = d / f"{key}.onnx", d / f"{key}.failed"
        if failed.exists():
            return self._fallback(key, failed.read_text().strip()[:300])
        if not path.exists():
            reason = self._export(arrays, path)
            prune_cache(d, keep=path)
            if reason is not None:
                from galmo.core.io import write_text

                try:
                    write_text(failed, reason + "\n")
                except Exception:  # noqa: BLE001 - a read-only cache only costs a retry next time
                    pass
                return self._fallback(key, reason)
        try:
            return session(path, self.device)
        except Exception as e:  # noqa: BLE001 - a corrupt cache file: fall back, never crash
            return self._fallback(key, f"cannot load {path}: {type(e).__name__}: {str(e)[:200]}")

    def _export(self, arrays, path: Path) -> str | None:
        """Export, check against PyTorch on a probe batch, write ``path``; the reason when it fails."""
        probe = [torch.from_numpy(np.ascontiguousarray(a[:PROBE_ROWS])) for a in arrays]
        names = [f"x{i}" for i in range(len(arrays))]
        try:
            with torch.inference_mode():
                ref = self.module(*probe)
            if not isinstance(ref, torch.Tensor):
                return f"its output is a {type(ref).__name__}, not one tensor"
            ref = ref.float().cpu().numpy()
            buf = io.BytesIO()
            with warnings.catch_warnings(), _quiet_fds():
                warnings.simplefilter("ignore")
                with torch.no_grad():
                    torch.onnx.export(static_padding(self.module, *probe), tuple(probe), buf, dynamo=False,
                                      opset_version=OPSET,
                                      input_names=names, output_names=["y"],
                                      dynamic_axes={**{n: {0: "batch"} for n in names}, "y": {0: "batch"}})
            stats["exports"] += 1
        except Exception as e:  # noqa: BLE001 - any exporter refusal means: stay on torch
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            return f"it does not export to ONNX: {type(e).__name__}: {msg}"
        data = buf.getvalue()
        try:
            with _quiet_fds():  # ONNX Runtime's C++ logger notes each initializer the folding leaves unused
                data = simplify(data)
        except Exception:  # noqa: BLE001 - the clean-up is an optimisation: the plain export still runs
            pass
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = torch.get_num_threads()
            s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            got = s.run(None, {n: p.numpy() for n, p in zip(names, probe)})[0]
        except Exception as e:  # noqa: BLE001
            return f"ONNX Runtime cannot run its export: {type(e).__name__}: {str(e)[:200]}"
        diff = max_rel_diff(got, ref)
        if not diff <= RTOL:
            return f"its ONNX outputs differ from PyTorch's by {diff:.2g} (relative; limit {RTOL:g})"
        from galmo.core.io import atomic_path

        try:
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(data)
        except Exception as e:  # noqa: BLE001 - a read-only cache: stay on torch
            return f"cannot write {path}: {e}"
        return None
