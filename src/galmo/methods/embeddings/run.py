"""Foundation-model embeddings (AstroPT and its Euclid Q1 study, 2025): the library behind the verbs.

Pretrain a compact autoregressive patch transformer on unlabelled images (optionally chaining
photometry tokens), embed a source with any encoder (that model, a supervised run, or a timm
backbone), find similar galaxies, score outliers, and probe the embeddings with a fraction of the
labels against a supervised CNN trained from scratch on the same labels.

One function per verb, each taking its config (:mod:`galmo.methods.embeddings.config`), writing
its outputs and returning what the command prints: :func:`run_pretrain`, :func:`run_embed`,
:func:`run_similar`, :func:`run_outliers`, :func:`run_probe`. The encoder comparison of the demo is
:func:`galmo.methods.embeddings.study.compare_encoders` (:func:`demo_section` here).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.catalog import write_catalog
from galmo.core.errors import GalmoError
from galmo.methods.embeddings.config import (DEFAULT_ENCODER, DEFAULT_LR, EmbedConfig, OutliersConfig, PretrainConfig,
                                             ProbeConfig, SimilarConfig, StudyConfig)
from galmo.sources import read_rows


def _require(cfg, *names) -> None:
    missing = [n for n in names if not getattr(cfg, n)]
    if missing:
        raise GalmoError(f"{cfg.method}: give {', '.join('--' + n.replace('_', '-') for n in missing)}")


def load_images(src, kind: str = "image", max_images: int | None = None, seed: int = 0,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(row positions, float16 (N, C, H, W) images) of a source, or of a random ``max_images`` subset."""
    rows = None
    if max_images and max_images < len(src):
        rows = np.sort(np.random.default_rng(seed).choice(len(src), size=max_images, replace=False))
    return read_rows(src, rows, kind=kind, dtype=np.float16, progress=progress)


# ====================================================================== pretrain
def _pretrain_tensors(src, cfg: PretrainConfig) -> tuple[list, list[str]]:
    """[images normalised once (float16)] (+ [photometry]) as tensors, and the photometry token names."""
    import torch

    from galmo.methods.embeddings.photometry import default_photometry_names, photometry_table
    from galmo.nn.models.patch_transformer import normalise_images

    pos, images = load_images(src, max_images=cfg.max_images, seed=cfg.seed, progress=cfg.progress)
    for s in range(0, len(images), 256):  # normalise once, not every epoch
        images[s:s + 256] = normalise_images(torch.from_numpy(images[s:s + 256])).numpy().astype(np.float16)
    tensors = [torch.from_numpy(images)]
    names = []
    if cfg.photometry:
        names = list(cfg.phot_names or default_photometry_names(src.catalog, getattr(src, "bands", None)))
        if not names:
            raise GalmoError("--photometry: the catalog has no flux_<band> or mag_<band> columns",
                             path=getattr(src, "path", None))
        tensors.append(torch.from_numpy(photometry_table(src.catalog, names)[pos]))
    return tensors, names


def _split(tensors: list, val_frac: float, seed: int):
    """(train set, validation set or None): a seeded ``val_frac`` held out (none below 20 images)."""
    import torch
    from torch.utils.data import TensorDataset

    n = len(tensors[0])
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_frac * n)) if n >= 20 else 0
    val, train = order[:n_val], order[n_val:]
    train_set = TensorDataset(*[t[torch.as_tensor(train)] for t in tensors])
    val_set = TensorDataset(*[t[torch.as_tensor(val)] for t in tensors]) if n_val else None
    return train_set, val_set


def _square(size) -> int | None:
    """``--image-size`` of the patch transformer: None, or one side (an int, or a square HEIGHT WIDTH)."""
    sides = {int(v) for v in (size if isinstance(size, (list, tuple)) else [size])} if size is not None else set()
    if len(sides) > 1:
        raise GalmoError(f"--image-size {' '.join(map(str, size))}: the patch transformer takes square images only")
    return sides.pop() if sides else None


def _astropt_setup(src, cfg: PretrainConfig) -> tuple:
    """(tensors, model name, model kwargs, task) of the patch transformer's next-patch pretraining."""
    from galmo.nn.tasks.pretrain import PretrainTask

    tensors, names = _pretrain_tensors(src, cfg)
    c, h, w = tensors[0].shape[1:]
    kwargs = {"in_chans": int(c), "img_size": _square(cfg.image_size) or min(h, w) // cfg.patch_size * cfg.patch_size,
              "patch_size": cfg.patch_size, "size": cfg.model_size, "n_phot": len(names), "phot_names": names}
    return tensors, "patch_transformer", kwargs, PretrainTask(augment=cfg.augment, normalised=True)


def _contrastive_setup(src, cfg: PretrainConfig) -> tuple:
    """(tensors, model name, model kwargs, task) of the contrastive pretraining of a timm backbone."""
    import torch

    from galmo.nn.tasks.contrastive import ContrastiveTask

    _, images = load_images(src, max_images=cfg.max_images, seed=cfg.seed, progress=cfg.progress)
    weights = None if cfg.weights in (None, "none") else cfg.weights
    kwargs = {"backbone": cfg.backbone, "weights": weights, "in_chans": int(images.shape[1]),
              "img_size": _square(cfg.image_size) or 96, "invariant": cfg.invariant}
    return [torch.from_numpy(images)], "contrastive_encoder", kwargs, ContrastiveTask(cfg.temperature)


def pretrain(src, out, cfg: PretrainConfig | None = None) -> dict:
    """Self-supervised pretraining on ``src`` (no labels used) into the run folder ``out``: the patch
    transformer (``cfg.objective`` "astropt") or a contrastive backbone ("contrastive"); its
    config.json is the checkpoint's and also holds ``cfg`` (``galmo run`` re-runs it)."""
    import torch

    from galmo.core.config import library_versions
    from galmo.nn.models import create
    from galmo.nn.train import TrainConfig, fit

    cfg = (cfg or PretrainConfig()).replace(out=str(out))
    cfg = cfg if cfg.data else cfg.replace(data=str(getattr(src, "path", "")) or None)
    setup = _contrastive_setup if cfg.objective == "contrastive" else _astropt_setup
    tensors, name, kwargs, task = setup(src, cfg)
    torch.manual_seed(cfg.seed)  # the initial weights follow --seed
    model = create(name, **kwargs)
    if kwargs.get("n_phot"):
        model.set_photometry_stats(tensors[1].numpy())
    train_set, val_set = _split(tensors, cfg.val_frac, cfg.seed)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr or DEFAULT_LR[cfg.objective],
                       seed=cfg.seed, device=cfg.device, progress=cfg.progress, weight_decay=0.05, warmup_frac=0.1,
                       checkpoint_every=cfg.checkpoint_every, checkpoint_minutes=cfg.checkpoint_minutes)
    extra = {"method": cfg.method, "config": cfg.to_dict(), "versions": library_versions(),
             "data": str(getattr(src, "path", "")), "n_images": len(tensors[0]), "task": "pretrain",
             "objective": cfg.objective}
    t0 = time.perf_counter()
    summary = fit(model, train_set, val_set, task, tcfg, out, model_name=name, model_kwargs=kwargs,
                  resume=cfg.resume, extra_config=extra)
    summary["seconds"] = time.perf_counter() - t0
    summary["history_first_loss"] = summary["history"][0]["train_loss"] if summary["history"] else None
    return summary


def run_pretrain(cfg: PretrainConfig, log=print) -> dict:
    """``galmo pretrain``: pretrain into ``cfg.out``, write pretrain_summary.json and the run's report
    (and ``rejected.csv`` when items were skipped, said through ``log``)."""
    from galmo.core.io import write_json
    from galmo.methods.embeddings.report import section
    from galmo.report import build_report
    from galmo.sources import as_source
    from galmo.sources.base import report_rejected

    _require(cfg, "data", "out")
    src = as_source(cfg.data, cfg.on_error)
    summary = pretrain(src, cfg.out, cfg)
    report_rejected(src, cfg.out, "dir", log)
    write_json(Path(cfg.out) / "pretrain_summary.json", summary)
    section(cfg.out)
    build_report(cfg.out, title=f"galmo pretrain — {Path(cfg.out).name}")
    return summary


# ====================================================================== embed
def embed(encoder, src, batch_size: int = 128, device: str = "cpu", image_size=None, progress: bool = True,
          weights: str | None = "offline", tokens: str = "all", framing: str | None = None,
          crop_frac: float | None = None, dihedral_mean: bool = False):
    """(ids, embeddings, metadata) of every galaxy of ``src`` with the encoder ``encoder`` (a run
    folder, a timm name, or an encoder :func:`~galmo.methods.embeddings.encoders.load_encoder` gave).
    Images reach its input by :mod:`galmo.core.resample` (the encoder's recorded framing, or
    ``framing`` / ``crop_frac``), said once and recorded in the metadata."""
    from galmo.methods.embeddings.encoders import EmbeddingModel, embed_source, load_encoder

    enc = encoder if isinstance(encoder, EmbeddingModel) else load_encoder(
        encoder, device=device, size=image_size, weights=weights, tokens=tokens, dihedral_mean=dihedral_mean)
    framed = enc.framing.override(framing, crop_frac)
    framed_src, fit = enc.fitted(src, framed)
    t0 = time.perf_counter()
    ids, X = embed_source(enc, framed_src, batch_size=batch_size, progress=progress, fit=fit)
    dt = time.perf_counter() - t0
    meta = {"model": enc.name, "encoder_kind": enc.kind, "dim": int(X.shape[1]),
            "photometry_tokens": enc.phot_names, "tokens": enc.tokens, "data": str(getattr(src, "path", "")),
            "images_per_s": len(ids) / dt if dt > 0 else None,
            "embedding": "mean of final hidden states over all tokens" if enc.kind == "patch_transformer"
            else "pooled backbone features"}
    if enc.kind == "timm" or enc.dihedral_mean:
        meta["image_size"] = enc.size  # so a query image (galmo similar --image) is embedded the same way
    meta["dihedral_mean"] = enc.dihedral_mean
    meta["framing"] = framed.to_dict()  # ... and framed the same way
    return ids, X, meta


def run_embed(cfg: EmbedConfig, log=print, source=None, encoder=None) -> dict:
    """``galmo embed``: the embeddings .parquet (+ ``<stem>.rejected.csv`` beside it when items were
    skipped, said through ``log``, written first: the list of a complete output is never missing).
    ``source``/``encoder``: already opened/loaded ones instead of ``cfg.data``/``cfg.encoder`` (the
    Ray engine's actors load the encoder once and call this for each shard)."""
    from galmo.methods.embeddings.store import write_embeddings
    from galmo.sources import as_source
    from galmo.sources.base import report_rejected

    _require(cfg, "data", "out")
    from galmo.nn.infer import set_backend

    set_backend(cfg.backend)
    src = source if source is not None else as_source(cfg.data, cfg.on_error)
    ids, X, meta = embed(encoder or cfg.encoder, src, batch_size=cfg.batch_size, device=cfg.device,
                         image_size=cfg.image_size, progress=cfg.progress, weights=cfg.weights, tokens=cfg.tokens,
                         framing=cfg.framing, crop_frac=cfg.crop_frac, dihedral_mean=cfg.dihedral_mean)
    cat = src.catalog.set_index(src.catalog["id"].astype(str))
    extra = cat.loc[ids, [c for c in ("label", "label_name") if c in cat.columns]]
    report_rejected(src, cfg.out, "file", log)
    write_embeddings(cfg.out, ids, X, meta, extra=extra)
    return {"path": cfg.out, "n": len(ids), "dim": int(X.shape[1]), "meta": meta}


# ====================================================================== similar / outliers / probe
def source_for(emb, data):
    """The source the embeddings came from: ``data`` when given, else the one in their metadata."""
    from galmo.sources import as_source

    path = data or emb.meta.get("data")
    if not path:
        raise GalmoError("give --data (the embeddings do not say which source they came from)")
    return as_source(path)


def query_encoder(emb):
    """The embeddings' own encoder (same model, size, tokens and symmetry mean), to embed query images
    (load it once and pass it to :func:`query_vector` for many queries)."""
    from galmo.methods.embeddings.encoders import load_encoder

    enc = load_encoder(emb.meta.get("model", DEFAULT_ENCODER), size=emb.meta.get("image_size"),
                       tokens=emb.meta.get("tokens", "all"), dihedral_mean=bool(emb.meta.get("dihedral_mean")))
    if enc.phot_names:
        raise GalmoError("--image: this model needs photometry tokens; query by --id instead")
    return enc


def query_vector(emb, image: str, enc=None) -> np.ndarray:
    """The embedding of a query image file with the embeddings' own encoder (``enc``, or
    :func:`query_encoder`), framed as the embeddings were."""
    from galmo.core.resample import Framing
    from galmo.sources import open_source

    enc = enc or query_encoder(emb)
    framing = Framing.from_dict(emb.meta["framing"]) if "framing" in emb.meta else None  # as the embeddings were
    src, fit = enc.fitted(open_source(image), framing)
    return enc.encode(src.read([0], kind="image"), fit=fit)[0]


def run_similar(cfg: SimilarConfig) -> dict:
    """``galmo similar``: the ``top`` nearest galaxies (table: rank, id, similarity, position); with
    ``out``, the table and a montage PNG beside it. Returns {"table", "index", "reused", "written", "note"}."""
    from galmo.methods.embeddings.figures import montage_rows
    from galmo.methods.embeddings.index import index_for, neighbours

    _require(cfg, "emb")
    if bool(cfg.id) == bool(cfg.image):
        raise GalmoError("similar: give exactly one of --id and --image")
    index, emb, reused = index_for(cfg.emb, method=cfg.index_method, rebuild=cfg.rebuild)
    query = query_vector(emb, cfg.image) if cfg.image else str(cfg.id)
    table = neighbours(index, emb, query, k=cfg.top)
    res = {"table": table, "index": index.method_, "reused": reused, "written": [], "note": None}
    if cfg.out:
        out = Path(cfg.out)
        titles = [[f"{i}\n{s:.3f}" for i, s in zip(table["id"], table["similarity"])]]
        try:  # the montage first: a bad --data stops the verb before anything is written
            png = montage_rows(source_for(emb, cfg.data), [list(table["id"])], titles, out.with_suffix(".png"),
                               suptitle=f"neighbours of {cfg.id or cfg.image}")
            res["written"].append(png)
        except GalmoError as e:
            if cfg.data:  # the user named the source: its problem is the answer
                raise
            res["note"] = f"no montage: {e}"  # the source recorded in the embeddings is gone: the table alone
        write_catalog(table, out, require_id=False)
        res["written"].insert(0, out)
    return res


def _outlier_table(emb, score, parts, cat) -> pd.DataFrame:
    table = pd.DataFrame({"id": emb.ids, "anomaly_score": score, "score_isolation_forest": parts["isolation_forest"],
                          "score_lof": parts["lof"]}).sort_values("anomaly_score", ascending=False)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    missing = ~table["id"].isin(cat.index)
    if missing.any():
        raise GalmoError(f"{int(missing.sum())} ids of the embeddings are not in the source's catalog "
                         f"(e.g. {table['id'][missing].iloc[0]!r}): give the --data they came from")
    for col in ("label_name", "is_anomaly", "anomaly_type"):
        if col in cat.columns:
            table[col] = cat.loc[table["id"], col].to_numpy()
    return table


def run_outliers(cfg: OutliersConfig) -> dict:
    """``galmo outliers``: outliers.csv (ranked), top_outliers.png and outliers_metrics.json in ``out``.
    Scoring needs no truth; the metrics hold the AUROC when the catalog flags both injected anomalies
    and normal galaxies (``is_anomaly``), else ``auroc_injected: null`` and ``auroc_note`` saying why.
    Returns {"table", "metrics", "written"}."""
    from galmo.core.io import write_json
    from galmo.methods.embeddings.figures import montage_rows
    from galmo.methods.embeddings.outliers import injected_metrics, outlier_scores
    from galmo.methods.embeddings.store import read_embeddings

    _require(cfg, "emb", "out")
    emb = read_embeddings(cfg.emb)
    score, parts = outlier_scores(emb.X, seed=cfg.seed, return_parts=True)
    out = Path(cfg.out)
    src = source_for(emb, cfg.data)
    table = _outlier_table(emb, score, parts, src.catalog.assign(id=src.catalog["id"].astype(str)).set_index("id"))
    metrics = {"n": len(table), **injected_metrics(table["anomaly_score"], table.get("is_anomaly"))}
    top = table.head(cfg.top)  # the montage first: unreadable images stop the verb before any table is written
    montage_rows(src, [list(top["id"])], [[f"#{r} {i}" for r, i in zip(top["rank"], top["id"])]],
                 out / "top_outliers.png", suptitle="top anomalies")
    write_catalog(table, out / "outliers.csv", require_id=False)
    write_json(out / "outliers_metrics.json", metrics)
    return {"table": table, "metrics": metrics,
            "written": [out / "outliers.csv", out / "top_outliers.png", out / "outliers_metrics.json"]}


def _cnn_row(src, emb, y, frac: float, cfg: ProbeConfig) -> dict:
    """The supervised CNN baseline trained from scratch on the probe's first split."""
    from galmo.methods.embeddings.probe import CNN_NAME, probe_splits, supervised_cnn

    pos = pd.Series(np.arange(len(src)), index=src.catalog["id"].astype(str).to_numpy()).loc[emb.ids].to_numpy()
    ok = y >= 0
    images = src.read(pos[ok], kind="image").astype(np.float16)
    splits = probe_splits(y[ok], frac, cfg.folds, cfg.seed)
    c = supervised_cnn(images, y[ok].astype(int), splits, Path(cfg.out or ".").parent / ".probe_cnn",
                       seed=cfg.seed, max_folds=1)
    return {"fraction": frac, "encoder": f"{CNN_NAME} (from scratch)", "metric": "accuracy",
            "mean": c["mean"], "std": c["std"], "n_train": c["n_train_mean"]}


def run_probe(cfg: ProbeConfig) -> pd.DataFrame:
    """``galmo probe``: one row per (fraction, encoder): metric, mean, std, n_train; with ``out``, the
    rows as JSON ({"labels", "results"})."""
    from galmo.core.io import write_json
    from galmo.methods.embeddings.probe import probe
    from galmo.methods.embeddings.store import read_embeddings

    _require(cfg, "emb")
    emb = read_embeddings(cfg.emb)
    src = source_for(emb, cfg.data)
    cat = src.catalog.assign(id=src.catalog["id"].astype(str)).set_index("id")
    if cfg.labels not in cat.columns:
        raise GalmoError(f"--labels {cfg.labels}: no such column (have: {', '.join(list(cat.columns)[:30])})",
                         path=getattr(src, "path", None))
    y = cat.loc[emb.ids, cfg.labels].to_numpy()
    rows = []
    for frac in cfg.fraction:
        r = probe(emb.X, y, fraction=frac, kind=cfg.kind, folds=cfg.folds, seed=cfg.seed)
        rows.append({"fraction": frac, "encoder": emb.meta.get("model", "?"), "metric": r["metric"],
                     "mean": r["mean"], "std": r["std"], "n_train": r["n_train_mean"]})
        if r["kind"] == "classification" and cfg.cnn:
            rows.append(_cnn_row(src, emb, y, frac, cfg))
    if cfg.out:
        write_json(cfg.out, {"labels": cfg.labels, "results": rows})
    return pd.DataFrame(rows)


# ====================================================================== the demo's section
def demo_section(run_dir, source, quick: bool = False) -> dict:
    """Pretrain (or reuse) a tiny patch transformer, embed with it and EfficientNet-Lite0, run
    similarity, outliers and probes, and add the "embeddings" section to the run's report."""
    from galmo.methods.embeddings.report import section
    from galmo.methods.embeddings.study import compare_encoders

    res = compare_encoders(run_dir, source, StudyConfig(quick=quick))
    section(run_dir)
    return res
