"""Foundation-model embeddings (AstroPT and its Euclid Q1 study, 2025).

Pretrain a compact autoregressive patch transformer on unlabelled images (optionally chaining
photometry tokens), embed a source with any encoder (that model, a supervised run, or a timm
backbone), find similar galaxies, score outliers, and probe the embeddings with a fraction of the
labels against a supervised CNN trained from scratch on the same labels.

Verbs: ``galmo pretrain``, ``galmo embed``, ``galmo similar``, ``galmo outliers``, ``galmo probe``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.catalog import write_catalog
from galmo.errors import GalmoError
from galmo.sources import as_source, read_rows

CNN_NAME = "simple_cnn"


# ====================================================================== library functions
def load_images(src, kind: str = "image", max_images: int | None = None, seed: int = 0,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(row positions, float16 (N, C, H, W) images) of a source, or of a random ``max_images`` subset."""
    rows = None
    if max_images and max_images < len(src):
        rows = np.sort(np.random.default_rng(seed).choice(len(src), size=max_images, replace=False))
    return read_rows(src, rows, kind=kind, dtype=np.float16, progress=progress)


def pretrain(src, out, size: str = "tiny", epochs: int = 10, photometry: bool = False, resume: bool = False,
             device: str = "auto", batch_size: int = 64, lr: float = 1e-3, seed: int = 0, patch_size: int = 8,
             img_size: int | None = None, max_images: int | None = None, val_frac: float = 0.1,
             augment: bool = True, progress: bool = True, phot_names: list | None = None) -> dict:
    """Pretrain a patch transformer on ``src`` (no labels used) into the run folder ``out``."""
    import torch
    from torch.utils.data import TensorDataset

    from galmo.embed import default_photometry_names, photometry_table
    from galmo.models import create
    from galmo.models.patch_transformer import PretrainTask
    from galmo.train import TrainConfig, fit

    from galmo.models.patch_transformer import normalise_images

    pos, images = load_images(src, max_images=max_images, seed=seed, progress=progress)
    c, h, w = images.shape[1:]
    for s in range(0, len(images), 256):  # normalise once, not every epoch
        images[s:s + 256] = normalise_images(torch.from_numpy(images[s:s + 256])).numpy().astype(np.float16)
    tensors = [torch.from_numpy(images)]
    names = []
    if photometry:
        names = list(phot_names or default_photometry_names(src.catalog, getattr(src, "bands", None)))
        if not names:
            raise GalmoError("--photometry: the catalog has no flux_<band> or mag_<band> columns",
                             path=getattr(src, "path", None))
        tensors.append(torch.from_numpy(photometry_table(src.catalog, names)[pos]))
    kwargs = {"in_chans": int(c), "img_size": int(img_size or min(h, w) // patch_size * patch_size),
              "patch_size": patch_size, "size": size, "n_phot": len(names), "phot_names": names}
    model = create("patch_transformer", **kwargs)
    if names:
        model.set_photometry_stats(tensors[1].numpy())
    n = len(images)
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_frac * n)) if n >= 20 else 0
    val, train = order[:n_val], order[n_val:]
    train_set = TensorDataset(*[t[torch.as_tensor(train)] for t in tensors])
    val_set = TensorDataset(*[t[torch.as_tensor(val)] for t in tensors]) if n_val else None
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, progress=progress,
                      weight_decay=0.05, warmup_frac=0.1)
    t0 = time.perf_counter()
    summary = fit(model, train_set, val_set, PretrainTask(augment=augment, normalised=True), cfg, out, model_name="patch_transformer",
                  model_kwargs=kwargs, resume=resume,
                  extra_config={"data": str(getattr(src, "path", "")), "n_images": n, "task": "pretrain"})
    summary["seconds"] = time.perf_counter() - t0
    summary["history_first_loss"] = summary["history"][0]["train_loss"] if summary["history"] else None
    return summary


def embed(model_spec, src, batch_size: int = 128, device: str = "cpu", size: int | None = None,
          progress: bool = True, weights: str | None = "offline", tokens: str = "all"):
    """(ids, embeddings, metadata) of every galaxy of ``src`` with the encoder ``model_spec``."""
    from galmo.embed import embed_source, load_encoder

    enc = load_encoder(model_spec, device=device, size=size, weights=weights, tokens=tokens)
    t0 = time.perf_counter()
    ids, X = embed_source(enc, src, batch_size=batch_size, progress=progress)
    dt = time.perf_counter() - t0
    meta = {"model": str(model_spec), "encoder_kind": enc.kind, "dim": int(X.shape[1]),
            "photometry_tokens": enc.phot_names, "tokens": enc.tokens, "data": str(getattr(src, "path", "")),
            "images_per_s": len(ids) / dt if dt > 0 else None,
            "embedding": "mean of final hidden states over all tokens" if enc.kind == "patch_transformer"
            else "pooled backbone features"}
    return ids, X, meta


class _ClsTask:
    """Cross-entropy with dihedral augmentation (for the supervised CNN baseline)."""

    def loss(self, model, batch, generator):
        import torch.nn.functional as F

        from galmo.models.patch_transformer import augment

        x, y = batch
        return F.cross_entropy(model(augment(x.float(), generator)), y), {}

    def evaluate(self, model, loader):
        import torch.nn.functional as F

        tot, correct, n = 0.0, 0, 0
        for x, y in loader:
            out = model(x.float())
            tot += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
        return {"val_loss": tot / max(n, 1), "val_acc": correct / max(n, 1)}


def cnn_kwargs(in_chans: int, n_classes: int, width: int = 16) -> dict:
    """Constructor arguments of the registered ``simple_cnn`` baseline (galmo.models.cnn). Width 16
    (16-32-64-128 channels, ~0.3 M parameters) keeps the 100 %-label run to minutes on 2 cores."""
    return {"in_chans": int(in_chans), "num_outputs": int(n_classes), "width": int(width)}


def supervised_cnn(images: np.ndarray, y: np.ndarray, splits, run_dir, epochs_for=None, seed: int = 0,
                   max_folds: int = 2, progress: bool = False) -> dict:
    """Accuracy of ``simple_cnn`` trained from scratch (``galmo.train.fit``) on each split's train rows."""
    import torch
    from torch.utils.data import TensorDataset

    from galmo.models import create
    from galmo.train import TrainConfig, fit

    c, h, _ = images.shape[1:]
    n_classes = int(y.max()) + 1
    kw = cnn_kwargs(int(c), n_classes)
    accs, n_train, secs = [], [], []
    for f, (train, test) in enumerate(splits[:max_folds]):
        n = len(train)
        steps_wanted = 300 if n >= 1000 else 150 if n >= 100 else 60
        epochs = epochs_for(n) if epochs_for else int(np.clip(np.ceil(steps_wanted * 32 / max(n, 1)), 5, 60))
        torch.manual_seed(seed + f)
        model = create(CNN_NAME, **kw)
        tr = TensorDataset(torch.from_numpy(images[train]), torch.as_tensor(y[train], dtype=torch.long))
        te = TensorDataset(torch.from_numpy(images[test]), torch.as_tensor(y[test], dtype=torch.long))
        cfg = TrainConfig(epochs=epochs, batch_size=32, lr=2e-3, seed=seed + f, device="cpu", progress=progress)
        t0 = time.perf_counter()
        # no validation set: too few labels to hold any out honestly; the last-best on train loss is kept
        fit(model, tr, None, _ClsTask(), cfg, Path(run_dir) / f"cnn_fold{f}_n{n}", model_name=CNN_NAME,
            model_kwargs=kw)
        secs.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            res = _ClsTask().evaluate(model, [(te.tensors[0][i:i + 256], te.tensors[1][i:i + 256])
                                              for i in range(0, len(te), 256)])
        accs.append(res["val_acc"])
        n_train.append(n)
    return {"metric": "accuracy", "mean": float(np.mean(accs)), "std": float(np.std(accs)), "per_fold": accs,
            "n_train_mean": float(np.mean(n_train)), "folds": len(accs), "seconds": float(np.sum(secs))}


def anomaly_auroc(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    a = np.asarray(is_anomaly).astype(bool)
    if a.all() or not a.any():
        raise GalmoError("AUROC needs both anomalous and normal galaxies (is_anomaly column)")
    return float(roc_auc_score(a, scores))


# ====================================================================== CLI
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
    from galmo.io import write_json

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
    from galmo.embed import write_embeddings

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
    path = data or emb.meta.get("data")
    if not path:
        raise GalmoError("give --data (the embeddings do not say which source they came from)")
    return as_source(path)


def _montage_rows(src, ids_rows, titles_rows, path, suptitle=None):
    from galmo.plots import montage

    pos_of = pd.Series(np.arange(len(src)), index=src.catalog["id"].astype(str).to_numpy())
    flat = [i for row in ids_rows for i in row]
    titles = [t for row in titles_rows for t in row]
    images = src.read(pos_of.loc[flat].to_numpy(), kind="image")
    return montage(list(images), path, titles=titles, ncols=max(len(r) for r in ids_rows), suptitle=suptitle)


def cmd_similar(args) -> int:
    from galmo.embed import index_for, load_encoder, neighbours

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
            png = _montage_rows(src, [list(table["id"])], [[f"{i}\n{s:.3f}" for i, s in
                                                            zip(table["id"], table["similarity"])]],
                                out.with_suffix(".png"), suptitle=f"neighbours of {args.id or args.image}")
            print(f"wrote {out} and {png}")
        except GalmoError as e:
            print(f"wrote {out} (no montage: {e})")
    return 0


def cmd_outliers(args) -> int:
    from galmo.embed import outlier_scores, read_embeddings
    from galmo.io import write_json

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
    _montage_rows(src, [list(top["id"])], [[f"#{r} {i}" for r, i in zip(top["rank"], top["id"])]],
                  out / "top_outliers.png", suptitle="top anomalies")
    write_json(out / "outliers_metrics.json", metrics)
    print(table.head(10).to_string(index=False))
    print(f"wrote {out / 'outliers.csv'} and {out / 'top_outliers.png'}"
          + (f"; AUROC on injected anomalies {metrics['auroc_injected']:.3f}" if "auroc_injected" in metrics else ""))
    return 0


def cmd_probe(args) -> int:
    from galmo.embed import probe, probe_splits, read_embeddings
    from galmo.io import write_json

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


# ====================================================================== evaluation + demo section
LITE0 = "tf_efficientnet_lite0"


def _pretrained(run: Path, src, quick: bool, photometry: bool, epochs: int, max_images, progress: bool) -> Path:
    """Reuse ``run`` when it holds a finished pretraining, else pretrain a tiny model into it."""
    import json

    state = run / "last" / "train_state.json"
    if (run / "model.safetensors").exists() and state.exists():
        try:
            if json.loads(state.read_text())["scalars"].get("done"):
                return run
        except (json.JSONDecodeError, KeyError):
            pass
    pretrain(src, run, size="tiny", epochs=epochs, photometry=photometry, device="cpu", batch_size=64,
             lr=1.5e-3, max_images=max_images, progress=progress)
    return run


def _cached_embeddings(path: Path, meta: dict, run: Path, n: int):
    """Reuse embeddings written by an earlier demo when model, tokens, data and size match and the
    file is newer than the pretrained weights."""
    from galmo.embed import read_embeddings

    if not path.exists() or path.stat().st_mtime < (run / "model.safetensors").stat().st_mtime:
        return None
    try:
        e = read_embeddings(path)
    except GalmoError:
        return None
    if e.meta.get("n") != n or any(e.meta.get(k) != v for k, v in meta.items()):
        return None
    return e.ids, e.X


def evaluate(run_dir, src, quick: bool = False, fractions=(0.01, 0.1, 1.0), folds: int = 5, cnn_folds: int = 1,
             pt_epochs: int | None = None, lite0_size: int | None = None, progress: bool = False,
             cnn: bool = True, log=print) -> dict:
    """Every number of the embeddings study on ``src``; writes embeddings, tables and figures under
    ``run_dir/foundation`` and returns the results (also in ``foundation/results.json``)."""
    import os

    import torch

    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    if os.getloadavg()[0] > (os.cpu_count() or 1):  # cores busy with other work: one thread spins
        torch.set_num_threads(1)                     # less (measured 2.3x faster CNN steps on 2 busy cores)
    try:
        return _evaluate(run_dir, src, quick, fractions, folds, cnn_folds, pt_epochs, lite0_size, progress, cnn,
                         log, t_start)
    finally:
        torch.set_num_threads(threads)


def _evaluate(run_dir, src, quick, fractions, folds, cnn_folds, pt_epochs, lite0_size, progress, cnn, log,
              t_start) -> dict:
    from galmo import plots
    from galmo.embed import (default_photometry_names, embed_source, load_encoder, neighbour_agreement,
                             outlier_scores, probe, probe_splits, write_embeddings)
    from galmo.io import write_json

    out = Path(run_dir) / "foundation"
    fig_dir = Path(run_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    cat = src.catalog
    pt_epochs = pt_epochs or (1 if quick else 20)
    max_images = 256 if quick else None
    lite0_size = lite0_size or (32 if quick else 96)
    if quick:
        folds, cnn_folds, fractions = 2, 1, (0.1, 1.0)
    has_phot = bool(default_photometry_names(cat, getattr(src, "bands", None)))
    res: dict = {"n": len(src), "timings_s": {}, "fractions": list(fractions)}

    def tick(key, t0):
        res["timings_s"][key] = round(time.perf_counter() - t0, 1)
        log(f"[embeddings] {key}: {res['timings_s'][key]} s")

    # ---- pretrain (or reuse) and embed with every encoder
    # one pretraining (with photometry tokens when the catalog has fluxes); its embedding without
    # photometry is the mean over the image tokens only (causal: they never see the photometry)
    t0 = time.perf_counter()
    run = _pretrained(out / ("pt_tiny_phot" if has_phot else "pt_tiny"), src, quick, has_phot, pt_epochs,
                      max_images, progress)
    tick("pretrain", t0)
    encoders = {"patch transformer (tiny)": (run, "image")}
    if has_phot:
        encoders["patch transformer (tiny) + photometry tokens"] = (run, "all")
    encoders[f"EfficientNet-Lite0 (ImageNet, {lite0_size}px)"] = (LITE0, "all")
    embs, paths = {}, {}
    for k, (name, (spec, tokens)) in enumerate(encoders.items()):
        t0 = time.perf_counter()
        meta = {"model": str(spec), "encoder": name, "tokens": tokens, "data": str(getattr(src, "path", ""))}
        cached = _cached_embeddings(out / f"emb_{k}.parquet", meta, run, len(src))
        if cached is not None:
            ids, X = cached
        else:
            enc = load_encoder(spec, device="cpu", size=lite0_size if spec == LITE0 else None, tokens=tokens)
            ids, X = embed_source(enc, src, batch_size=128, progress=progress)
            res.setdefault("images_per_s", {})[name] = len(ids) / (time.perf_counter() - t0)
            write_embeddings(out / f"emb_{k}.parquet", ids, X, meta)
        embs[name] = X
        tick(f"embed {name}", t0)
    pt_name = next(iter(encoders))
    ids = np.asarray(ids)
    pos_of = pd.Series(np.arange(len(src)), index=cat["id"].astype(str).to_numpy())
    ccat = cat.assign(id=cat["id"].astype(str)).set_index("id").loc[ids]
    rows = []

    # ---- classification probes vs the supervised CNN
    labels = ccat["label"].to_numpy() if "label" in ccat.columns else None
    labelled = labels is not None and (labels >= 0).sum() >= 4 * folds
    if labelled:
        t0 = time.perf_counter()
        for name, X in embs.items():
            for frac in fractions:
                r = probe(X, labels, frac, kind="classification", folds=folds)
                rows.append({"task": "class accuracy", "encoder": name, "fraction": frac, "n_train": r["n_train_mean"],
                             "value": r["mean"], "std": r["std"], "folds": folds})
        tick("probes", t0)
        if cnn:
            t0 = time.perf_counter()
            ok = labels >= 0
            _, images = load_images(src)
            images = images[pos_of.loc[ids].to_numpy()][ok]
            for frac in fractions:
                splits = probe_splits(labels[ok], frac, folds, seed=0)
                epochs_for = (lambda n: 2) if quick else None
                c = supervised_cnn(images, labels[ok].astype(int), splits, out / "cnn", epochs_for=epochs_for,
                                   max_folds=cnn_folds)
                rows.append({"task": "class accuracy", "encoder": f"{CNN_NAME} from scratch", "fraction": frac,
                             "n_train": c["n_train_mean"], "value": c["mean"], "std": c["std"], "folds": c["folds"]})
            del images
            tick("supervised cnn", t0)

    # ---- redshift probes (with / without photometry tokens)
    if "redshift" in ccat.columns and np.isfinite(ccat["redshift"].to_numpy(float)).sum() >= 4 * folds:
        t0 = time.perf_counter()
        z = ccat["redshift"].to_numpy(float)
        for name, X in embs.items():
            for frac in (fractions[-2:] if len(fractions) > 1 else fractions):
                r = probe(X, z, frac, kind="regression", folds=folds)
                rows.append({"task": "redshift σ_NMAD", "encoder": name, "fraction": frac, "n_train": r["n_train_mean"],
                             "value": r["mean"], "std": r["std"], "folds": folds})
        tick("redshift probes", t0)

    # ---- similarity: neighbours sharing the query's class
    if labelled:
        t0 = time.perf_counter()
        for name, X in embs.items():
            rows.append({"task": "10-NN same class", "encoder": name, "fraction": None, "n_train": 0,
                         "value": neighbour_agreement(X, labels, k=10), "std": None, "folds": None})
        tick("similarity", t0)

    # ---- outliers
    t0 = time.perf_counter()
    grid = dict(if_estimators=(100,), if_samples=(256,), lof_neighbors=(20,)) if quick else {}
    scores = {}
    for name, X in embs.items():
        scores[name] = outlier_scores(X, **grid)
        if "is_anomaly" in ccat.columns and 0 < ccat["is_anomaly"].astype(bool).sum() < len(ccat):
            rows.append({"task": "outlier AUROC (injected)", "encoder": name, "fraction": None, "n_train": 0,
                         "value": anomaly_auroc(scores[name], ccat["is_anomaly"].to_numpy()), "std": None,
                         "folds": None})
    tick("outliers", t0)
    table = pd.DataFrame(rows)
    res["table"] = rows
    write_catalog(table, out / "results.csv", require_id=False)

    # ---- figures
    t0 = time.perf_counter()
    figures, captions = [], []
    Xpt = embs[pt_name]
    xy = _map2d(Xpt, quick)
    if labels is not None:
        names = {k: n for k, n in enumerate(src.class_names or [])}
        figures.append(plots.scatter_labels(xy, labels, fig_dir / "embeddings_map.png", names=names,
                                            title=f"{pt_name} embeddings ({'PCA' if quick else 't-SNE'})"))
        captions.append("2-D map of the pretrained patch-transformer embeddings, coloured by class")
    from galmo.embed import SimilarityIndex

    index = SimilarityIndex("exact").fit(Xpt)
    rng = np.random.default_rng(0)
    if labels is not None and (labels >= 0).any():
        queries = [int(rng.choice(np.flatnonzero(labels == c))) for c in np.unique(labels[labels >= 0])][:6]
    else:
        queries = list(rng.choice(len(ids), size=min(6, len(ids)), replace=False))
    _, nb = index.search(Xpt[queries], 8)
    qname = ccat["label_name"].to_numpy() if "label_name" in ccat.columns else None
    figures.append(_montage_rows(src, [list(ids[r]) for r in nb],
                                 [[("query " if j == 0 else "") + (str(qname[i])[:14] if qname is not None else str(ids[i]))
                                   for j, i in enumerate(r)] for r in nb], fig_dir / "embeddings_neighbours.png",
                                 suptitle="query (left) and its 7 nearest neighbours"))
    captions.append("similarity search: each row is a query galaxy and its nearest neighbours (cosine, faiss)")
    top = np.argsort(-scores[pt_name])[:16]
    tt = [f"#{k + 1}" + (f" {ccat['anomaly_type'].iloc[i]}" if "anomaly_type" in ccat.columns
                         and isinstance(ccat['anomaly_type'].iloc[i], str) else "") for k, i in enumerate(top)]
    figures.append(_montage_rows(src, [list(ids[top])], [tt], fig_dir / "embeddings_outliers.png", suptitle=None))
    captions.append("top 16 anomalies (IsolationForest + LOF grid on the patch-transformer embeddings)")
    tick("figures", t0)
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "results.json", res)
    return res


def _map2d(X: np.ndarray, quick: bool) -> np.ndarray:
    from galmo.embed import single_threaded_blas

    return single_threaded_blas(_map2d_impl)(X, quick)


def _map2d_impl(X: np.ndarray, quick: bool) -> np.ndarray:
    from sklearn.decomposition import PCA

    Z = PCA(n_components=min(30, X.shape[1], len(X)), random_state=0).fit_transform(X)
    if quick or len(X) > 5000:
        return Z[:, :2]
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, init="pca", random_state=0, perplexity=30, max_iter=500).fit_transform(Z)


def results_table(rows: list[dict]) -> pd.DataFrame:
    """The results as one wide table: rows (task, encoder), one column per label fraction."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["fraction"] = df["fraction"].map(lambda f: "—" if f is None or (isinstance(f, float) and np.isnan(f))
                                        else f"{100 * f:g} %")
    df["cell"] = [f"{v:.3f}" + (f" ± {s:.3f}" if s is not None and np.isfinite(s) else "")
                  for v, s in zip(df["value"], df["std"].astype(float))]
    wide = df.pivot_table(index=["task", "encoder"], columns="fraction", values="cell", aggfunc="first", sort=False)
    return wide.reset_index()


def demo_section(run_dir, source, quick: bool = False) -> dict:
    """Pretrain (or reuse) tiny patch transformers, embed with them and EfficientNet-Lite0, run
    similarity, outliers and probes, and add the "embeddings" section to the run's report."""
    from galmo.report import add_section, table_html

    res = evaluate(run_dir, source, quick=quick)
    fig_dir = Path(run_dir) / "figures"
    wide = results_table(res["table"])
    body = ("<p>A tiny AstroPT-like patch transformer (spiral-ordered 8×8 patches, causal, next-patch Huber "
            "loss) pretrained on the unlabelled images; embedding = mean of its final hidden states. Linear "
            "probes (logistic for classes, ridge for redshift) use 1 %, 10 % or 100 % of the training labels "
            "(cross-validated); the CNN is trained from scratch on the same labels. Outlier score: "
            "IsolationForest + LOF over a parameter grid, rank-normalised and averaged.</p>"
            + table_html(wide) +
            f"<p class='meta'>images/s: {', '.join(f'{k}: {v:.0f}' for k, v in res.get('images_per_s', {}).items())}; "
            f"timings (s): {res['timings_s']}</p>")
    figs = [fig_dir / f for f in ("embeddings_map.png", "embeddings_neighbours.png", "embeddings_outliers.png")]
    caps = ["2-D map of the patch-transformer embeddings, coloured by class",
            "each row: a query galaxy (left) and its nearest neighbours by cosine similarity",
            "top anomalies by the combined IsolationForest + LOF score"]
    keep = [(f, c) for f, c in zip(figs, caps) if f.exists()]
    add_section(run_dir, "embeddings", "Foundation-model embeddings (AstroPT-like)", body,
                [f for f, _ in keep], [c for _, c in keep])
    return res
