"""Every galmo encoder on the same tasks: the embeddings study (issue 15) as JSON lines.

Runs :func:`galmo.methods.embeddings.study.compare_encoders` — the tiny patch transformer (AstroPT-like,
next-patch), ImageNet EfficientNet-Lite0 without training, and the contrastive encoder (Lite0
continued from ImageNet with SimCLR's loss, embedding = mean over the 8 symmetries of the square) —
on simulated galaxies with 5 % injected anomalies: linear probes of the class on 1 / 10 / 100 % of
the labels (5-fold), redshift probes, the share of 10 nearest neighbours in the query's class, and
the outlier AUROC on the injected anomalies. One JSON line per (task, encoder, fraction), then the
timings. AstroPT's own code on the same images: ``benchmarks/peers/bench_astropt.py``.

    GALMO_THREADS=2 python benchmarks/bench_encoders.py [--n 3000] [--cl-epochs 3] [--out /tmp/enc-study] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--cl-epochs", type=int, default=3, help="contrastive pretraining epochs")
    ap.add_argument("--pt-epochs", type=int, default=20, help="patch-transformer pretraining epochs")
    ap.add_argument("--cnn", action="store_true", help="also train the CNN from scratch on the labels")
    ap.add_argument("--out", default=None, help="study folder (reused: finished pretrainings are kept)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 300 galaxies, 1 epoch each")
    args = ap.parse_args()

    from galmo.methods.embeddings.config import StudyConfig
    from galmo.methods.embeddings.study import compare_encoders
    from galmo.nn.device import set_threads
    from galmo.simulate import simulate
    from galmo.sources import as_source

    threads = set_threads()
    out = Path(args.out or tempfile.mkdtemp(prefix="galmo-enc-"))
    n = 300 if args.quick else args.n
    data = out / f"sims-n{n}-anom.h5"
    if not data.exists():
        out.mkdir(parents=True, exist_ok=True)
        simulate(n, 64, seed=0, anomalies=0.05, out=data, progress=False)
    cfg = StudyConfig(quick=args.quick, cnn=args.cnn, pt_epochs=args.pt_epochs, cl_epochs=args.cl_epochs)
    res = compare_encoders(out, as_source(data), cfg, log=lambda *a: None)
    for r in res["table"]:
        print(json.dumps({**r, "n": n, "threads": threads}))
    print(json.dumps({"timings_s": res["timings_s"], "images_per_s": res.get("images_per_s", {}),
                      "load_avg": os.getloadavg()[0], "out": str(out)}))


if __name__ == "__main__":
    main()
