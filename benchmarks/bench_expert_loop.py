"""Simulated experts in the explorer's loop: does labelling the galaxies the queue puts first (the least
confident) help more than labelling as many random galaxies?

A tiny source (3 classes, 32 px); a base ``simple_cnn`` run trained on a small part of its training split
(``--train-frac``, the rest ``unused``: the pool an expert can label), its predictions of every galaxy.
Then ROUNDS rounds of N labels, each answered by an oracle (the catalog's true class) through the
explorer's own queue API (TestClient: the queue's order, the fsynced journal, the export), and
``galmo finetune`` on all the labels so far; the next round labels the fine-tuned run's re-ranked
queue. The random arm labels N random galaxies of the same pool per round through the same API. Both
arms are measured on the same held-out test split (``finetune.json``: top-1 before and after).

One JSON line per seed, then a summary. Usage:
  python benchmarks/bench_expert_loop.py [N_PER_ROUND=16] [ROUNDS=2] [SEEDS=1]
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fastapi.testclient import TestClient  # noqa: E402
from supervised_data import make_tiny_source  # noqa: E402

from galmo.cli import main  # noqa: E402
from galmo.web.app import create_app  # noqa: E402

FAST = ["--device", "cpu", "--no-progress"]
N_GALAXIES, EPOCHS, FT_EPOCHS, TRAIN_FRAC = 240, 10, 4, 0.2


def base_run(tiny: Path, out: Path, seed: int) -> Path:
    args = ["--model", "simple_cnn", "--width", "8", "--batch-size", "16", "--lr", "1e-2", "--seed", str(seed)]
    assert main(["train", "--data", str(tiny), "--out", str(out), "--epochs", str(EPOCHS), "--train-frac",
                 str(TRAIN_FRAC), *args, *FAST]) == 0
    assert main(["predict", "--run", str(out), "--data", str(tiny), "--out", str(out / "predictions.parquet"),
                 *FAST]) == 0
    return out


def label_round(run: Path, n: int, arm: str, rng) -> int:
    """Label ``n`` galaxies of ``run``'s queue with their true class (the queue's first, or random ones);
    export the labels; how many there are in all."""
    client = TestClient(create_app([run], thumb_cache=run.parent / "thumbs", who=f"oracle-{arm}"))
    name = run.name
    truth = pd.read_parquet(run / "predictions.parquet").set_index("id")["label"]
    if arm == "queue":
        ids = [it["id"] for it in client.get(f"/api/run/{name}/queue?n={n}").json()["items"]]
    else:
        st = client.app.state.explorer.run(name)  # the same pool as the queue's, in random order
        ids = rng.choice(st.predictions.df["id"].to_numpy()[st.undecided()], n, replace=False).tolist()
    for i in ids:
        r = client.post(f"/api/run/{name}/labels", json={"id": i, "decision": "class", "label": int(truth[i])})
        assert r.status_code == 200, r.text
    assert client.get(f"/run/{name}/expert_labels.parquet").status_code == 200
    return len(pd.read_parquet(run / "expert_labels.parquet"))


def arm(tiny: Path, base: Path, folder: Path, kind: str, n: int, rounds: int, seed: int) -> list[dict]:
    run, rng, out = base, np.random.default_rng(seed + 100), []
    for k in range(1, rounds + 1):
        used = label_round(run, n, kind, rng)
        nxt = folder / f"{kind}{k}"
        assert main(["finetune", str(run), "--expert-labels", str(run / "expert_labels.parquet"), "--data", str(tiny),
                     "--out", str(nxt), "--epochs", str(FT_EPOCHS), "--lr", "3e-3", "--seed", str(seed), *FAST]) == 0
        res = json.loads((nxt / "finetune.json").read_text())
        out.append({"round": k, "labels": used, "added": res["labels"]["added"], "top1": res["after"]["top1"]})
        run = nxt
    return out


def one_seed(tmp: Path, n: int, rounds: int, seed: int) -> dict:
    tiny = make_tiny_source(tmp / "tiny.h5", n=N_GALAXIES, size=32, seed=seed)
    base = base_run(tiny, tmp / "base", seed)
    before = json.loads((base / "metrics.json").read_text())["test"]
    res = {"seed": seed, "n_test": before["n"], "top1_base": before["top1"]}
    for kind in ("queue", "random"):
        (base / "expert_labels.jsonl").unlink(missing_ok=True)
        res[kind] = arm(tiny, base, tmp / kind, kind, n, rounds, seed)
    return res


if __name__ == "__main__":
    n, rounds, seeds = (int(a) for a in (sys.argv[1:] + ["16", "2", "1"][len(sys.argv) - 1:])[:3])
    t0, results = time.perf_counter(), []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(one_seed(Path(tmp), n, rounds, seed))
        print(json.dumps({"bench": "expert_loop", **results[-1]}))
    mean = {kind: [float(np.mean([r[kind][k]["top1"] for r in results])) for k in range(rounds)]
            for kind in ("queue", "random")}
    print(json.dumps({"bench": "expert_loop", "summary": True, "per_round": n, "rounds": rounds, "seeds": seeds,
                      "top1_base": float(np.mean([r["top1_base"] for r in results])), "top1_queue": mean["queue"],
                      "top1_random": mean["random"], "seconds": round(time.perf_counter() - t0, 1),
                      "load_avg": os.getloadavg()[0]}))
