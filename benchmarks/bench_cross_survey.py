"""Cross-survey test (issue 15): train on DECaLS-like sims or on the randomised survey mixture, test on
SDSS-like and HST-like sims, report top-1 in-survey and cross-survey.

    GALMO_THREADS=1 python benchmarks/bench_cross_survey.py [--quick] [--n-train 3000] [--n-test 600]
        [--epochs 6] [--model simple_cnn] [--size 64] [--oracles] [--workdir DIR]

Everything goes through galmo's own command line: ``galmo simulate --survey S`` (training sets with
seed 0, test sets of other galaxies with seed 1), ``galmo train`` and ``galmo evaluate --split all``.
Prints one JSON line per (trained on, tested on) pair, then one summary line per model with the
top-1 lost on each survey against its in-survey score (the model tested on fresh galaxies of the
survey it was trained on) and, with ``--oracles``, against a model trained on that survey itself.
``--quick`` (≈ a few minutes): 600 training galaxies, 200 per test set, 2 epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST_SURVEYS = ("decals", "sdss", "hst", "random")


def galmo(*args: str) -> float:
    """Run ``python -m galmo ARGS``; returns its wall time (s). Stops with its output on failure."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "galmo", *args], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"galmo {' '.join(args)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return time.perf_counter() - t0


def simulate(work: Path, survey: str, n: int, seed: int, size: int, workers: int) -> Path:
    out = work / f"{survey}_seed{seed}_n{n}_s{size}.h5"
    if not out.exists():
        galmo("simulate", "--n", str(n), "--out", str(out), "--survey", survey, "--seed", str(seed), "--size",
              str(size), "--workers", str(workers), "--no-noiseless", "--no-progress")
    return out


def train(work: Path, survey: str, data: Path, args) -> tuple[Path, float]:
    run = work / f"run_{survey}"
    wall = galmo("train", "--data", str(data), "--out", str(run), "--model", args.model, "--epochs", str(args.epochs),
                 "--test-frac", "0.05", "--seed", "0", "--device", "cpu", "--no-progress")
    return run, wall


def evaluate(work: Path, run: Path, name: str, test: Path) -> float:
    out = work / f"eval_{run.name}_on_{name}"
    galmo("evaluate", "--run", str(run), "--data", str(test), "--split", "all", "--out", str(out), "--device", "cpu",
          "--no-progress")
    return float(json.loads((out / "metrics.json").read_text())["all"]["top1"])


def summary(trained: str, top1: dict, oracle: dict) -> dict:
    own = top1[trained]
    row = {"summary": trained, "in_survey_top1": round(own, 4)}
    for test in ("sdss", "hst"):
        row[f"loss_on_{test}_pts"] = round(100 * (own - top1[test]), 1)
        if test in oracle:
            row[f"loss_vs_{test}_oracle_pts"] = round(100 * (oracle[test] - top1[test]), 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="600 training galaxies, 200 per test set, 2 epochs")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--model", default="simple_cnn")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--oracles", action="store_true", help="also train on sdss and on hst (the in-survey reference)")
    ap.add_argument("--workdir", default=None, help="keep the sims and runs here (none: a temporary folder)")
    args = ap.parse_args()
    if args.quick:
        args.n_train, args.n_test, args.epochs = 600, 200, 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        run_all(work, args)


def run_all(work: Path, args) -> None:
    tests = {s: simulate(work, s, args.n_test, 1, args.size, args.workers) for s in TEST_SURVEYS}
    trained = ("decals", "random") + (("sdss", "hst") if args.oracles else ())
    results = {}
    for survey in trained:
        run, wall = train(work, survey, simulate(work, survey, args.n_train, 0, args.size, args.workers), args)
        results[survey] = {t: evaluate(work, run, t, path) for t, path in tests.items()}
        for t, acc in results[survey].items():
            print(json.dumps({"trained_on": survey, "tested_on": t, "top1": round(acc, 4), "model": args.model,
                              "n_train": args.n_train, "n_test": args.n_test, "epochs": args.epochs,
                              "size": args.size, "train_s": round(wall, 1),
                              "threads": os.environ.get("GALMO_THREADS", "all")}), flush=True)
    oracle = {t: results[t][t] for t in ("sdss", "hst") if t in results}
    for survey in ("decals", "random"):
        print(json.dumps(summary(survey, results[survey], oracle)), flush=True)
    print(json.dumps({"load_average": [round(x, 2) for x in os.getloadavg()]}), flush=True)


if __name__ == "__main__":
    main()
