"""The embeddings study of the demo: every encoder compared on the same tasks.

:func:`compare_encoders` pretrains (or reuses) a tiny patch transformer, embeds the source with it
(image tokens only, and with photometry tokens when the catalog has fluxes) and with ImageNet
EfficientNet-Lite0, then measures class probes on 1/10/100 % of the labels against a CNN trained from
scratch, redshift probes, neighbour agreement and outlier AUROC, and draws three figures. Everything
lands in ``run_dir/foundation`` (embeddings, results.csv, results.json) and ``run_dir/figures``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.catalog import write_catalog
from galmo.core.errors import GalmoError
from galmo.methods.embeddings.config import PretrainConfig, StudyConfig
from galmo.methods.embeddings.probe import CNN_NAME

LITE0 = "tf_efficientnet_lite0"
CONTRASTIVE = "contrastive (Lite0 from ImageNet)"
FIGURES = ("embeddings_map.png", "embeddings_neighbours.png", "embeddings_outliers.png")


@dataclass
class _Study:
    """What the steps of one study share: folders, settings, the source and the results so far."""

    run_dir: Path
    src: object
    cfg: StudyConfig          # resolved (quick and defaults applied)
    log: object = print
    res: dict = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.run_dir / "foundation"

    @property
    def fig_dir(self) -> Path:
        return self.run_dir / "figures"

    def tick(self, key: str, t0: float) -> None:
        self.res["timings_s"][key] = round(time.perf_counter() - t0, 1)
        self.log(f"[embeddings] {key}: {self.res['timings_s'][key]} s")


def compare_encoders(run_dir, src, cfg: StudyConfig | None = None, log=print) -> dict:
    """Every number of the embeddings study on ``src`` (see the module docstring); returns the results,
    also written to ``foundation/results.json``. When the cores are busier than their count, torch
    runs single-threaded meanwhile (measured 2.3× faster CNN steps on 2 busy cores)."""
    import os

    import torch

    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)
    try:
        st = _Study(Path(run_dir), src, (cfg or StudyConfig()).resolved(), log)
        return _run(st, t_start)
    finally:
        torch.set_num_threads(threads)


def _run(st: _Study, t_start: float) -> dict:
    from galmo.core.io import write_json

    st.out.mkdir(parents=True, exist_ok=True)
    st.res.update({"n": len(st.src), "timings_s": {}, "fractions": list(st.cfg.fractions)})
    embs, ids, run = _embed_all(st)
    ccat = st.src.catalog.assign(id=st.src.catalog["id"].astype(str)).set_index("id").loc[ids]
    labels = ccat["label"].to_numpy() if "label" in ccat.columns else None
    labelled = labels is not None and (labels >= 0).sum() >= 4 * st.cfg.folds
    rows = []
    if labelled:
        rows += _class_rows(st, embs, labels)
        if st.cfg.cnn:
            rows += _cnn_rows(st, ids, labels)
    rows += _redshift_rows(st, embs, ccat)
    if labelled:
        rows += _similarity_rows(st, embs, labels)
    outlier_rows, scores = _outliers(st, embs, ccat)
    rows += outlier_rows
    st.res["table"] = rows
    write_catalog(pd.DataFrame(rows), st.out / "results.csv", require_id=False)
    _figures(st, embs, ids, ccat, labels, scores)
    st.res["seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(st.out / "results.json", st.res)
    return st.res


# ---------------------------------------------------------------------- pretrain and embed
def _pretrained(run: Path, src, st: _Study, cfg: PretrainConfig) -> Path:
    """Reuse ``run`` when it holds a finished pretraining, else pretrain into it with ``cfg``."""
    from galmo.methods.embeddings.run import pretrain
    from galmo.nn.train import read_progress

    try:
        progress = read_progress(run)
        if progress["done"] and progress["weights"]:
            return run
    except GalmoError:  # an unreadable training state: pretrain again
        pass
    pretrain(src, run, cfg.replace(device="cpu", max_images=256 if st.cfg.quick else None, progress=st.cfg.progress))
    return run


def _pretrain_runs(st: _Study, has_phot: bool) -> dict:
    """Name → pretrained run folder: the tiny patch transformer (with photometry tokens when the
    catalog has fluxes) and, unless switched off, the contrastive Lite0 continued from ImageNet."""
    pt = PretrainConfig(objective="astropt", model_size="tiny", epochs=st.cfg.pt_epochs, photometry=has_phot, batch_size=64, lr=1.5e-3)
    runs = {"patch transformer (tiny)": _pretrained(st.out / ("pt_tiny_phot" if has_phot else "pt_tiny"), st.src,
                                                    st, pt)}
    if st.cfg.contrastive:
        cl = PretrainConfig(objective="contrastive", epochs=st.cfg.cl_epochs, batch_size=64,
                            image_size=(st.cfg.lite0_size,))
        runs[CONTRASTIVE] = _pretrained(st.out / "contrastive", st.src, st, cl)
    return runs


def _cached_embeddings(path: Path, meta: dict, run: Path | None, n: int):
    """Reuse embeddings written by an earlier demo when model, tokens, data and size match and the
    file is newer than the pretrained weights (``run``; None for an encoder without training)."""
    from galmo.methods.embeddings.store import read_embeddings

    if not path.exists() or (run is not None and path.stat().st_mtime < (run / "model.safetensors").stat().st_mtime):
        return None
    try:
        e = read_embeddings(path)
    except GalmoError:
        return None
    if e.meta.get("n") != n or any(e.meta.get(k) != v for k, v in meta.items()):
        return None
    return e.ids, e.X


def _encoders(runs: dict, has_phot: bool, lite0_size: int) -> dict:
    """Name → (encoder spec, tokens) of every encoder compared; the first is the patch transformer.
    One pretraining (with photometry tokens when the catalog has fluxes): its embedding without
    photometry is the mean over the image tokens only (causal: they never see the photometry)."""
    run = runs["patch transformer (tiny)"]
    encoders = {"patch transformer (tiny)": (run, "image")}
    if has_phot:
        encoders["patch transformer (tiny) + photometry tokens"] = (run, "all")
    encoders[f"EfficientNet-Lite0 (ImageNet, {lite0_size}px)"] = (LITE0, "all")
    if CONTRASTIVE in runs:
        encoders[CONTRASTIVE] = (runs[CONTRASTIVE], "all")
    return encoders


def _embed_all(st: _Study) -> tuple[dict, np.ndarray, Path]:
    """(name → embeddings, ids, pretrain run folder); embeddings cached in foundation/emb_<k>.parquet."""
    from galmo.methods.embeddings.encoders import embed_source, load_encoder
    from galmo.methods.embeddings.photometry import default_photometry_names
    from galmo.methods.embeddings.store import write_embeddings

    src = st.src
    has_phot = bool(default_photometry_names(src.catalog, getattr(src, "bands", None)))
    t0 = time.perf_counter()
    runs = _pretrain_runs(st, has_phot)
    st.tick("pretrain", t0)
    embs = {}
    for k, (name, (spec, tokens)) in enumerate(_encoders(runs, has_phot, st.cfg.lite0_size).items()):
        t0 = time.perf_counter()
        meta = {"model": str(spec), "encoder": name, "tokens": tokens, "data": str(getattr(src, "path", ""))}
        cached = _cached_embeddings(st.out / f"emb_{k}.parquet", meta, None if spec == LITE0 else spec, len(src))
        if cached is not None:
            ids, X = cached
        else:
            enc = load_encoder(spec, device="cpu", size=st.cfg.lite0_size if spec == LITE0 else None, tokens=tokens)
            ids, X = embed_source(enc, src, batch_size=128, progress=st.cfg.progress)
            st.res.setdefault("images_per_s", {})[name] = len(ids) / (time.perf_counter() - t0)
            write_embeddings(st.out / f"emb_{k}.parquet", ids, X, meta)
        embs[name] = X
        st.tick(f"embed {name}", t0)
    return embs, np.asarray(ids), runs["patch transformer (tiny)"]


# ---------------------------------------------------------------------- the measurements
def _row(task: str, encoder: str, value: float, fraction=None, n_train=0, std=None, folds=None) -> dict:
    return {"task": task, "encoder": encoder, "fraction": fraction, "n_train": n_train, "value": value, "std": std,
            "folds": folds}


def _class_rows(st: _Study, embs: dict, labels: np.ndarray) -> list[dict]:
    """Logistic probes on each label fraction, per encoder."""
    from galmo.methods.embeddings.probe import probe

    t0, rows, folds = time.perf_counter(), [], st.cfg.folds
    for name, X in embs.items():
        for frac in st.cfg.fractions:
            r = probe(X, labels, frac, kind="classification", folds=folds)
            rows.append(_row("class accuracy", name, r["mean"], frac, r["n_train_mean"], r["std"], folds))
    st.tick("probes", t0)
    return rows


def _cnn_rows(st: _Study, ids: np.ndarray, labels: np.ndarray) -> list[dict]:
    """``simple_cnn`` trained from scratch on the probes' splits (first ``cnn_folds`` folds)."""
    from galmo.methods.embeddings.probe import probe_splits, supervised_cnn
    from galmo.methods.embeddings.run import load_images

    t0, rows = time.perf_counter(), []
    ok = labels >= 0
    pos_of = pd.Series(np.arange(len(st.src)), index=st.src.catalog["id"].astype(str).to_numpy())
    _, images = load_images(st.src)
    images = images[pos_of.loc[ids].to_numpy()][ok]
    for frac in st.cfg.fractions:
        splits = probe_splits(labels[ok], frac, st.cfg.folds, seed=0)
        epochs_for = (lambda n: 2) if st.cfg.quick else None
        c = supervised_cnn(images, labels[ok].astype(int), splits, st.out / "cnn", epochs_for=epochs_for,
                           max_folds=st.cfg.cnn_folds)
        rows.append(_row("class accuracy", f"{CNN_NAME} from scratch", c["mean"], frac, c["n_train_mean"],
                         c["std"], c["folds"]))
    del images
    st.tick("supervised cnn", t0)
    return rows


def _redshift_rows(st: _Study, embs: dict, ccat: pd.DataFrame) -> list[dict]:
    """Ridge probes of the redshift (with / without photometry tokens) on the two largest fractions."""
    from galmo.methods.embeddings.probe import probe

    folds = st.cfg.folds
    if "redshift" not in ccat.columns or np.isfinite(ccat["redshift"].to_numpy(float)).sum() < 4 * folds:
        return []
    t0, rows = time.perf_counter(), []
    z = ccat["redshift"].to_numpy(float)
    fractions = st.cfg.fractions
    for name, X in embs.items():
        for frac in (fractions[-2:] if len(fractions) > 1 else fractions):
            r = probe(X, z, frac, kind="regression", folds=folds)
            rows.append(_row("redshift σ_NMAD", name, r["mean"], frac, r["n_train_mean"], r["std"], folds))
    st.tick("redshift probes", t0)
    return rows


def _similarity_rows(st: _Study, embs: dict, labels: np.ndarray) -> list[dict]:
    """Fraction of the 10 nearest neighbours sharing the query's class, per encoder."""
    from galmo.methods.embeddings.index import neighbour_agreement

    t0 = time.perf_counter()
    rows = [_row("10-NN same class", name, neighbour_agreement(X, labels, k=10)) for name, X in embs.items()]
    st.tick("similarity", t0)
    return rows


def _outliers(st: _Study, embs: dict, ccat: pd.DataFrame) -> tuple[list[dict], dict]:
    """(AUROC rows on the injected anomalies when flagged, name → outlier scores)."""
    from galmo.methods.embeddings.outliers import anomaly_auroc, outlier_scores

    t0, rows, scores = time.perf_counter(), [], {}
    grid = dict(if_estimators=(100,), if_samples=(256,), lof_neighbors=(20,)) if st.cfg.quick else {}
    flagged = "is_anomaly" in ccat.columns and 0 < ccat["is_anomaly"].astype(bool).sum() < len(ccat)
    for name, X in embs.items():
        scores[name] = outlier_scores(X, **grid)
        if flagged:
            auroc = anomaly_auroc(scores[name], ccat["is_anomaly"].to_numpy())
            rows.append(_row("outlier AUROC (injected)", name, auroc))
    st.tick("outliers", t0)
    return rows, scores


# ---------------------------------------------------------------------- figures
def _figures(st: _Study, embs: dict, ids: np.ndarray, ccat: pd.DataFrame, labels, scores: dict) -> None:
    """The map, the neighbours and the outliers of the contrastive embeddings (else the patch transformer's) (FIGURES)."""
    from galmo import plots
    from galmo.methods.embeddings.figures import map2d

    t0 = time.perf_counter()
    pt_name = CONTRASTIVE if CONTRASTIVE in embs else next(iter(embs))
    Xpt = embs[pt_name]
    xy = map2d(Xpt, st.cfg.quick)
    if labels is not None:
        names = {k: n for k, n in enumerate(st.src.class_names or [])}
        plots.scatter_labels(xy, labels, st.fig_dir / FIGURES[0], names=names,
                             title=f"{pt_name} embeddings ({'PCA' if st.cfg.quick else 't-SNE'})")
    _neighbour_figure(st, Xpt, ids, ccat, labels)
    _outlier_figure(st, scores[pt_name], ids, ccat)
    st.tick("figures", t0)


def _neighbour_figure(st: _Study, X: np.ndarray, ids: np.ndarray, ccat: pd.DataFrame, labels) -> None:
    """Up to 6 queries (one per class when labelled) and their 7 nearest neighbours (cosine, faiss)."""
    from galmo.methods.embeddings.figures import montage_rows
    from galmo.methods.embeddings.index import SimilarityIndex

    index = SimilarityIndex("exact").fit(X)
    rng = np.random.default_rng(0)
    if labels is not None and (labels >= 0).any():
        queries = [int(rng.choice(np.flatnonzero(labels == c))) for c in np.unique(labels[labels >= 0])][:6]
    else:
        queries = list(rng.choice(len(ids), size=min(6, len(ids)), replace=False))
    _, nb = index.search(X[queries], 8)
    qname = ccat["label_name"].to_numpy() if "label_name" in ccat.columns else None
    titles = [[("query " if j == 0 else "") + (str(qname[i])[:14] if qname is not None else str(ids[i]))
               for j, i in enumerate(r)] for r in nb]
    montage_rows(st.src, [list(ids[r]) for r in nb], titles, st.fig_dir / FIGURES[1],
                 suptitle="query (left) and its 7 nearest neighbours")


def _outlier_figure(st: _Study, score: np.ndarray, ids: np.ndarray, ccat: pd.DataFrame) -> None:
    """The top 16 anomalies (IsolationForest + LOF grid)."""
    from galmo.methods.embeddings.figures import montage_rows

    top = np.argsort(-score)[:16]
    kind = ccat["anomaly_type"] if "anomaly_type" in ccat.columns else None
    titles = [f"#{k + 1}" + (f" {kind.iloc[i]}" if kind is not None and isinstance(kind.iloc[i], str) else "")
              for k, i in enumerate(top)]
    montage_rows(st.src, [list(ids[top])], [titles], st.fig_dir / FIGURES[2], suptitle=None)


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
    wide.columns.name = None
    return wide.reset_index()
