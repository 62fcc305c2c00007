"""Inference backends: EfficientNet-Lite0 (offline weights) on 64×64 images, batch 64, resized to 96 px
(final pooled features) and to 64×252 (the 'texture' preset of galmo cluster: five maps, mean+std).
Per setting: img/s of plain torch eager (the backbone called per batch, no_grad), of galmo's loop
(galmo.nn.backbones.encode) with --backend torch and with --backend onnx (export excluded: a warm
cache), and the max relative difference of the ONNX outputs from PyTorch's. One JSON line per setting.
Usage: python benchmarks/bench_inference.py [N]. The cores may be shared: see 'load_avg'."""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from galmo.nn import onnx_backend
from galmo.nn.backbones import create_backbone, data_config, encode, intermediate, pool_features
from galmo.nn.device import set_threads
from galmo.nn.infer import set_backend

n = int(sys.argv[1]) if len(sys.argv) > 1 else 512
bs = 64
threads = set_threads()
model = create_backbone().eval()
x = np.random.default_rng(0).uniform(0, 1, (n, 3, 64, 64)).astype(np.float32)
cfg = data_config(model)
mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
SETTINGS = [("final_96", {"size": 96}), ("texture_64x252", {"size": (64, 252), "layer": (2, 3, 4, 5, 6),
                                                            "pool": "meanstd"})]


def eager(kw):
    hw = kw["size"] if isinstance(kw["size"], tuple) else (kw["size"],) * 2
    outs = []
    with torch.no_grad():
        for s in range(0, n, bs):
            xb = F.interpolate(torch.from_numpy(x[s:s + bs]).flip(1), size=hw, mode="bilinear", align_corners=False,
                               antialias=True)
            xb = (xb - mean) / std
            if "layer" in kw:
                fm = intermediate(model, xb, kw["layer"])
                outs.append(torch.cat([pool_features(m, kw["pool"]) for m in fm], 1).numpy())
            else:
                outs.append(model(xb).numpy())
    return np.concatenate(outs)


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, n / (time.perf_counter() - t)


for name, kw in SETTINGS:
    row = {"bench": "inference", "backbone": "tf_efficientnet_lite0", "setting": name, "n": n, "batch": bs,
           "threads": threads}
    eager(dict(kw))  # warm-up (small n would be unfair otherwise)
    ref, row["torch_eager_img_s"] = timed(lambda: eager(kw))
    for backend in ("torch", "onnx"):
        set_backend(backend)
        e0 = onnx_backend.stats["exports"]
        t = time.perf_counter()
        encode(model, x[:bs], batch_size=bs, **kw)  # warm-up (and the export, timed apart)
        if backend == "onnx":
            row["onnx_first_call_s"] = round(time.perf_counter() - t, 2)
            row["onnx_exported"] = onnx_backend.stats["exports"] - e0
        out, row[f"galmo_{backend}_img_s"] = timed(lambda: encode(model, x, batch_size=bs, **kw))
        row[f"max_rel_diff_{backend}_vs_eager"] = onnx_backend.max_rel_diff(out, ref)
    for k in list(row):
        if k.endswith("_img_s"):
            row[k] = round(row[k], 1)
    row["onnx_speedup_vs_galmo_torch"] = round(row["galmo_onnx_img_s"] / row["galmo_torch_img_s"], 2)
    row["load_avg"] = os.getloadavg()[0]
    print(json.dumps(row), flush=True)
