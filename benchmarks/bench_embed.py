"""Embedding throughput (images/s) of every encoder kind, on the CPU by default.

Random 3-band 64×64 images in [0, 1] (throughput does not depend on content). Every encoder goes
through ``EmbeddingModel.encode``: ``galmo.nn.infer`` for patch transformers, ``galmo.nn.backbones.encode``
for timm backbones (the path ``galmo embed`` takes). Patch transformers
are randomly initialised (same cost as trained ones); EfficientNet-Lite0 uses its offline weights
and is timed at several input sizes. Prints one JSON line per encoder; the load average is recorded
because other processes sharing the cores slow every number down.

    python benchmarks/bench_embed.py [--n 1024] [--batch-size 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--size", type=int, default=64, help="image size in pixels")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lite0-sizes", type=int, nargs="+", default=[64, 96, 224])
    args = ap.parse_args()

    import torch

    from galmo.nn.device import set_threads
    from galmo.methods.embeddings.encoders import EmbeddingModel, load_encoder
    from galmo.nn.models import create

    threads = set_threads()
    images = np.random.default_rng(0).random((args.n, 3, args.size, args.size), dtype=np.float32)
    encoders = []
    for size in ("tiny", "small"):
        for n_phot in (0, 5):
            torch.manual_seed(0)
            m = create("patch_transformer", in_chans=3, img_size=args.size, patch_size=8, size=size, n_phot=n_phot,
                       phot_names=[f"p{k}" for k in range(n_phot)]).eval()
            enc = EmbeddingModel(f"patch_transformer {size}" + (f" + {n_phot} photometry tokens" if n_phot else ""),
                                 "patch_transformer", m.to(args.device), m.num_features, m.phot_names,
                                 device=args.device)
            encoders.append(enc)
    for s in args.lite0_sizes:
        encoders.append(load_encoder("tf_efficientnet_lite0", device=args.device, size=s))
        encoders[-1].name = f"tf_efficientnet_lite0 @ {s}px"
    phot = np.random.default_rng(1).normal(20, 1, (args.n, 5)).astype(np.float32)
    for enc in encoders:
        enc.encode(images[:8], phot[:8] if enc.phot_names else None)  # warm-up
        t0 = time.perf_counter()
        for s in range(0, args.n, args.batch_size):
            enc.encode(images[s:s + args.batch_size], phot[s:s + args.batch_size] if enc.phot_names else None)
        dt = time.perf_counter() - t0
        print(json.dumps({"bench": "embed", "encoder": enc.name, "dim": enc.dim, "n": args.n,
                          "batch_size": args.batch_size, "image_px": args.size, "device": args.device,
                          "threads": threads, "images_per_s": round(args.n / dt, 1),
                          "loadavg_1min": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
