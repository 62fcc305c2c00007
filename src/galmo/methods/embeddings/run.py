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

from galmo.core.catalog import write_catalog
from galmo.core.errors import GalmoError
from galmo.sources import read_rows

CNN_NAME = "simple_cnn"
LITE0 = "tf_efficientnet_lite0"


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

    from galmo.methods.embeddings.embed import default_photometry_names, photometry_table
    from galmo.nn.models import create
    from galmo.nn.models.patch_transformer import PretrainTask
    from galmo.nn.train import TrainConfig, fit

    from galmo.nn.models.patch_transformer import normalise_images

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
    from galmo.methods.embeddings.embed import embed_source, load_encoder

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

        from galmo.nn.models.patch_transformer import augment

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
    """Constructor arguments of the registered ``simple_cnn`` baseline (galmo.nn.models.cnn). Width 16
    (16-32-64-128 channels, ~0.3 M parameters) keeps the 100 %-label run to minutes on 2 cores."""
    return {"in_chans": int(in_chans), "num_outputs": int(n_classes), "width": int(width)}


def supervised_cnn(images: np.ndarray, y: np.ndarray, splits, run_dir, epochs_for=None, seed: int = 0,
                   max_folds: int = 2, progress: bool = False) -> dict:
    """Accuracy of ``simple_cnn`` trained from scratch (``galmo.nn.train.fit``) on each split's train rows."""
    import torch
    from torch.utils.data import TensorDataset

    from galmo.nn.models import create
    from galmo.nn.train import TrainConfig, fit

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


def montage_rows(src, ids_rows, titles_rows, path, suptitle=None):
    from galmo.plots import montage

    pos_of = pd.Series(np.arange(len(src)), index=src.catalog["id"].astype(str).to_numpy())
    flat = [i for row in ids_rows for i in row]
    titles = [t for row in titles_rows for t in row]
    images = src.read(pos_of.loc[flat].to_numpy(), kind="image")
    return montage(list(images), path, titles=titles, ncols=max(len(r) for r in ids_rows), suptitle=suptitle)


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
    from galmo.methods.embeddings.embed import read_embeddings

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
    from galmo.methods.embeddings.embed import (default_photometry_names, embed_source, load_encoder, neighbour_agreement,
                             outlier_scores, probe, probe_splits, write_embeddings)
    from galmo.core.io import write_json

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
    from galmo.methods.embeddings.embed import SimilarityIndex

    index = SimilarityIndex("exact").fit(Xpt)
    rng = np.random.default_rng(0)
    if labels is not None and (labels >= 0).any():
        queries = [int(rng.choice(np.flatnonzero(labels == c))) for c in np.unique(labels[labels >= 0])][:6]
    else:
        queries = list(rng.choice(len(ids), size=min(6, len(ids)), replace=False))
    _, nb = index.search(Xpt[queries], 8)
    qname = ccat["label_name"].to_numpy() if "label_name" in ccat.columns else None
    figures.append(montage_rows(src, [list(ids[r]) for r in nb],
                                 [[("query " if j == 0 else "") + (str(qname[i])[:14] if qname is not None else str(ids[i]))
                                   for j, i in enumerate(r)] for r in nb], fig_dir / "embeddings_neighbours.png",
                                 suptitle="query (left) and its 7 nearest neighbours"))
    captions.append("similarity search: each row is a query galaxy and its nearest neighbours (cosine, faiss)")
    top = np.argsort(-scores[pt_name])[:16]
    tt = [f"#{k + 1}" + (f" {ccat['anomaly_type'].iloc[i]}" if "anomaly_type" in ccat.columns
                         and isinstance(ccat['anomaly_type'].iloc[i], str) else "") for k, i in enumerate(top)]
    figures.append(montage_rows(src, [list(ids[top])], [tt], fig_dir / "embeddings_outliers.png", suptitle=None))
    captions.append("top 16 anomalies (IsolationForest + LOF grid on the patch-transformer embeddings)")
    tick("figures", t0)
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "results.json", res)
    return res


def _map2d(X: np.ndarray, quick: bool) -> np.ndarray:
    from galmo.methods.embeddings.embed import single_threaded_blas

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
