"""Benchmark the view-pooling network (galmo.nn.models.rotinv): prints JSON lines.

* inference images/s: the 16 views stacked along the batch axis in ONE trunk pass vs a naive loop
  running the 16 views as 16 separate passes (same weights, same outputs), for several batch sizes;
* training images/s: augmentation + forward + backward + AdamW step, in fp32 and bf16 autocast, with
  and without channels-last memory (``galmo train --precision bf16 --channels-last``).

* with ``--run RUN --data SOURCE``: invariance of a trained model on the run's test galaxies: max and
  mean |Δp| under the 8 dihedral transforms (exact by construction) and under arbitrary rotations
  (interpolated: approximate), and how often the top class changes.

* with ``--demo SOURCE``: the CPU and wall time of the quick supervised demo section
  (``demo_section(..., quick=True)``; it used to be a test asserting < 30 s of CPU time).

Run by hand: ``python benchmarks/bench_rotinv.py [--width 16 --downsample 2 --size 64 --threads N]``.
The machine's load average is printed with every line: other processes sharing the cores slow every
number down (compare only lines measured together).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def _rate(fn, n_images: int, min_time: float) -> float:
    fn()  # warm-up
    t0, k = time.perf_counter(), 0
    while True:
        fn()
        k += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and k >= 2:
            return k * n_images / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--downsample", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precisions", default="fp32,bf16", help="training arithmetic to compare (bf16: autocast)")
    ap.add_argument("--run", default=None, help="a trained run folder: measure invariance on its test split")
    ap.add_argument("--data", default=None, help="the run's source (with --run)")
    ap.add_argument("--angles", default="10,22.5,30,45,60")
    ap.add_argument("--max-images", type=int, default=600)
    ap.add_argument("--demo", default=None, metavar="SOURCE", help="time the quick supervised demo on SOURCE")
    args = ap.parse_args()
    if args.demo:
        return demo_timing(args)
    if args.run:
        return invariance(args)
    from galmo.nn.device import set_threads

    threads = set_threads(args.threads)
    common = {"model": "rotinv", "width": args.width, "downsample": args.downsample, "size": args.size,
              "threads": threads, "torch": torch.__version__}
    inference_rates(args, common)
    training_rates(args, common)


def inference_rates(args, common: dict) -> None:
    """Images/s of one batched pass over the 16 views vs 16 separate passes, per batch size."""
    from galmo.nn.models import create

    torch.manual_seed(0)
    model = create("rotinv", num_outputs=10, image_size=args.size, width=args.width, downsample=args.downsample)
    model.eval()
    with torch.no_grad():
        for b in [int(s) for s in args.batches.split(",")]:
            x = torch.rand(b, 3, args.size, args.size)
            batched = _rate(lambda: model(x), b, args.min_time)
            naive = _rate(lambda: model.forward_naive(x), b, args.min_time)
            print(json.dumps({"bench": "inference", "batch": b, "batched_images_per_s": round(batched, 1),
                              "naive_loop_images_per_s": round(naive, 1), "speedup": round(batched / naive, 2),
                              "load_avg_1min": os.getloadavg()[0], **common}), flush=True)


def training_rates(args, common: dict) -> None:
    """Images/s of augmentation + forward + backward + AdamW step, per precision and memory layout."""
    from galmo.nn.augment import augment
    from galmo.nn.models import create

    b = args.train_batch
    x = torch.rand(b, 3, args.size, args.size)
    y = torch.randint(0, 10, (b,))
    for precision, channels_last in ((p, cl) for p in args.precisions.split(",") for cl in (False, True)):
        torch.manual_seed(0)
        model = create("rotinv", num_outputs=10, image_size=args.size, width=args.width, downsample=args.downsample)
        model.train()
        xb = x
        if channels_last:  # as galmo.nn.train.fit does with --channels-last
            model = model.to(memory_format=torch.channels_last)
            xb = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        amp = {"fp32": None, "bf16": torch.bfloat16}[precision]

        def step():
            with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
                loss = torch.nn.functional.cross_entropy(model(augment(xb, gen)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        print(json.dumps({"bench": "train", "batch": b, "precision": precision, "channels_last": channels_last,
                          "images_per_s": round(_rate(step, b, args.min_time), 1),
                          "load_avg_1min": os.getloadavg()[0], **common}), flush=True)


def invariance(args) -> None:
    import numpy as np
    import pandas as pd

    from galmo.nn.device import set_threads
    from galmo.nn.models.rotinv import dihedral, rotate
    from galmo.methods.supervised import run as S
    from galmo.sources import as_source, read_rows

    set_threads(args.threads)
    model, cfg, sup = S.load_run(args.run, "cpu")
    src = as_source(args.data)
    ids = set(pd.read_csv(f"{args.run}/{S.TEST_IDS_FILE}", dtype={"id": str})["id"])
    rows = np.flatnonzero(src.catalog["id"].astype(str).isin(ids).to_numpy())[:args.max_images]
    x = torch.from_numpy(read_rows(src, rows, sup.get("kind", "image"))[1])

    def probs(t):
        with torch.no_grad():
            return torch.cat([S.outputs_to_predictions(model(t[i:i + 128]), sup["target"])
                              for i in range(0, len(t), 128)])

    p0 = probs(x)
    common = {"model": cfg["model"]["name"], "n": len(rows), "target": sup["target"]}
    d4 = torch.stack([(probs(dihedral(x, k)) - p0).abs().amax(1) for k in range(1, 8)])
    print(json.dumps({"bench": "invariance", "transform": "dihedral (7 non-identity)", "max_abs_dp": d4.max().item(),
                      "mean_abs_dp": d4.mean().item(), **common}), flush=True)
    for a in [float(s) for s in args.angles.split(",")]:
        p = probs(rotate(x, a, padding_mode="reflection"))
        d = (p - p0).abs().amax(1)
        print(json.dumps({"bench": "invariance", "transform": f"rotate {a:g} deg", "max_abs_dp": d.max().item(),
                          "mean_abs_dp": d.mean().item(),
                          "top_changed_frac": (p.argmax(1) != p0.argmax(1)).float().mean().item(), **common}),
              flush=True)


def demo_timing(args) -> None:
    import tempfile

    from galmo.methods.supervised.run import demo_section
    from galmo.nn.device import set_threads

    threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        t0, c0 = time.perf_counter(), time.process_time()
        res = demo_section(d, args.demo, quick=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"bench": "demo_section_quick", "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                      "top1": res["top1"], "n": res["n"], "threads": threads,
                      "load_avg_1min": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
