"""A bounded load test of the explorer on loopback: ``galmo serve`` (uvicorn, one process) of a trained run
of N galaxies (default 300; predictions, embeddings, outliers) and a cluster run, started as a subprocess on
a free port, then R requests (default 2,000) with C in flight (default 50) from an ``httpx.AsyncClient``:
a fixed-seed mix of pages (overview, lists, queue, map, groups, outliers, search), thumbnails (colour and
one band; the first request of each renders it) and neighbour queries (a galaxy page: its 10 nearest
neighbours in the embeddings). Each kind's first URL is requested once before the clock starts (the tables,
the model and the neighbour index are loaded then). JSON lines: one per kind and one overall (p50/p95/p99
in ms, errors = any answer but 200 or a failed request; must be 0, requests/s, load average).
Usage: python benchmarks/bench_web_load.py [N] [REQUESTS] [CONCURRENCY]."""
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from supervised_data import make_tiny_source  # noqa: E402
from web_data import cluster_run, trained_run  # noqa: E402

MIX = {"page": 0.4, "thumbnail": 0.35, "neighbours": 0.25}


def build(base: Path, n: int) -> list[Path]:
    """A trained run (one epoch) and a cluster run of a tiny source of n galaxies."""
    with contextlib.redirect_stdout(sys.stderr):  # stdout: the JSON lines only
        tiny = make_tiny_source(base / "tiny.h5", n=n, size=64)
        return [trained_run(tiny, base / "run", epochs=1), cluster_run(tiny, base / "clus")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(runs: list[Path], thumbs: Path, port: int) -> subprocess.Popen:
    """``galmo serve`` in a subprocess; returns once it answers ``/`` (up to 60 s on loaded cores)."""
    cmd = [sys.executable, "-m", "galmo", "serve", *map(str, runs), "--port", str(port), "--thumb-cache",
           str(thumbs), "--who", "load"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"galmo serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("galmo serve did not start")


def urls(run: Path, clus: Path, total: int, seed: int = 0) -> list[tuple[str, str]]:
    """``total`` (kind, URL) pairs drawn with the MIX shares; each kind's first is a fixed URL."""
    ids = pd.read_parquet(run / "predictions.parquet", columns=["id"])["id"].astype(str).tolist()
    groups = sorted(pd.read_parquet(clus / "cluster_catalog.parquet", columns=["group"])["group"].unique())
    pages = ["/run/run", "/run/run/predictions?order=entropy", "/run/run/predictions?order=margin&page=2",
             "/run/run/queue", "/api/run/run/queue", "/run/run/map", "/api/run/run/map?colour=confidence",
             "/run/clus/groups", "/run/run-outliers/outliers", "/search?q=g01", "/run/run/labels", "/"]
    pages += [f"/run/clus/groups/{int(g)}" for g in groups]
    rng = random.Random(seed)
    draw = {"page": lambda: rng.choice(pages),
            "thumbnail": lambda: f"/thumb/{rng.choice(['rgb', 'rgb', '0'])}/{rng.choice(ids)}",
            "neighbours": lambda: f"/galaxy/{rng.choice(ids)}"}
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=total)
    return [(k, draw[k]()) for k in kinds]


async def hammer(base: str, plan: list[tuple[str, str]], concurrency: int) -> tuple[list, float]:
    """Every (kind, URL) of ``plan`` with ``concurrency`` in flight: [(kind, ms, status or error)], seconds."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        async def one(kind: str, url: str):
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.get(url)
                    await r.aread()
                    status = r.status_code
                except httpx.HTTPError as e:
                    status = type(e).__name__
                return kind, 1000 * (time.perf_counter() - t0), status, url

        for kind in MIX:  # warm: the tables, the model, the neighbour index
            await one(kind, next(u for k, u in plan if k == kind))
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(k, u) for k, u in plan))
        return results, time.perf_counter() - t0


def summary(name: str, rows: list, seconds: float | None = None) -> dict:
    ms = np.array([r[1] for r in rows])
    bad = [r for r in rows if r[2] != 200]
    out = {"bench": "web_load", "kind": name, "requests": len(rows), "errors": len(bad),
           **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
           "max_ms": round(float(ms.max()), 1)}
    if bad:
        out["first_errors"] = [[r[3], r[2]] for r in bad[:5]]
    if seconds is not None:
        out["seconds"] = round(seconds, 2)
        out["requests_per_s"] = round(len(rows) / seconds, 1)
    return out


def main(n: int = 300, total: int = 2000, concurrency: int = 50) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        runs = build(base, n)
        port = free_port()
        load_before = os.getloadavg()[0]
        proc = start(runs, base / "thumbs", port)
        try:
            plan = urls(*runs, total)
            results, seconds = asyncio.run(hammer(f"http://127.0.0.1:{port}", plan, concurrency))
        finally:
            proc.terminate()
            proc.wait(10)
    for kind in MIX:
        print(json.dumps(summary(kind, [r for r in results if r[0] == kind])))
    total_row = summary("all", results, seconds)
    total_row.update(n=n, concurrency=concurrency, load_avg_before=round(load_before, 2),
                     load_avg_after=round(os.getloadavg()[0], 2), cpus=os.cpu_count())
    print(json.dumps(total_row))
    return 0 if total_row["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:4])))
