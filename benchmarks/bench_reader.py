"""Galaxy10 HDF5 reader throughput and memory: 2,000 × 256² images iterated at batch 256.

Writes a Galaxy10-schema file (images (N, 256, 256, 3) uint8, chunked one image per chunk like
the published file, plus ans/ra/dec/redshift/pxscale) in a temporary folder, chunk by chunk, then
iterates it with ``galmo.sources`` and prints one JSON line:

    {"bench": "galaxy10_reader", "n": 2000, "images_per_s": ..., "peak_rss_mb": ..., "rss_growth_mb": ...}

``rss_growth_mb`` is the peak resident memory during iteration minus the resident memory before it
(Linux /proc; ru_maxrss where /proc is missing). The machine may be shared: numbers are what this
run saw. Usage: python benchmarks/bench_reader.py [--n 2000] [--batch 256] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    """Current resident set size in MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakSampler(threading.Thread):
    """Samples RSS every few ms; ``peak`` is the largest seen."""

    def __init__(self, every: float = 0.005):
        super().__init__(daemon=True)
        self.every, self.peak, self._halt = every, rss_mb(), threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.every)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return max(self.peak, rss_mb())


def make_file(path: Path, n: int, size: int, seed: int = 0, chunk: int = 100) -> None:
    import h5py

    rng = np.random.default_rng(seed)
    # smooth-ish random images (compressible like real ones is irrelevant: stored uncompressed)
    block = rng.integers(0, 256, (chunk, size, size, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("images", (n, size, size, 3), np.uint8, chunks=(1, size, size, 3))
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            ds[s:e] = np.roll(block, s, axis=1)[: e - s]
        f["ans"] = rng.integers(0, 10, n).astype(np.uint8)
        for k in ("ra", "dec", "redshift", "pxscale"):
            f[k] = rng.random(n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from galmo.sources import open_source

    with tempfile.TemporaryDirectory(prefix="galmo-bench-") as tmp:
        path = Path(tmp) / "galaxy10_bench.h5"
        t0 = time.perf_counter()
        make_file(path, args.n, args.size)
        write_s = time.perf_counter() - t0
        src = open_source(path)
        before = rss_mb()
        sampler = PeakSampler()
        sampler.start()
        t0 = time.perf_counter()
        count, check = 0, 0.0
        for pos, images in src.iter_batches(batch_size=args.batch, progress=False):
            count += len(pos)
            check += float(images[:, :, ::64, ::64].sum())  # touch the data
        dt = time.perf_counter() - t0
        peak = sampler.stop()
        src.close()
    print(json.dumps({
        "bench": "galaxy10_reader", "n": count, "batch": args.batch, "size": args.size,
        "images_per_s": round(count / dt, 1), "seconds": round(dt, 2),
        "peak_rss_mb": round(peak, 1), "rss_growth_mb": round(peak - before, 1),
        "file_mb": round(args.n * args.size * args.size * 3 / 2**20, 1), "write_s": round(write_s, 2),
        "cpus": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
