"""The nearest neighbours of a few real galaxies, with the default encoder: docs/real_neighbours.png.

One folder of real images: the HST cutouts of ``shared/data/real_fits`` (one band, shown as grey:
their display image, the per-band arcsinh stretch of galmo's FITS reader, saved as PNG) and crops of
the Hubble Deep Field photograph shipped with scikit-image (``tests/real_data.py`` finds the objects).
Then only galmo's verbs: ``galmo embed`` (EfficientNet-Lite0, ImageNet weights, offline; every image
brought to its 224 px input by the one resampling rule) and ``galmo similar --id`` for each query; the
montage puts each query first in its row, then its neighbours with their cosine similarity. Prints
one JSON line per query (its neighbours). Run: ``python benchmarks/real_neighbours.py [--out PNG]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from real_data import hdf_crops, real_fits_catalog, real_fits_dir  # noqa: E402

QUERIES = ("spiral_galaxy", "cd_galaxy", "hdf_03", "hdf_01", "hdf_12")  # HST spiral, cD; HDF spiral, elliptical, edge-on


def real_folder(work: Path, n_hdf: int) -> Path:
    """``work/real``: the HST cutouts as grey PNGs (their display image) and ``n_hdf`` HDF crops."""
    from PIL import Image

    from galmo.core.transforms import to_uint8
    from galmo.sources import open_source

    folder = hdf_crops(work / "real", n=n_hdf)
    fits = open_source(real_fits_catalog(work), size=None)
    for k, (i, ref) in enumerate(zip(fits.catalog["id"], fits.catalog["ref"])):
        img = fits._load(ref, "image")[0]  # at its own size, no resampling
        Image.fromarray(to_uint8(img)).save(folder / f"{i}.png")
    return folder


def main(argv=None) -> int:
    from galmo.cli import main as galmo
    from galmo.methods.embeddings.figures import montage_rows
    from galmo.sources import open_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "real_neighbours.png"))
    ap.add_argument("--hdf", type=int, default=40, help="Hubble Deep Field crops (default: 40)")
    ap.add_argument("--top", type=int, default=7, help="the query and its neighbours per row (default: 7)")
    args = ap.parse_args(argv)
    if real_fits_dir() is None:
        print("no ../shared/data/real_fits beside the checkout (or $GALMO_REAL_FITS)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = real_folder(work, args.hdf)
        emb = work / "emb.parquet"
        assert galmo(["embed", "--data", str(folder), "--out", str(emb), "--device", "cpu", "--no-progress"]) == 0
        rows, titles = [], []
        for q in QUERIES:
            table = work / f"similar_{q}.csv"
            assert galmo(["similar", "--emb", str(emb), "--id", q, "--top", str(args.top), "--out", str(table)]) == 0
            t = pd.read_csv(table, dtype={"id": str})
            rows.append(list(t["id"]))
            titles.append([f"query {q}"] + [f"{i}\n{s:.3f}" for i, s in zip(t["id"][1:], t["similarity"][1:])])
            print(json.dumps({"query": q, "neighbours": list(t["id"][1:]),
                              "similarity": [round(float(s), 3) for s in t["similarity"][1:]]}))
        src = open_source(folder, size=96)
        montage_rows(src, rows, titles, Path(args.out),
                     suptitle="real galaxies: each row a query (first) and its nearest neighbours, "
                              "EfficientNet-Lite0 (ImageNet) embeddings, cosine similarity")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
