"""Similarity search at scale: build time, p50/p99 single-query latency, recall@10 vs exact search.

Random 128-d Gaussian vectors, L2-normalised (uniform on the sphere: no cluster structure, the
hardest case for approximate search), cosine similarity = inner product. Queries are fresh random
vectors. The ground truth is faiss exact search (IndexFlatIP). Prints one JSON line per setting.

    python benchmarks/bench_similarity.py                      # 1,000,000 × 128, PQ fast-scan + re-rank
    python benchmarks/bench_similarity.py --method hnsw ivf    # the graph / inverted-file alternatives

Goal: p50 ≤ 5 ms and recall@10 ≥ 0.95. Latency is measured one query at a time on one thread
(what an interactive ``galmo similar`` does); the build uses ``--threads`` (default: all cores).
Other processes on the machine (shared cores) inflate the numbers: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def emit(**kw):
    kw.setdefault("loadavg_1min", os.getloadavg()[0])
    print(json.dumps(kw), flush=True)


def data(n, d, nq, seed=0):
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):  # bounded temporaries
        b = rng.standard_normal((min(100_000, n - s), d), dtype=np.float32)
        X[s:s + len(b)] = b / np.linalg.norm(b, axis=1, keepdims=True)
    Q = rng.standard_normal((nq, d), dtype=np.float32)
    return X, Q / np.linalg.norm(Q, axis=1, keepdims=True)


def latency(index, Q, k):
    import faiss

    faiss.omp_set_num_threads(1)
    ts, out = [], []
    for q in Q:
        t0 = time.perf_counter()
        _, I = index.search(q[None], k)
        ts.append(time.perf_counter() - t0)
        out.append(I[0])
    return np.array(ts) * 1e3, np.stack(out)


def recall(found, truth, k):
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--nq", type=int, default=500, help="queries for latency and recall")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--method", choices=["pq", "hnsw", "ivf", "all"], nargs="+", default=["pq"])
    ap.add_argument("--M", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=64)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[128, 256, 512, 768])
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--k-factor", type=int, nargs="+", default=[10, 20, 50, 100])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import faiss

    from galmo.methods.embeddings.index import SimilarityIndex

    emit(bench="similarity", event="start", n=args.n, d=args.d, nq=args.nq, cpu_count=os.cpu_count(),
         threads=args.threads, faiss=faiss.__version__, machine=platform.machine())
    t0 = time.perf_counter()
    X, Q = data(args.n, args.d, args.nq)
    emit(bench="similarity", event="data", seconds=round(time.perf_counter() - t0, 1),
         memory_mb=round(X.nbytes / 2**20))

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    exact = SimilarityIndex("exact").fit(X, normalise=False)
    _, truth = exact.index_.search(Q, args.k)  # batched brute force (multi-threaded) = ground truth
    t_exact = time.perf_counter() - t0
    ms, _ = latency(exact.index_, Q[:50], args.k)
    emit(bench="similarity", method="exact", build_s=round(t_exact, 2), p50_ms=round(float(np.median(ms)), 3),
         p99_ms=round(float(np.percentile(ms, 99)), 3), recall_at_10=1.0, note="IndexFlatIP, 50 queries")
    del exact

    methods = ["pq", "hnsw", "ivf"] if "all" in args.method else args.method
    for method in methods:
        faiss.omp_set_num_threads(args.threads)
        t0 = time.perf_counter()
        if method == "pq":
            idx = SimilarityIndex("pq").fit(X, normalise=False)
            sweep, knob = args.k_factor, "k_factor"
        elif method == "hnsw":
            idx = SimilarityIndex("hnsw", M=args.M, ef_construction=args.ef_construction).fit(X, normalise=False)
            sweep, knob = args.ef_search, "ef_search"
        else:
            idx = SimilarityIndex("ivf", nlist=args.nlist).fit(X, normalise=False)
            sweep, knob = args.nprobe, "nprobe"
        build = time.perf_counter() - t0
        for v in sweep:
            if method == "pq":
                idx.index_.k_factor = v
            elif method == "hnsw":
                idx.index_.hnsw.efSearch = v
            else:
                idx.index_.nprobe = v
            ms, found = latency(idx.index_, Q, args.k)
            r = recall(found, truth, args.k)
            p50 = float(np.median(ms))
            emit(bench="similarity", method=method, n=args.n, d=args.d, build_s=round(build, 1),
                 **({"M": args.M, "ef_construction": args.ef_construction} if method == "hnsw"
                    else {"nlist": args.nlist} if method == "ivf"
                    else {"pq": f"PQ{args.d // 2}x4fs + exact re-rank"}), **{knob: v},
                 p50_ms=round(p50, 3), p99_ms=round(float(np.percentile(ms, 99)), 3), recall_at_10=round(r, 4),
                 goal_met=bool(p50 <= 5 and r >= 0.95))
        del idx


if __name__ == "__main__":
    main()
