"""``galmo pretrain``, ``embed``, ``similar``, ``outliers``, ``probe``: the embeddings method's verbs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.catalog import write_catalog
from galmo.core.errors import GalmoError


def register(sub) -> None:
    from galmo.cli import add_common

    p = sub.add_parser("pretrain", help="pretrain an AstroPT-like patch transformer on unlabelled images")
    p.add_argument("--data", required=True, help="image source (HDF5, FITS, folder, GZ2, catalog)")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/astropt-tiny")
    p.add_argument("--size", default="tiny", help="tiny, small, base, large (default tiny)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--photometry", action="store_true",
                   help="chain photometry tokens (magnitudes and colours from flux_<band>/mag_<band> columns)")
    p.add_argument("--max-images", type=int, default=None, help="pretrain on a random subset of this many")
    p.add_argument("--no-augment", action="store_true", help="no random flips/rotations")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    add_common(p, device=True, seed=True, batch_size=64, on_error=True)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("embed", help="embed every galaxy of a source with any encoder")
    p.add_argument("--model", default="tf_efficientnet_lite0",
                   help="a pretrain run folder, a supervised run folder, or a timm name (default: offline "
                        "EfficientNet-Lite0)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="output .parquet (id, emb_0..emb_{d-1}, metadata)")
    p.add_argument("--image-size", type=int, default=None, help="timm backbones: resize to this (default native)")
    p.add_argument("--weights", default="offline", help="timm backbones: offline, FILE, or hub")
    p.add_argument("--tokens", default="all", choices=["all", "image"],
                   help="patch transformers with photometry tokens: average all tokens (default) or the image "
                        "tokens only (no photometry needed)")
    p.add_argument("--no-progress", action="store_true")
    add_common(p, device=True, batch_size=128, on_error=True)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("similar", help="nearest neighbours by cosine similarity (faiss)")
    p.add_argument("--index", required=True, help="embeddings .parquet (the faiss index is saved beside it)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--id", help="query galaxy id (in the embeddings)")
    g.add_argument("--image", help="query image file (FITS/PNG/JPEG), embedded with the same model")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--data", default=None, help="source for the montage (default: the one in the metadata)")
    p.add_argument("--out", default=None, help="write the table (.csv/.parquet) and a montage PNG beside it")
    p.add_argument("--method", default="auto", choices=["auto", "exact", "pq", "hnsw", "ivf"])
    p.add_argument("--rebuild", action="store_true", help="rebuild the saved index")
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("outliers", help="anomaly score per galaxy (IsolationForest + LOF grid, rank-normalised)")
    p.add_argument("--emb", required=True)
    p.add_argument("--data", default=None, help="source for the montage (default: the one in the metadata)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--top", type=int, default=32, help="montage of the top N (default 32)")
    add_common(p, seed=True)
    p.set_defaults(func=cmd_outliers)

    p = sub.add_parser("probe", help="linear probe with a fraction of the labels vs a CNN from scratch")
    p.add_argument("--emb", required=True)
    p.add_argument("--labels", default="label", help="catalog column (default label); e.g. redshift")
    p.add_argument("--data", default=None, help="source with the labels (default: the one in the metadata)")
    p.add_argument("--fraction", type=float, nargs="+", default=[0.01])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--kind", default="auto", choices=["auto", "classification", "regression"])
    p.add_argument("--no-cnn", action="store_true", help="skip the supervised CNN baseline")
    p.add_argument("--out", default=None, help="write the results as JSON")
    add_common(p, seed=True)
    p.set_defaults(func=cmd_probe)


def cmd_pretrain(args) -> int:
    from galmo.methods.embeddings.run import pretrain
    from galmo.sources import as_source
    from galmo.core.io import write_json

    src = as_source(args.data, args.on_error)
    s = pretrain(src, args.out, size=args.size, epochs=args.epochs, photometry=args.photometry, resume=args.resume,
                 device=args.device, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                 patch_size=args.patch_size, max_images=args.max_images, augment=not args.no_augment)
    write_json(Path(args.out) / "pretrain_summary.json", s)
    best = s["best"] or {}
    print(f"pretrained {args.out}: {s['epochs_run']} epochs, first train loss {s['history_first_loss']:.4g}, "
          f"best val loss {best.get('val_loss', best.get('train_loss', float('nan'))):.4g}")
    return 0


def cmd_embed(args) -> int:
    from galmo.methods.embeddings.run import embed
    from galmo.sources import as_source
    from galmo.methods.embeddings.embed import write_embeddings

    src = as_source(args.data, args.on_error)
    ids, X, meta = embed(args.model, src, batch_size=args.batch_size, device=args.device, size=args.image_size,
                         progress=not args.no_progress, weights=args.weights, tokens=args.tokens)
    cat = src.catalog.set_index(src.catalog["id"].astype(str))
    extra = cat.loc[ids, [c for c in ("label", "label_name") if c in cat.columns]]
    write_embeddings(args.out, ids, X, meta, extra=extra)
    if getattr(src, "rejected", None):
        from galmo.sources.base import write_rejected

        write_rejected(src, Path(args.out).parent)
    print(f"wrote {args.out}: {len(ids)} embeddings of dimension {X.shape[1]} ({meta['images_per_s']:.0f} images/s)")
    return 0


def _source_for(emb, data):
    from galmo.sources import as_source

    path = data or emb.meta.get("data")
    if not path:
        raise GalmoError("give --data (the embeddings do not say which source they came from)")
    return as_source(path)


def cmd_similar(args) -> int:
    from galmo.methods.embeddings.run import montage_rows
    from galmo.methods.embeddings.embed import index_for, load_encoder, neighbours

    index, emb, reused = index_for(args.index, method=args.method, rebuild=args.rebuild)
    if args.image:
        from galmo.sources import open_source

        qsrc = open_source(args.image)
        enc = load_encoder(emb.meta.get("model", "tf_efficientnet_lite0"))
        if enc.phot_names:
            raise GalmoError("--image: this model needs photometry tokens; query by --id instead")
        query = enc.encode(qsrc.read([0], kind="image"))[0]
    else:
        query = str(args.id)
    table = neighbours(index, emb, query, k=args.k)
    print(table.drop(columns=["position"]).to_string(index=False))
    print(f"({'reused' if reused else 'built'} {index.method_} index {args.index}.faiss)")
    if args.out:
        out = Path(args.out)
        write_catalog(table, out, require_id=False)
        try:
            src = _source_for(emb, args.data)
            png = montage_rows(src, [list(table["id"])], [[f"{i}\n{s:.3f}" for i, s in
                                                            zip(table["id"], table["similarity"])]],
                                out.with_suffix(".png"), suptitle=f"neighbours of {args.id or args.image}")
            print(f"wrote {out} and {png}")
        except GalmoError as e:
            print(f"wrote {out} (no montage: {e})")
    return 0


def cmd_outliers(args) -> int:
    from galmo.methods.embeddings.run import montage_rows
    from galmo.methods.embeddings.run import anomaly_auroc
    from galmo.methods.embeddings.embed import outlier_scores, read_embeddings
    from galmo.core.io import write_json

    emb = read_embeddings(args.emb)
    score, parts = outlier_scores(emb.X, seed=args.seed, return_parts=True)
    out = Path(args.out)
    table = pd.DataFrame({"id": emb.ids, "anomaly_score": score, "score_isolation_forest": parts["isolation_forest"],
                          "score_lof": parts["lof"]}).sort_values("anomaly_score", ascending=False)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    src = _source_for(emb, args.data)
    cat = src.catalog.assign(id=src.catalog["id"].astype(str)).set_index("id")
    metrics = {"n": len(table)}
    for col in ("label_name", "is_anomaly", "anomaly_type"):
        if col in cat.columns:
            table[col] = cat.loc[table["id"], col].to_numpy()
    if "is_anomaly" in table.columns:
        metrics["auroc_injected"] = anomaly_auroc(table["anomaly_score"], table["is_anomaly"])
    write_catalog(table, out / "outliers.csv", require_id=False)
    top = table.head(args.top)
    montage_rows(src, [list(top["id"])], [[f"#{r} {i}" for r, i in zip(top["rank"], top["id"])]],
                  out / "top_outliers.png", suptitle="top anomalies")
    write_json(out / "outliers_metrics.json", metrics)
    print(table.head(10).to_string(index=False))
    print(f"wrote {out / 'outliers.csv'} and {out / 'top_outliers.png'}"
          + (f"; AUROC on injected anomalies {metrics['auroc_injected']:.3f}" if "auroc_injected" in metrics else ""))
    return 0


def cmd_probe(args) -> int:
    from galmo.methods.embeddings.run import CNN_NAME, supervised_cnn
    from galmo.methods.embeddings.embed import probe, probe_splits, read_embeddings
    from galmo.core.io import write_json

    emb = read_embeddings(args.emb)
    src = _source_for(emb, args.data)
    cat = src.catalog.assign(id=src.catalog["id"].astype(str)).set_index("id")
    if args.labels not in cat.columns:
        raise GalmoError(f"--labels {args.labels}: no such column (have: {', '.join(list(cat.columns)[:30])})",
                         path=getattr(src, "path", None))
    y = cat.loc[emb.ids, args.labels].to_numpy()
    rows = []
    for frac in args.fraction:
        r = probe(emb.X, y, fraction=frac, kind=args.kind, folds=args.folds, seed=args.seed)
        rows.append({"fraction": frac, "encoder": emb.meta.get("model", "?"), "metric": r["metric"],
                     "mean": r["mean"], "std": r["std"], "n_train": r["n_train_mean"]})
        if r["kind"] == "classification" and not args.no_cnn:
            pos = pd.Series(np.arange(len(src)), index=src.catalog["id"].astype(str).to_numpy()).loc[emb.ids].to_numpy()
            ok = y >= 0
            images = src.read(pos[ok], kind="image").astype(np.float16)
            splits = probe_splits(y[ok], frac, args.folds, args.seed)
            c = supervised_cnn(images, y[ok].astype(int), splits, Path(args.out or ".").parent / ".probe_cnn",
                               seed=args.seed, max_folds=1)
            rows.append({"fraction": frac, "encoder": f"{CNN_NAME} (from scratch)", "metric": "accuracy",
                         "mean": c["mean"], "std": c["std"], "n_train": c["n_train_mean"]})
    df = pd.DataFrame(rows)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        write_json(args.out, {"labels": args.labels, "results": rows})
    return 0
