"""Unsupervised morphology groups: eUML (2024) — denoise, adaptive polar unwrap, pretrained CNN
features, automatic PCA, voting clustering — with the fixes and additions described in
``docs/unsupervised.md`` (by default an invariant projection learnt from augmented views replaces
the PCA, and the members vote on a spectral embedding of the k-NN graph).

Library::

    from galmo.methods.unsupervised.config import ClusterConfig
    from galmo.methods.unsupervised.run import make_pipeline, run_cluster
    pipe = make_pipeline(k=20)                  # an sklearn Pipeline of galmo.stages + VotingClustering
    groups = pipe.fit_predict(images)           # float32 (N, C, H, W) in [0, 1]
    metrics = run_cluster(ClusterConfig(data="sims.h5", out="runs/x", k=(20,)))  # what galmo cluster writes

:func:`run_cluster` builds that Pipeline, fits it on up to ``fit_max`` galaxies of the source (the
only images held in memory) and streams the other galaxies through it batch by batch, keeping only
their features; the fitted galaxies keep the groups of the fit, the others get the fitted members'
votes (:meth:`galmo.stages.VotingClustering.predict_members`).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import GalmoError
from galmo.methods.unsupervised.config import ClusterConfig

REDUCTIONS = ("invariant", "pca")  # the step whose output is the catalog's coordinates


# ----------------------------------------------------------------------------------- composition
def make_pipeline(cfg: ClusterConfig | None = None, *, n_fit: int | None = None, run_dir=None, **changes):
    """The method as ``Pipeline([denoise, invariant, graph, cluster])`` (with ``invariant=False``:
    ``[denoise, polar, encode, pca, graph, cluster]``); a disabled stage is ``"passthrough"``.
    ``cfg`` (default :class:`ClusterConfig`) with ``changes`` applied; ``n_fit``: the number of
    galaxies it will be fitted on (a tiny sample gets a smaller graph); ``run_dir``: where the
    denoiser keeps its checkpoint. The invariant step draws each galaxy for the views with
    probability views_max_fit / N, in blocks of ``batch_size``, as :func:`run_cluster` reads them."""
    from sklearn.pipeline import Pipeline

    from galmo.stages import AutoPCA, Denoiser, Encoder, GraphEmbedding, InvariantFeatures, PolarUnwrap
    from galmo.stages.voting import VotingClustering

    cfg = (cfg or ClusterConfig()).replace(**changes)
    enc = cfg.encoding()
    featurizer = [("polar", PolarUnwrap(radial=enc["radial"]) if cfg.polar else "passthrough"),
                  ("encode", Encoder(backbone=cfg.backbone, weights=cfg.weights, size=cfg.encoder_size(),
                                     device=cfg.device, layer=enc["layer"], pool=enc["pool"]))]
    if cfg.invariant:
        reduce = [("invariant", InvariantFeatures(Pipeline(featurizer), views=cfg.views, max_fit=cfg.views_max_fit,
                                                  n_components=cfg.invariant_components, reg=cfg.invariant_reg,
                                                  batch_size=cfg.batch_size, random_state=cfg.seed,
                                                  progress=cfg.progress))]
    else:
        reduce = featurizer + [("pca", AutoPCA(variance=cfg.pca_variance, standardize=cfg.standardize,
                                               whiten=cfg.whiten, random_state=cfg.seed) if cfg.pca else "passthrough")]
    neighbors, components = cfg.graph_neighbors, cfg.graph_components
    if n_fit is not None and n_fit <= max(neighbors, components + 1):  # a tiny sample: a smaller graph
        neighbors, components = max(2, n_fit - 1), max(1, min(components, n_fit - 2))
    return Pipeline([
        ("denoise", Denoiser(epochs=cfg.denoise_epochs, widths=(16, 32), seed=cfg.seed, device=cfg.device,
                             max_train=cfg.denoise_max_train, progress=cfg.progress,
                             run_dir=None if run_dir is None else Path(run_dir) / "denoiser")
         if cfg.denoise else "passthrough"),
        *reduce,
        ("graph", GraphEmbedding(n_components=components, n_neighbors=neighbors, random_state=cfg.seed)
         if cfg.graph else "passthrough"),
        ("cluster", VotingClustering(n_clusters=list(cfg.k), members=cfg.members, min_agree=cfg.min_agree,
                                     bagging=cfg.bagging, random_state=cfg.seed, progress=cfg.progress)),
    ])


def fit_pipeline(pipe, X: np.ndarray, timings: dict | None = None) -> dict:
    """``pipe.fit(X)`` step by step, returning each step's output on ``X`` ({name: array}; the last
    step is fitted, its groups are ``pipe[-1].labels_``). Same calls as scikit-learn's
    ``Pipeline.fit`` (``fit_transform`` of every transformer, then ``fit``), which keeps only the last."""
    outs, Z = {}, X
    for name, step in pipe.steps[:-1]:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        t = time.perf_counter()
        Z = outs[name] = step.fit_transform(Z)
        if timings is not None:
            timings[name] = time.perf_counter() - t
    t = time.perf_counter()
    pipe.steps[-1][1].fit(Z)
    if timings is not None:
        timings["cluster"] = time.perf_counter() - t
    return outs


def transform_steps(pipe, X: np.ndarray) -> dict:
    """Each transformer's output on new images ``X`` ({name: array}), as ``pipe[:-1].transform`` would."""
    outs, Z = {}, X
    for name, step in pipe.steps[:-1]:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        Z = outs[name] = step.transform(Z)
    return outs


def coordinates(outs: dict):
    """(catalog coordinates: the reduction's output, or the encoder's without one; the input of the
    clustering: the last transformer's output) from the step outputs ``outs``."""
    red = next((n for n in REDUCTIONS if n in outs), "encode")
    return outs[red], list(outs.values())[-1]


# ----------------------------------------------------------------------------------- images
def clean_display(src, pos: np.ndarray) -> np.ndarray | None:
    """The noise-free version of the ``image`` kind for rows ``pos`` (sims: the noiseless fluxes
    through the simulator's own colour composite, :func:`galmo.simulate.render.noiseless_display`), or None."""
    if "noiseless" not in getattr(src, "kinds", ()):
        return None
    from galmo.simulate.render import noiseless_display

    bands = tuple(src.bands) if len(src.bands) == 3 else ("g", "r", "z")
    scale = (src.catalog["pxscale"].to_numpy(dtype=np.float32)[np.asarray(pos)]
             if "pxscale" in src.catalog.columns else None)
    return noiseless_display(src.read(pos, kind="noiseless"), scale, bands)


def input_resampler(src, cfg: ClusterConfig):
    """(source, resampler): THE resampling rule (:func:`galmo.core.resample.fit_source`) to the
    pipeline's input, the square of the source's shorter side, framed by ``cfg.framing`` /
    ``cfg.crop_frac`` (nothing to do for square images of the whole frame)."""
    from galmo.core.resample import fit_source

    side = min(src.shape[1:])
    return fit_source(src, (None, side, side), None, cfg.framing, cfg.crop_frac)


def sample_positions(n: int, cfg: ClusterConfig) -> np.ndarray | None:
    """The positions (of ``n`` galaxies) the pipeline is fitted on: None (every one) when ``n`` is at most
    ``fit_max``, else a seeded random ``fit_max`` of them, sorted (``--engine ray``: over the shards in order)."""
    if n <= cfg.fit_max:
        return None
    return np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.fit_max, replace=False))


def read_fit_sample(src, cfg: ClusterConfig, fit) -> tuple[np.ndarray, np.ndarray]:
    """(row positions, images) of the galaxies the pipeline is fitted on: every readable one when the
    source has at most ``fit_max``, else a seeded random ``fit_max`` of them (source order); brought
    to the pipeline's input by ``fit`` (the resampler of :func:`input_resampler`)."""
    chosen = sample_positions(len(src), cfg)
    rows, imgs = [], []
    for pos, X in src.iter_batches(batch_size=cfg.batch_size, kind="image", progress=False):
        if chosen is not None:
            keep = np.isin(pos, chosen)
            pos, X = pos[keep], X[keep]
        rows.append(np.asarray(pos))
        imgs.append(fit(np.asarray(X, dtype=np.float32)))
    if not rows or not sum(len(r) for r in rows):
        raise GalmoError("no readable images in the source", path=getattr(src, "path", None))
    return np.concatenate(rows), np.concatenate(imgs)


def assign_rest(pipe, src, fit_rows: np.ndarray, cfg: ClusterConfig, fit) -> dict | None:
    """The galaxies outside the fit sample streamed through the fitted ``pipe`` batch by batch
    (framed by ``fit``, as the sample was): {"rows", "coords", K: (groups, agreement, member
    labels)}; None when every galaxy was fitted."""
    vc = pipe.steps[-1][1]
    rows, coords, per_k = [], [], {k: [] for k in vc.per_k_}
    bar = _bar(cfg.progress, len(src) - len(fit_rows), "assign")
    for pos, X in src.iter_batches(batch_size=cfg.batch_size, kind="image", progress=False):
        keep = ~np.isin(pos, fit_rows)
        if not keep.any():
            continue
        P, Q = coordinates(transform_steps(pipe, fit(X[keep])))
        rows.append(np.asarray(pos)[keep])
        coords.append(np.asarray(P, dtype=np.float32))
        for k in per_k:
            per_k[k].append(vc.predict_members(Q, k))
        if bar is not None:
            bar.update(int(keep.sum()))
    if bar is not None:
        bar.close()
    if not rows:
        return None
    out = {"rows": np.concatenate(rows), "coords": np.concatenate(coords)}
    for k, parts in per_k.items():
        out[k] = tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
    return out


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc=desc, leave=False)


def groups_of(pipe, fit_rows: np.ndarray, P_fit: np.ndarray, rest: dict | None, pick=slice(None)) -> dict:
    """Rows (source order), coordinates and, per K, groups / agreement / member labels of every galaxy:
    the fitted ones keep the labels of the fit, the others those of :func:`assign_rest`. ``pick``: which
    of the fitted galaxies ``fit_rows`` and ``P_fit`` are (default all; ``--engine ray``: one shard's)."""
    vc = pipe.steps[-1][1]
    per_k = {k: (r["labels"][pick], r["agreement"][pick], r["member_labels"][pick]) for k, r in vc.per_k_.items()}
    rows, coords = fit_rows, np.asarray(P_fit, dtype=np.float32)
    if rest is not None:
        order = np.argsort(np.concatenate([fit_rows, rest["rows"]]), kind="stable")
        rows = np.concatenate([fit_rows, rest["rows"]])[order]
        coords = np.concatenate([coords, rest["coords"]])[order]
        per_k = {k: tuple(np.concatenate([a, b])[order] for a, b in zip(v, rest[k])) for k, v in per_k.items()}
    return {"rows": rows, "coords": coords, "per_k": per_k}


# ----------------------------------------------------------------------------------- scores
def score(per_k: dict, labels: np.ndarray | None, member_names) -> dict:
    """Fraction classified per K and, with labels, purity/NMI/ARI of the classified galaxies per K
    (``per_k``: K → (groups, agreement, member labels) of every galaxy)."""
    from galmo.core.metrics import clustering_scores

    out = {}
    for k, (groups, _, member_labels) in per_k.items():
        d = {"fraction_classified": float((groups >= 0).mean()), "n_classified": int((groups >= 0).sum()),
             "n_groups_used": int(len(np.unique(groups[groups >= 0])))}
        if labels is not None and (labels >= 0).any():
            d.update(clustering_scores(groups, labels))
            # the members' own quality (all galaxies, no voting), for comparison
            for j, nm in enumerate(member_names):
                d[f"{nm}_nmi_all"] = clustering_scores(member_labels[:, j], labels)["nmi"]
        out[int(k)] = d
    return out


# ----------------------------------------------------------------------------------- the run
def run_cluster(cfg: ClusterConfig, src=None, log=print) -> dict:
    """Run the whole method and write the run folder ``cfg.out``: config.json, cluster_catalog.parquet,
    metrics.json, figures, morphology, the report section and report.html. ``src``: an open source
    (default: ``open_source(cfg.data)``). Returns the metrics."""
    from galmo.sources import open_source

    cfg.validate()
    if cfg.out is None:
        raise GalmoError("galmo cluster needs a run folder (--out)")
    from galmo.nn.infer import set_backend

    set_backend(cfg.backend)
    if src is None:
        if cfg.data is None:
            raise GalmoError("galmo cluster needs a source (--data)")
        src = open_source(cfg.data, on_error=cfg.on_error)
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir, source=str(getattr(src, "path", "")), encoding={**cfg.encoding(), "size": cfg.encoder_size()})
    t0, timings = time.perf_counter(), {}
    pipe, res = _fit_and_assign(src, cfg, run_dir, timings)
    cat = src.catalog.iloc[res["rows"]].reset_index(drop=True)
    from galmo.sources.base import report_rejected

    report_rejected(src, run_dir, "dir", lambda m: log(f"[cluster] {m}"))
    metrics = _metrics(pipe, res, cat, cfg)
    if cfg.denoise:
        metrics.update(_denoiser_psnr(pipe.named_steps["denoise"], src, res["rows"], cfg.seed, log))
    _write_catalog(res, cat, cfg, run_dir)
    _write_confusion(res, cat, src, run_dir)
    _write_figures(res, cat, src, cfg, run_dir)
    if cfg.morph_per_group > 0:
        t = time.perf_counter()
        metrics["morphology_failed_fraction"] = _write_morphology(src, res, cfg, run_dir)
        timings["morphology"] = time.perf_counter() - t
    metrics["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    metrics["timings_s"]["total"] = round(time.perf_counter() - t0, 2)
    _log_result(metrics, log)
    from galmo.core.io import write_json

    write_json(run_dir / "metrics.json", metrics)
    if cfg.report:
        from galmo.methods.unsupervised.report import section
        from galmo.report import build_report

        section(run_dir)
        build_report(run_dir)
    return metrics


def _fit_and_assign(src, cfg: ClusterConfig, run_dir: Path, timings: dict) -> tuple:
    """Read the fit sample, fit the pipeline on it, stream the rest: (pipe, :func:`groups_of`)."""
    t = time.perf_counter()
    src, framing = input_resampler(src, cfg)
    fit_rows, X = read_fit_sample(src, cfg, framing)
    timings["read"] = time.perf_counter() - t
    pipe, P, digest = fit_on_sample(X, cfg, run_dir, timings, where=getattr(src, "path", None))
    del X
    t = time.perf_counter()
    rest = assign_rest(pipe, src, fit_rows, cfg, framing) if len(src) > cfg.fit_max else None
    if rest is not None:
        timings["assign"] = time.perf_counter() - t
    return pipe, {**groups_of(pipe, fit_rows, P, rest), "n_fit": len(fit_rows), "fit_images_sha1": digest}


def fit_on_sample(X: np.ndarray, cfg: ClusterConfig, run_dir, timings: dict, where=None) -> tuple:
    """(the fitted pipeline, the coordinates of the sample, the digest of its images) from the sample's
    images ``X`` (:func:`read_fit_sample`); ``where``: the source a too small sample is blamed on."""
    if len(X) < max(cfg.k):
        raise GalmoError(f"{len(X)} readable galaxies: too few for K={max(cfg.k)} groups", path=where)
    digest = hashlib.sha1(np.ascontiguousarray(X).tobytes()).hexdigest()[:16]  # what the fit saw (Reproducibility)
    pipe = make_pipeline(cfg, n_fit=len(X), run_dir=run_dir)
    P, _ = coordinates(fit_pipeline(pipe, X, timings))
    return pipe, P, digest


def _metrics(pipe, res: dict, cat: pd.DataFrame, cfg: ClusterConfig) -> dict:
    vc = pipe.steps[-1][1]
    labels = cat["label"].to_numpy() if "label" in cat.columns else None
    per_k = score(res["per_k"], labels, vc.member_names_)
    k0 = int(cfg.k[0])
    red = pipe.named_steps.get("invariant") if cfg.invariant else pipe.named_steps.get("pca")
    pca = red if not cfg.invariant and not isinstance(red, str) else None
    inv = red.projection_ if cfg.invariant else None
    ge = pipe.named_steps["graph"]
    return {"n": int(len(res["rows"])), "n_fit": int(res["n_fit"]), "fit_images_sha1": res["fit_images_sha1"],
            "k": k0, "members": vc.member_names_,
            "min_agree": vc.min_agree or vc.n_members_, **per_k[k0],
            "fraction_classified_by_k": {str(kk): per_k[int(kk)]["fraction_classified"] for kk in cfg.k},
            "pca_components": int(pca.n_components_) if pca is not None else None,
            "pca_variance_kept": float(pca.explained_variance_kept_) if pca is not None else None,
            "invariant_components": int(inv.n_components_) if inv is not None else None,
            "invariant_views": f"{cfg.views} views of {inv.n_fit_} galaxies" if inv is not None else None,
            "invariant_n_views": cfg.views if inv is not None else None,
            "invariant_n_fit": int(inv.n_fit_) if inv is not None else None,
            "invariant_ratio": [round(float(v), 3) for v in inv.ratio_] if inv is not None else None,
            "stages": {"denoise": cfg.denoise, "polar": cfg.polar, "invariant": cfg.invariant,
                       "pca": cfg.pca and not cfg.invariant, "graph": cfg.graph},
            "graph_fitted_on": int(ge.n_fit_) if not isinstance(ge, str) else None,
            "by_k": {str(kk): v for kk, v in per_k.items()}}


def _log_result(metrics: dict, log) -> None:
    log(f"[cluster] K={metrics['k']}: {metrics['fraction_classified']:.1%} classified"
        + (f", purity {metrics['purity']:.3f}, NMI {metrics['nmi']:.3f}, ARI {metrics['ari']:.3f}"
           if "purity" in metrics else ""))


def _denoiser_psnr(den, src, rows: np.ndarray, seed: int, log) -> dict:
    """PSNR of up to 500 random galaxies before and after the denoiser, against their noiseless
    version (sources that have one)."""
    if "noiseless" not in getattr(src, "kinds", ()):
        return {}
    from galmo.core.metrics import psnr

    pick = np.sort(np.random.default_rng(seed).choice(len(rows), size=min(500, len(rows)), replace=False))
    ref, Xp = clean_display(src, rows[pick]), src.read(rows[pick])
    d = {"psnr_noisy": float(psnr(Xp, ref, 1.0)), "psnr_denoised": float(psnr(den.transform(Xp), ref, 1.0))}
    d["psnr_gain"] = d["psnr_denoised"] - d["psnr_noisy"]
    log(f"[cluster] denoiser: PSNR {d['psnr_noisy']:.2f} → {d['psnr_denoised']:.2f} dB "
        f"({d['psnr_gain']:+.2f} dB against the noiseless images, {len(pick)} galaxies)")
    return d


# ----------------------------------------------------------------------------------- outputs
def _coords(res: dict, cfg: ClusterConfig) -> tuple[np.ndarray, str]:
    """The catalog's coordinates and their column prefix (the encoder features without a reduction
    are shown on their first two principal components)."""
    if cfg.invariant:
        return res["coords"], "inv"
    if cfg.pca:
        return res["coords"], "pca"
    from sklearn.decomposition import PCA

    F = res["coords"]
    return PCA(n_components=min(2, F.shape[1]), random_state=cfg.seed).fit_transform(F).astype(np.float32), "pc2d"


def _write_catalog(res: dict, cat: pd.DataFrame, cfg: ClusterConfig, run_dir: Path) -> Path:
    from galmo.core.catalog import write_catalog

    return write_catalog(catalog_frame(res, cat, cfg), run_dir / "cluster_catalog.parquet")


def catalog_frame(res: dict, cat: pd.DataFrame, cfg: ClusterConfig) -> pd.DataFrame:
    """The rows of cluster_catalog.parquet of the galaxies of ``res`` (:func:`groups_of`), ``cat`` their
    catalog rows (``--engine ray``: those of one shard)."""
    groups, agreement, member_labels = res["per_k"][int(cfg.k[0])]
    out = pd.DataFrame({"id": cat["id"].astype(str).to_numpy(), "group": groups, "agreement": agreement})
    for j, nm in enumerate(cfg.members):
        out[f"label_{nm}"] = member_labels[:, j]
    for kk in cfg.k[1:]:
        out[f"group_k{kk}"] = res["per_k"][int(kk)][0]
    coords, prefix = _coords(res, cfg)
    res["plot_coords"], res["prefix"] = coords, prefix
    for i in range(coords.shape[1]):
        out[f"{prefix}_{i + 1}"] = coords[:, i].astype(np.float32)
    for col in ("label", "label_name"):
        if col in cat.columns:
            out[col] = cat[col].to_numpy()
    return out


def _write_confusion(res: dict, cat: pd.DataFrame, src, run_dir: Path) -> None:
    """cluster_confusion.csv and its figure, when the source has classes."""
    from galmo import plots
    from galmo.core.catalog import write_catalog
    from galmo.core.metrics import contingency

    labels = cat["label"].to_numpy() if "label" in cat.columns else None
    if labels is None or not (labels >= 0).any():
        return
    groups = res["per_k"][next(iter(res["per_k"]))][0]
    table, gu, cu = contingency(groups, labels)
    names = list(getattr(src, "class_names", None) or [])
    col_names = [names[c] if c < len(names) else str(c) for c in cu]
    plots.confusion(table, run_dir / "figures" / "cluster_confusion.png", [f"group {g}" for g in gu], col_names,
                    title="groups × classes (classified galaxies)", normalize="row", xlabel="true class",
                    ylabel="group")
    conf_df = pd.DataFrame(table, columns=col_names)
    conf_df.insert(0, "group", gu)
    conf_df.insert(1, "majority", [col_names[i] for i in table.argmax(1)])
    conf_df.insert(2, "purity", table.max(1) / np.maximum(table.sum(1), 1))
    write_catalog(conf_df, run_dir / "cluster_confusion.csv", require_id=False)


def _write_figures(res: dict, cat: pd.DataFrame, src, cfg: ClusterConfig, run_dir: Path) -> None:
    """The map of the groups and one montage of up to 24 galaxies per group (and the unclassified)."""
    from galmo import plots

    fig_dir = run_dir / "figures"
    groups, coords, prefix = res["per_k"][int(cfg.k[0])][0], res["plot_coords"], res["prefix"]
    xy = coords[:, :2] if coords.shape[1] >= 2 else np.c_[coords[:, 0], np.zeros(len(coords))]
    plots.scatter_labels(xy, groups, fig_dir / "cluster_map.png", title=f"K={cfg.k[0]} groups (-1 = unclassified)",
                         xlabel=f"{prefix} 1", ylabel=f"{prefix} 2")
    for g in list(np.unique(groups[groups >= 0])) + [-1]:
        pos = np.flatnonzero(groups == g)
        if not len(pos):
            continue
        pick = np.sort(np.random.default_rng(cfg.seed).choice(pos, size=min(24, len(pos)), replace=False))
        name = "unclassified" if g < 0 else f"group_{g:02d}"
        titles = [str(cat["label_name"].iat[i])[:14] for i in pick] if "label_name" in cat.columns else None
        plots.montage(list(src.read(res["rows"][pick])), fig_dir / f"cluster_{name}.png", titles=titles, ncols=8,
                      suptitle=f"{name} ({len(pos)} galaxies)", cell=0.9)


def _write_morphology(src, res: dict, cfg: ClusterConfig, run_dir: Path) -> float | None:
    """statmorph on up to ``morph_per_group`` galaxies per group: cluster_morphology.parquet and the
    Gini–M20 and C–A figures. Returns the fraction of failed measurements."""
    from galmo import plots
    from galmo.core.catalog import write_catalog
    from galmo.morphology import lotz_class, measure_groups

    g_src = np.full(len(src.catalog), -1)
    g_src[res["rows"]] = res["per_k"][int(cfg.k[0])][0]
    mdf = measure_groups(src, g_src, per_group=cfg.morph_per_group, seed=cfg.seed, progress=cfg.progress)
    if not len(mdf):
        return None
    mdf.insert(1, "id", src.catalog["id"].astype(str).to_numpy()[mdf["pos"].to_numpy()])
    mdf["lotz_class"] = lotz_class(mdf["gini"], mdf["m20"])
    write_catalog(mdf.drop(columns=["pos"]), run_dir / "cluster_morphology.parquet")
    plots.gini_m20(mdf, run_dir / "figures" / "cluster_gini_m20.png", by="group",
                   title=f"Gini–M20 ({mdf.attrs.get('images', '')})")
    plots.concentration_asymmetry(mdf, run_dir / "figures" / "cluster_c_a.png", by="group")
    return float(mdf["gini"].isna().mean())


# ----------------------------------------------------------------------------------- studies
def features(X: np.ndarray, cfg: ClusterConfig, clean: np.ndarray | None = None, log=print) -> tuple:
    """The images → features part of :func:`make_pipeline` on images ``X`` held in memory (studies
    that reuse one feature set for several reductions, ``benchmarks/ablation_unsupervised.py``):
    (features (N, D), views (views, n, D) or None, their rows or None, info). ``info`` holds the
    fitted denoiser and, with ``clean`` — the noiseless images of the first ``len(clean)`` rows —
    its PSNR gain. The same stages and draws as the pipeline's (tested)."""
    from galmo.stages.invariant import features_and_views

    pipe = make_pipeline(cfg, n_fit=len(X))
    info: dict = {}
    Z = np.asarray(X, dtype=np.float32)
    den = pipe.named_steps["denoise"]
    if not isinstance(den, str):
        info["denoiser"] = den.fit(Z)
        Z = den.transform(Z)
        if clean is not None:
            info.update(den.psnr_gain(X[:len(clean)], clean))
            log(f"[cluster] denoiser: PSNR {info['psnr_noisy']:.2f} → {info['psnr_denoised']:.2f} dB")
    if cfg.invariant:
        inv = pipe.named_steps["invariant"]
        feat = inv.featurizer.fit(Z)
        F, V, idx = features_and_views(feat.transform, Z, cfg.views, cfg.views_max_fit, cfg.batch_size, cfg.seed)
        return F, V, idx, info
    from sklearn.pipeline import Pipeline

    feat = Pipeline([s for s in pipe.steps if s[0] in ("polar", "encode")]).fit(Z[:1])
    return np.concatenate([feat.transform(Z[s:s + cfg.batch_size]) for s in range(0, len(Z), cfg.batch_size)]), \
        None, None, info


def cluster_features(F: np.ndarray, cfg: ClusterConfig, views=None, view_index=None) -> tuple:
    """The features → groups part of :func:`make_pipeline` on features of :func:`features`:
    (VotingClustering, the reduction or None, its coordinates, GraphEmbedding or None)."""
    from galmo.stages import InvariantProjection

    pipe = make_pipeline(cfg, n_fit=len(F))
    if cfg.invariant:
        if views is None:
            raise GalmoError("the invariant projection needs the features of augmented views (views=...)")
        red = InvariantProjection(n_components=cfg.invariant_components, reg=cfg.invariant_reg).fit(
            F[np.asarray(view_index)], views=views)
    else:
        red = pipe.named_steps["pca"]
        red = None if isinstance(red, str) else red.fit(F)
    P = red.transform(F) if red is not None else np.asarray(F, dtype=np.float32)
    ge = pipe.named_steps["graph"]
    ge = None if isinstance(ge, str) else ge
    Q = ge.fit_transform(P) if ge is not None else P
    return pipe.named_steps["cluster"].fit(Q), red, P, ge


# ----------------------------------------------------------------------------------- demo
def demo_section(run_dir, source, quick: bool = False) -> dict:
    """The demo's cluster section on ``source`` (the default sims): K=20, the recommended stages (no
    denoiser), run in ``run_dir/cluster/`` (its own config.json, so ``galmo run`` re-runs it)."""
    from galmo.methods.unsupervised.report import SUBFOLDER, section

    out = str(Path(run_dir) / SUBFOLDER)
    if quick:
        n = min(len(source), 300)
        sub = source.take(np.sort(np.random.default_rng(0).choice(len(source), size=n, replace=False)))
        cfg = ClusterConfig(out=out, k=(10,), image_size=(64,), denoise_epochs=2, denoise_max_train=300,
                            morph_per_group=1, progress=False)
        metrics = run_cluster(cfg, src=sub)
    else:
        cfg = ClusterConfig(data=str(source.path), out=out, k=(20,), denoise_max_train=1500, morph_per_group=6,
                            progress=True)
        metrics = run_cluster(cfg, src=source)
    section(run_dir)
    return metrics
