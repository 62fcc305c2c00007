"""VotingClustering time and peak memory on synthetic 64-d Gaussian mixtures (20 components).
One JSON line per N. Usage: python benchmarks/bench_cluster.py [N ...] (default 1e4 1e5 1e6).
Each N runs in a fresh subprocess so peak RSS (ru_maxrss) is that N's alone. Cores may be shared:
see 'load_avg'."""
import json
import os
import subprocess
import sys


def one(n: int) -> dict:
    import resource
    import time

    import numpy as np

    from galmo.stages.voting import VotingClustering
    from galmo.core.metrics import clustering_scores

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (20, 64)).astype(np.float32)
    y = rng.integers(0, 20, n)
    X = centers[y] + rng.normal(0, 1.0, (n, 64)).astype(np.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    vc = VotingClustering(20, random_state=0).fit(X)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    s = clustering_scores(vc.labels_, y)
    return {"bench": "cluster", "n": n, "dims": 64, "k": 20, "seconds": round(dt, 1),
            "peak_rss_gb": round(peak / 1024 ** 2, 2), "data_gb": round(X.nbytes / 1024 ** 3, 3),
            "rss_before_fit_gb": round(base / 1024 ** 2, 2), "fraction_classified": round(vc.fraction_classified_, 4),
            "purity": round(s["purity"], 4), "load_avg": os.getloadavg()[0]}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(one(int(float(sys.argv[2])))), flush=True)
    else:
        for n in (sys.argv[1:] or ["1e4", "1e5", "1e6"]):
            subprocess.run([sys.executable, __file__, "--one", n], check=True)
