"""Inference speed on this machine's CPU, every backend side by side in one run (JSON lines on stdout,
a summary table on stderr).

Models (random 64 × 64 inputs in [0, 1], resized inside the batch function where the model wants
another size): EfficientNet-Lite0 (offline weights) at 64, 96 and 224 px (final pooled features)
and at 64 × 252 (the 'texture' preset of galmo cluster: five feature maps, mean + std); the
rotation-invariant CNN of galmo train at 64 px (16 views per image, width 32, downsample 2, as
``model_kwargs`` builds it); the patch transformer of galmo pretrain (tiny, 64 px, patches of 8).

Per model and batch size (1, 16, 64, 256) one line with the images per second of
- ``torch_eager``: the batch function called per batch under ``torch.inference_mode``, NCHW;
- ``torch_channels_last``: the same with model and input in channels-last memory;
- ``galmo_torch`` / ``galmo_onnx``: galmo's public call (``backbones.encode``, ``predict_arrays``,
  ``EmbeddingModel.encode_batches``) through the one inference loop with ``--backend torch`` / ``onnx``
  (the export and its check are done before the timing, and reported once as ``onnx_first_call_s``);
and ``gflop_per_img`` (convolutions and matrix products, ``torch.utils.flop_counter.FlopCounterMode``
on the eager function), the achieved fraction of the machine's float32 peak (``pct_peak``: GFLOP/img ×
img/s over the GFLOP/s of a 2048² ``torch.matmul``, measured at the start of this run),
``max_rel_diff`` of each variant's outputs from eager's (max |Δ| / max |eager|) and ``load_avg``
(the cores may be shared). Each cell: one warm-up batch, then whole batches for at least
``--min-time`` seconds (a single batch when one takes longer). A line ``onnx_fallback`` names the
reason when ONNX Runtime could not run the model (then galmo_onnx is PyTorch). The run uses a fresh
temporary export cache (``GALMO_CACHE``), so nothing exported by an older version is reused.

int8 (on unless ``--no-int8``): ONNX Runtime dynamic quantisation (``quantize_dynamic``, int8 weights)
of galmo's exported Lite0 encoder at 96 px, and static QDQ quantisation (per channel, calibrated on
a third of the probe galaxies) beside it: img/s at batch 64 against the fp32 graph, how much the
embeddings change (max relative difference, Pearson correlation of all values, mean cosine
similarity per galaxy), and the 5-fold logistic-probe accuracy of the Galaxy10 class
(``galmo.methods.embeddings.probe.probe``) on ``--probe-n`` simulated galaxies, fp32 and int8.

Usage: python benchmarks/bench_inference.py [--quick] [--min-time S] [--no-int8] [--only WORD ...].
``--quick``: batches
1 and 64, Lite0 at 96 px and 64 × 252, rotinv and the patch transformer, 0.2 s per cell, a
200-galaxy probe (about a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

VARIANTS = ("torch_eager", "torch_channels_last", "galmo_torch", "galmo_onnx")
MAX_IMAGES = 512


def peak_gflops(n: int = 2048, seconds: float = 3.0) -> float:
    """GFLOP/s of float32 ``a @ b`` with n × n matrices (2n³ FLOP each), the best of ≥ 3 calls in ``seconds``
    (3 s: a 1 s window read 144 GFLOP/s where a warmed-up core pair gives 183, which flatters every % of peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, t_end = float("inf"), time.perf_counter() + seconds
    for i in range(1000):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
        if i >= 2 and time.perf_counter() > t_end:
            break
    return 2 * n ** 3 / best / 1e9


def flops_per_image(fn, x: np.ndarray) -> float:
    """FLOPs per image of ``fn`` (convolutions, matrix products, attention) counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        fn(torch.from_numpy(x))
    return fc.get_total_flops() / len(x)


def per_batch(fn):
    """``(X, b) → outputs``: ``fn`` called on each batch of ``b`` images (torch eager)."""
    def run(X, b):
        with torch.inference_mode():
            return np.concatenate([fn(torch.from_numpy(X[s:s + b])).float().numpy() for s in range(0, len(X), b)])

    return run


def with_backend(call, backend: str):
    """``(X, b) → outputs`` of galmo's ``call`` with the process-wide ``--backend``."""
    from galmo.nn.infer import set_backend

    def run(X, b):
        set_backend(backend)
        try:
            return call(X, b)
        finally:
            set_backend("auto")

    return run


def variants(eager_fn, model, galmo_call) -> dict:
    """The four ways to run one model: eager NCHW, eager channels-last (a copy of the model), and
    galmo's call on each backend. ``eager_fn(model, memory_format)`` is the batch function."""
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return {"torch_eager": per_batch(eager_fn(model, torch.contiguous_format)),
            "torch_channels_last": per_batch(eager_fn(cl_model, torch.channels_last)),
            "galmo_torch": with_backend(galmo_call, "torch"), "galmo_onnx": with_backend(galmo_call, "onnx")}


# ------------------------------------------------------------------ the models: (name, input, eager_fn, model, call)
def lite0_case(size, layer=None, pool: str = "avg"):
    """EfficientNet-Lite0 as galmo's encoder runs it: RGB planes, antialiased resize, normalise, pooled features."""
    from galmo.nn.backbones import create_backbone, data_config, encode, intermediate, pool_features, to_rgb

    model = create_backbone().eval()
    cfg = data_config(model)
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    hw = (size, size) if np.isscalar(size) else tuple(size)

    def eager_fn(m, fmt):
        def fn(x):
            x = to_rgb(x)
            if tuple(x.shape[-2:]) != hw:
                x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
            x = ((x - mean) / std).contiguous(memory_format=fmt)
            if layer is None:
                return m(x)
            return torch.cat([pool_features(f, pool) for f in intermediate(m, x, layer)], 1)
        return fn

    galmo_model = copy.deepcopy(model)
    name = "lite0" if layer is None else "lite0_texture"
    return (name, "x".join(map(str, hw)), eager_fn, model,
            lambda X, b: encode(galmo_model, X, size=size, layer=layer, pool=pool, batch_size=b))


def rotinv_case():
    """The rotation-invariant CNN of galmo train (16 views in one trunk pass), class probabilities, no TTA."""
    from galmo.methods.supervised.run import model_kwargs, predict_arrays
    from galmo.nn.models import create

    torch.manual_seed(0)
    model = create("rotinv", **model_kwargs("rotinv", target="class", n_classes=10, in_chans=3, image_size=64)).eval()
    galmo_model = copy.deepcopy(model)
    return ("rotinv", "64x64 (16 views)", lambda m, fmt: (lambda x: m(x.contiguous(memory_format=fmt)).softmax(1)),
            model, lambda X, b: predict_arrays(galmo_model, X, "class", tta=1, batch_size=b))


def patch_transformer_case():
    """galmo pretrain's default patch transformer (tiny, 64 px, patches of 8, no photometry): its embedding."""
    from galmo.methods.embeddings.encoders import EmbeddingModel
    from galmo.nn.models import create

    torch.manual_seed(0)
    model = create("patch_transformer", in_chans=3, img_size=64, patch_size=8, size="tiny").eval()
    enc = EmbeddingModel("pt", "patch_transformer", copy.deepcopy(model), model.num_features)
    return ("patch_transformer_tiny", "64x64", lambda m, fmt: (lambda x: m.forward_features(x.contiguous(
        memory_format=fmt))), model, lambda X, b: enc.encode_batches((X[s:s + b],) for s in range(0, len(X), b)))


# ------------------------------------------------------------------ timing
def img_per_s(run, X: np.ndarray, b: int, min_time: float) -> tuple[float, np.ndarray]:
    """(images per second, the warm-up batch's outputs): one warm-up batch, then calls over as many
    whole batches as fill ``min_time`` (estimated from the warm-up), repeated until ``min_time`` passed."""
    t = time.perf_counter()
    first = run(X[:b], b)
    warm = time.perf_counter() - t
    n = b * int(np.clip(round(min_time / max(warm, 1e-6)), 1, max(MAX_IMAGES // b, 1)))
    done, elapsed = 0, 0.0
    while elapsed < min_time or not done:
        t = time.perf_counter()
        run(X[:n], b)
        elapsed += time.perf_counter() - t
        done += n
    return done / elapsed, first


@contextlib.contextmanager
def stdout_to_stderr():
    """File descriptor 1 onto 2 for a while: a failing TorchScript export prints its whole graph on
    stdout from C++, which would break the JSON lines."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def prepare_onnx(run, X) -> tuple[float, str | None]:
    """(seconds of the first ONNX call: export, check, session), the fallback reason when there is one."""
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, stdout_to_stderr():
        warnings.simplefilter("always")
        run(X[:16], 16)
    reasons = [str(w.message) for w in caught if "ONNX" in str(w.message)]
    return time.perf_counter() - t, (reasons[0][:300] if reasons else None)


def bench_case(case, X: np.ndarray, batches, min_time: float, peak: float, threads: int) -> list[dict]:
    """One JSON line per batch size for one model: img/s, % of peak and output difference per variant."""
    from galmo.nn.onnx_backend import max_rel_diff

    name, inp, eager_fn, model, call = case
    runs = variants(eager_fn, model, call)
    flops = flops_per_image(eager_fn(model, torch.contiguous_format), X[:2])
    first_s, fallback = prepare_onnx(runs["galmo_onnx"], X)
    rows = []
    for b in batches:
        row = {"bench": "inference", "model": name, "input": inp, "batch": b, "threads": threads,
               "gflop_per_img": round(flops / 1e9, 4), "peak_gflop_s": round(peak, 1), "img_s": {}, "pct_peak": {}}
        outs = {}
        for v, run in runs.items():
            ips, outs[v] = img_per_s(run, X, b, min_time)
            row["img_s"][v] = round(ips, 1)
            row["pct_peak"][v] = round(100 * flops * ips / (peak * 1e9), 1)
        row["max_rel_diff"] = {v: float(f"{max_rel_diff(outs[v], outs['torch_eager']):.2g}") for v in VARIANTS[1:]}
        row.update(onnx_first_call_s=round(first_s, 2), onnx_fallback=fallback,
                   load_avg=[round(v, 2) for v in os.getloadavg()])
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ------------------------------------------------------------------ int8
def lite0_onnx_file(size: int, X: np.ndarray):
    """The fp32 ONNX file galmo's loop exports for the Lite0 encoder at ``size`` px (64 px inputs)."""
    from galmo.nn import onnx_backend
    from galmo.nn.backbones import encoder_head, create_backbone

    head = encoder_head(create_backbone().eval(), size, None, "avg", "cpu").eval()
    onnx_backend.OnnxRunner(head).run([X[:16]])  # exports once (or finds it in the cache)
    key = onnx_backend.model_key(head, (tuple(X.shape[1:]),), (str(X.dtype),))
    return onnx_backend.onnx_dir() / f"{key}.onnx"


def session_outputs(sess, X: np.ndarray, b: int = 64) -> np.ndarray:
    return np.concatenate([sess.run(None, {"x0": X[s:s + b]})[0] for s in range(0, len(X), b)])


def session_img_s(sess, X: np.ndarray, b: int, min_time: float) -> float:
    return img_per_s(lambda x, bb: session_outputs(sess, x, bb), X, b, min_time)[0]


def probe_set(n: int, folder) -> tuple[np.ndarray, np.ndarray]:
    """``n`` simulated galaxies (64 px, seed 1, balanced classes): images and Galaxy10 labels."""
    from galmo.simulate import simulate
    from galmo.sources import open_source

    src = open_source(simulate(n=n, size=64, seed=1, out=os.path.join(folder, "probe.h5"), progress=False))
    return src.read(np.arange(len(src)), kind="image"), src.catalog["label"].to_numpy()


def quantisers(calibration: np.ndarray, tmp: str) -> dict:
    """name → ``(fp32 path, int8 path) → None``: ONNX Runtime's dynamic quantisation (int8 weights,
    activations quantised per batch; ``per_channel`` gives the same graph, ConvInteger takes one scale
    per tensor) and, for comparison, static QDQ quantisation calibrated on ``calibration`` images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"x0": calibration[s:s + 16]} for s in range(0, len(calibration), 16))

        def get_next(self):
            return next(self.it, None)

    def static(src, dst):
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(str(src), pre, skip_symbolic_shape=True)
        quantize_static(pre, dst, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

    return {"dynamic int8 (quantize_dynamic)": lambda src, dst: quantize_dynamic(str(src), dst,
                                                                                 weight_type=QuantType.QInt8),
            f"static int8 QDQ per channel, {len(calibration)} calibration images": static}


def int8_row(name: str, quantise, fp32, tmp: str, X, images, labels, ref: dict, min_time: float) -> dict:
    """One quantiser's line: its speed against fp32's (batch 64) and the change of the embeddings."""
    from galmo.methods.embeddings.probe import probe
    from galmo.nn import onnx_backend

    dst = os.path.join(tmp, f"int8_{name.split()[0]}.onnx")
    t = time.perf_counter()
    quantise(fp32, dst)
    quant_s = time.perf_counter() - t
    s8 = onnx_backend.session(dst)
    e8, e32 = session_outputs(s8, images), ref["emb"]
    cos = (e8 * e32).sum(1) / (np.linalg.norm(e8, axis=1) * np.linalg.norm(e32, axis=1) + 1e-30)
    ips8 = session_img_s(s8, X, 64, min_time)
    return {"bench": "int8", "model": "lite0", "input": ref["input"], "batch": 64, "quant": name,
            "quantize_s": round(quant_s, 2), "fp32_img_s": round(ref["img_s"], 1), "int8_img_s": round(ips8, 1),
            "speedup": round(ips8 / ref["img_s"], 2), "max_rel_diff": round(onnx_backend.max_rel_diff(e8, e32), 3),
            "pearson": round(float(np.corrcoef(e8.ravel(), e32.ravel())[0, 1]), 4),
            "mean_cosine": round(float(cos.mean()), 4), "probe_n": int(len(labels)),
            "probe_acc_fp32": round(ref["acc"], 3), "probe_acc_int8": round(probe(e8, labels)["mean"], 3),
            "load_avg": [round(v, 2) for v in os.getloadavg()]}


def int8_rows(X: np.ndarray, probe_n: int, min_time: float, size: int = 96) -> list[dict]:
    """int8 ONNX Runtime quantisations of the Lite0 encoder at ``size`` px: speed, change of the
    embeddings and linear-probe accuracy on ``probe_n`` simulated galaxies, fp32 beside."""
    import logging

    from galmo.methods.embeddings.probe import probe
    from galmo.nn import onnx_backend

    logging.getLogger().setLevel(logging.ERROR)  # the quantiser's advice to pre-process the model
    fp32 = lite0_onnx_file(size, X)
    s32 = onnx_backend.session(fp32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = probe_set(probe_n, tmp)
        e32 = session_outputs(s32, images)
        ref = {"input": f"{size}x{size}", "emb": e32, "acc": probe(e32, labels)["mean"],
               "img_s": session_img_s(s32, X, 64, min_time)}
        for name, quantise in quantisers(images[::3][:96], tmp).items():
            rows.append(int8_row(name, quantise, fp32, tmp, X, images, labels, ref, min_time))
            print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------ main
def summary(rows: list[dict]) -> str:
    """The img/s table (markdown) of the inference lines."""
    head = "| model | input | batch | " + " | ".join(VARIANTS) + " | GFLOP/img | % peak (onnx) | load |"
    lines = [head, "|" + "---|" * (len(VARIANTS) + 6)]
    for r in rows:
        ips = " | ".join(f"{r['img_s'][v]:g}" for v in VARIANTS)
        lines.append(f"| {r['model']} | {r['input']} | {r['batch']} | {ips} | {r['gflop_per_img']:.3g} | "
                     f"{r['pct_peak']['galmo_onnx']:g} | {r['load_avg'][0]:g} |")
    return "\n".join(lines)


def case_list(quick: bool) -> list[tuple[str, object]]:
    """(label, factory) of the models to measure."""
    texture = ((64, 252), (2, 3, 4, 5, 6), "meanstd")
    lite0 = [(96,), texture] if quick else [(64,), (96,), (224,), texture]
    return [(f"lite0 {a[0]}", lambda a=a: lite0_case(*a)) for a in lite0] + \
        [("rotinv", rotinv_case), ("patch_transformer", patch_transformer_case)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer models and batch sizes, 0.2 s per cell")
    ap.add_argument("--min-time", type=float, default=None, help="seconds per cell (default 0.5, quick 0.2)")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 measurement")
    ap.add_argument("--only", nargs="+", default=None, metavar="WORD",
                    help="only the models whose label contains a WORD (lite0, 96, 252, rotinv, patch_transformer)")
    ap.add_argument("--probe-n", type=int, default=None, help="simulated galaxies of the int8 probe (600, quick 200)")
    args = ap.parse_args(argv)

    from galmo.nn.device import set_threads

    with tempfile.TemporaryDirectory() as cache:
        os.environ["GALMO_CACHE"] = cache  # a fresh export cache: every export is made (and timed) in this run
        measure(args, set_threads())


def peak_line(when: str, threads: int) -> float:
    peak = peak_gflops()
    print(json.dumps({"bench": "peak", "when": when, "what": "float32 2048x2048 torch.matmul, best call",
                      "gflop_s": round(peak, 1), "threads": threads,
                      "load_avg": [round(v, 2) for v in os.getloadavg()]}), flush=True)
    return peak


def measure(args, threads: int) -> None:
    """The peak, every model's lines and the summary table, the int8 lines, the peak again (drift)."""
    min_time = args.min_time or (0.2 if args.quick else 0.5)
    batches = (1, 64) if args.quick else (1, 16, 64, 256)
    X = np.random.default_rng(0).uniform(0, 1, (MAX_IMAGES, 3, 64, 64)).astype(np.float32)
    peak = peak_line("start", threads)
    rows = []
    for label, make in case_list(args.quick):
        if not args.only or any(w in label for w in args.only):
            rows += bench_case(make(), X, batches, min_time, peak, threads)
    print(summary(rows), file=sys.stderr)
    if not args.no_int8:
        int8_rows(X, args.probe_n or (200 if args.quick else 600), min_time)
    peak_line("end", threads)


if __name__ == "__main__":
    main()
