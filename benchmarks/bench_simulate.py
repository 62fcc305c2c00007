"""Simulator throughput: images per second at 64 px (3 bands) with 2 workers.

    python benchmarks/bench_simulate.py [--n 600] [--size 64] [--workers 2] [--repeats 3]

Prints one JSON line. Each repeat simulates a fresh file (process-pool start-up, HDF5 and Parquet
writing included); the median and every repeat are reported, since other jobs sharing the cores
change the numbers. ``cpu_ms_per_image`` (parent + workers) and the throughput it allows on idle
cores are reported too, as they depend much less on other load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from galmo.simulate import simulate

    with tempfile.TemporaryDirectory() as tmp:
        simulate(20, size=args.size, seed=99, out=os.path.join(tmp, "warm.h5"), workers=1, progress=False)
        rates, cpu = [], []
        for k in range(args.repeats):
            c0, t0 = os.times(), time.perf_counter()
            simulate(args.n, size=args.size, seed=k, out=os.path.join(tmp, f"b{k}.h5"), workers=args.workers,
                     progress=False)
            c1, wall = os.times(), time.perf_counter() - t0
            rates.append(args.n / wall)
            cpu.append(sum(c1[i] - c0[i] for i in range(4)) / args.n)  # parent + workers, user + system
    cores = min(args.workers, os.cpu_count() or 1)
    print(json.dumps({"bench": "simulate", "n": args.n, "size": args.size, "workers": args.workers,
                      "images_per_s": round(statistics.median(rates), 1),
                      "runs_images_per_s": [round(r, 1) for r in rates],
                      "cpu_ms_per_image": round(1e3 * statistics.median(cpu), 2),
                      # what the CPU time allows on `workers` otherwise idle cores
                      "cpu_bound_images_per_s": round(cores / statistics.median(cpu), 1),
                      "load_avg_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
