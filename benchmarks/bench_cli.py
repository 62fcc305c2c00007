"""Start-up time of the ``galmo`` command: ``--help``, a verb's ``--help`` and ``info`` on a tiny file.

Each case runs in a fresh interpreter ``--repeat`` times; one JSON line per case:

    {"bench": "cli_startup", "argv": "--help", "best_s": ..., "median_s": ..., "goal_s": 1.0,
     "heavy_modules": []}

``heavy_modules``: which of torch, galsim, faiss, diffusers, timm, matplotlib the command imported
(none is the goal; tests/test_startup.py asserts it). The machine may be shared: times are what
this run saw. Usage: python benchmarks/bench_cli.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEAVY = ("torch", "galsim", "faiss", "diffusers", "timm", "matplotlib")
PROBE = ("import sys\nfrom galmo.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         f"print('@@' + ','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")


def tiny_galaxy10(path: Path, n: int = 8, size: int = 16) -> Path:
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["images"] = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        f["ans"] = rng.integers(0, 10, n).astype(np.uint8)
    return path


def time_command(argv: list[str], repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "galmo", *argv], capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    probe = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=False)
    heavy = probe.stdout.rpartition("@@")[2].strip()
    return {"bench": "cli_startup", "argv": " ".join(argv), "best_s": round(min(times), 3),
            "median_s": round(statistics.median(times), 3), "goal_s": 1.0,
            "heavy_modules": heavy.split(",") if heavy else []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per case (default: 5)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        h5 = tiny_galaxy10(Path(tmp) / "tiny.h5")
        for argv in (["--help"], ["cluster", "--help"], ["info", str(h5)]):
            print(json.dumps(time_command(argv, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
