"""Encoder throughput: galmo's batched path (galmo.nn.backbones.encode: inference_mode, channels-last,
one resize per batch) vs a plain per-image loop with the same backbone. One JSON line per run.
Usage: python benchmarks/bench_encoder.py [N] [SIZE]. The cores may be shared: see 'load_avg'."""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from galmo.nn.backbones import create_backbone, data_config, encode
from galmo.nn.device import set_threads

n = int(sys.argv[1]) if len(sys.argv) > 1 else 128
size = int(sys.argv[2]) if len(sys.argv) > 2 else 96
threads = set_threads()
model = create_backbone().eval()
x = np.random.default_rng(0).uniform(0, 1, (n, 3, 64, 64)).astype(np.float32)
cfg = data_config(model)
mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)

encode(model, x[:8], size=size)  # warm-up
t = time.perf_counter()
fb = encode(model, x, size=size, batch_size=64)
batched = time.perf_counter() - t

t = time.perf_counter()
outs = []
with torch.no_grad():
    for img in x:  # the plain loop: one image at a time, default memory format, autograd bookkeeping
        xi = torch.from_numpy(img[None]).flip(1)
        xi = F.interpolate(xi, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        outs.append(model((xi - mean) / std).numpy())
loop = time.perf_counter() - t
fl = np.concatenate(outs)
print(json.dumps({"bench": "encoder", "backbone": "tf_efficientnet_lite0", "n": n, "input_px": size,
                  "threads": threads, "batched_img_s": round(n / batched, 1), "loop_img_s": round(n / loop, 1),
                  "speedup": round(loop / batched, 2), "max_abs_diff": float(np.abs(fb - fl).max()),
                  "load_avg": os.getloadavg()[0]}))
