"""Explorer latency at survey scale: a synthetic run of N galaxies (default 100,000), the first list page
(reads the tables) and each later page (list orders, groups, queue, galaxy page, search), through
FastAPI's TestClient. One JSON line. Usage: python benchmarks/bench_web.py [N]. Goals: first page ≤ 5 s,
later pages ≤ 0.5 s."""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fastapi.testclient import TestClient  # noqa: E402
from web_data import URLS, large_run  # noqa: E402

from galmo.web.app import create_app  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
with tempfile.TemporaryDirectory() as tmp:
    folder = large_run(Path(tmp), n)
    client = TestClient(create_app([folder], thumb_cache=Path(tmp) / "thumbs"))
    name = folder.name
    t0 = time.perf_counter()
    client.get(f"/run/{name}/predictions")
    first = time.perf_counter() - t0
    for u in URLS:  # each order and index built once
        client.get(u.format(name=name))
    later = {}
    for u in URLS:
        t0 = time.perf_counter()
        client.get(u.format(name=name))
        later[u] = round(1000 * (time.perf_counter() - t0), 1)
print(json.dumps({"bench": "web", "n": n, "first_page_s": round(first, 3), "later_pages_ms": later,
                  "max_later_ms": max(later.values()), "load_avg": os.getloadavg()[0]}))
