"""Images/s of ``galmo embed`` on this machine: ``--engine local`` vs ``--engine ray`` by shard size.

The same random 3-band source (a Galaxy10-schema HDF5 of ``--n`` galaxies, ``--size`` px; throughput
does not depend on content) embedded by the same encoder (EfficientNet-Lite0 at 64 px, offline
weights, the default backend): in this process with 1 and 2 torch threads
(:func:`galmo.methods.embeddings.run.run_embed`, the whole call), then on a local Ray cluster
(``ray.init(num_cpus=CPUS)``, started once and not timed) split into shards of each ``--shard-sizes``
(:func:`galmo.distributed.engine.run_sharded`, timed from the actors' start to the last shard
written: what a run pays over the local path on one machine; ``actor_images_per_s``: the time
inside the actors only, what the pool sustains once started). One JSON line per run; the load average is recorded because other processes sharing the
cores slow every number down.

``--cluster-n N`` adds ``galmo cluster`` on the first N galaxies: the local path
(:func:`galmo.methods.unsupervised.run.run_cluster`, without report and morphology) and ``--engine ray``
with shards of the first ``--shard-sizes`` (fitted on half of them on the driver, the rest assigned by
the actors; small settings: K=10, 2 views, 64 px).

    python benchmarks/bench_ray.py [--n 1024] [--shard-sizes 64 256 1024] [--cpus 2] [--concurrency 2]
                                   [--local-threads 1 2] [--cluster-n 0]

The multi-node commands that point the same run at a cluster are in docs/distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_source(path: Path, n: int, size: int) -> Path:
    from galmo.sources.galaxy10_h5 import write_galaxy10

    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return write_galaxy10(path, images, np.arange(n) % 3, [f"b{i:06d}" for i in range(n)])


def line(**kw) -> None:
    print(json.dumps({"bench": "ray", **kw, "load_avg_1m": round(os.getloadavg()[0], 2)}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--shard-sizes", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--concurrency", type=int, default=2, help="actors")
    ap.add_argument("--encoder", default="tf_efficientnet_lite0")
    ap.add_argument("--local-threads", type=int, nargs="+", default=[1, 2], help="torch threads of the local runs")
    ap.add_argument("--cluster-n", type=int, default=0, help="galaxies of the galmo cluster rows (0: none)")
    args = ap.parse_args()

    import ray

    from galmo.distributed.config import EngineConfig
    from galmo.distributed.engine import run_sharded
    from galmo.methods.embeddings.config import EmbedConfig
    from galmo.methods.embeddings.run import run_embed
    from galmo.nn.device import set_threads

    with tempfile.TemporaryDirectory() as tmp:
        data = make_source(Path(tmp) / "bench.h5", args.n, args.size)
        cfg = EmbedConfig(encoder=args.encoder, data=str(data), image_size=(64,), device="cpu", progress=False)
        run_embed(cfg.replace(out=str(Path(tmp) / "warm.parquet")))  # the ONNX export, cached for every run
        for threads in args.local_threads:
            set_threads(threads)
            t0 = time.perf_counter()
            r = run_embed(cfg.replace(out=str(Path(tmp) / "local.parquet")))
            dt = time.perf_counter() - t0
            line(engine="local", n=r["n"], seconds=round(dt, 2), images_per_s=round(r["n"] / dt, 1),
                 embed_images_per_s=round(r["meta"]["images_per_s"], 1),  # forward passes alone (no load, no write)
                 threads=threads)
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
        for shard_size in args.shard_sizes:
            eng = EngineConfig(engine="ray", concurrency=args.concurrency, shard_size=shard_size)
            s = run_sharded("embed", cfg.replace(out=str(Path(tmp) / f"ray-{shard_size}")), eng, log=lambda *a: None)
            actors = min(args.concurrency, s["shards"])
            line(engine="ray", shard_size=shard_size, shards=s["shards"], actors=actors, cpus=args.cpus, n=s["n"],
                 seconds=round(s["seconds"], 2), images_per_s=round(s["images_per_s"], 1),
                 # inside the actors only (no actor start-up): what the pool sustains once it runs
                 actor_images_per_s=round(s["n"] * actors / s["shard_seconds"], 1))
        if args.cluster_n:
            bench_cluster(Path(tmp), make_source(Path(tmp) / "cl.h5", args.cluster_n, args.size), args)
        ray.shutdown()


def bench_cluster(tmp: Path, data: Path, args) -> None:
    """One JSON line for ``galmo cluster`` locally, one with ``--engine ray`` (shards of the first shard size)."""
    from galmo.distributed.config import EngineConfig
    from galmo.distributed.engine import run_sharded
    from galmo.methods.unsupervised.config import ClusterConfig
    from galmo.methods.unsupervised.run import run_cluster

    cfg = ClusterConfig(data=str(data), k=(10,), image_size=(64,), views=2, fit_max=max(10, args.cluster_n // 2),
                        morph_per_group=0, report=False, device="cpu", progress=False)
    t0 = time.perf_counter()
    run_cluster(cfg.replace(out=str(tmp / "cl-local")), log=lambda *a: None)
    dt = time.perf_counter() - t0
    line(verb="cluster", engine="local", n=args.cluster_n, fit_n=cfg.fit_max, seconds=round(dt, 2),
         images_per_s=round(args.cluster_n / dt, 1))
    eng = EngineConfig(engine="ray", concurrency=args.concurrency, shard_size=args.shard_sizes[0])
    t0 = time.perf_counter()
    s = run_sharded("cluster", cfg.replace(out=str(tmp / "cl-ray")), eng, log=lambda *a: None)
    dt = time.perf_counter() - t0  # the fit on the driver included: the whole command
    line(verb="cluster", engine="ray", n=s["n"], fit_n=cfg.fit_max, shard_size=eng.shard_size, shards=s["shards"],
         seconds=round(dt, 2), images_per_s=round(s["n"] / dt, 1), assign_seconds=round(s["seconds"], 2))


if __name__ == "__main__":
    main()
