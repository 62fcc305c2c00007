"""Unsupervised morphology groups: eUML (2024) — denoise, adaptive polar unwrap, pretrained CNN
features, automatic PCA, voting clustering — with the fixes and additions described in
``docs/unsupervised.md`` (by default an invariant projection learnt from augmented views replaces
the PCA, and the members vote on a spectral embedding of the k-NN graph).

Library::

    from galmo.methods.unsupervised.run import make_pipeline, run_cluster
    pipe = make_pipeline(k=20)                 # an sklearn Pipeline of galmo.stages + VotingClustering
    groups = pipe.fit_predict(images)          # float32 (N, C, H, W) in [0, 1]
    metrics = run_cluster(src, "runs/x", k=20) # everything the ``galmo cluster`` verb writes

CLI: ``galmo cluster --data SOURCE --k 20 --out runs/NAME [--denoise --no-polar --no-invariant --no-graph --views N
--backbone NAME --weights FILE --min-agree m --device auto --on-error skip]``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import GalmoError

from galmo.methods.unsupervised.config import DEFAULT_FEATURES, DEFAULTS, FEATURE_PRESETS  # noqa: F401


def encoding_options(features: str = DEFAULT_FEATURES, size=None, radial=None, layer=None, pool=None) -> dict:
    """The preset ``features`` with any explicitly given option replacing its value; ``layer`` may be
    an int, a digit string or "final"; ``size`` an int, or a list of one or two ints."""
    if features not in FEATURE_PRESETS:
        raise GalmoError(f"--features must be one of {', '.join(FEATURE_PRESETS)}, got {features!r}")
    opts = dict(FEATURE_PRESETS[features])
    if size is not None:
        size = [size] if np.isscalar(size) else list(size)
        if len(size) not in (1, 2) or min(size) < 16:
            raise GalmoError(f"--size takes one or two numbers ≥ 16 (square, or HEIGHT WIDTH), got {size}")
        opts["size"] = int(size[0]) if len(size) == 1 else (int(size[0]), int(size[1]))
    if radial is not None:
        opts["radial"] = radial
    if pool is not None:
        opts["pool"] = pool
    if layer is not None:
        parts = [str(p).strip() for p in (layer.strip("()[] ").split(",") if isinstance(layer, str) else
                                          ([layer] if np.isscalar(layer) else list(layer)))]
        if len(parts) == 1 and str(parts[0]).lower() == "final":
            opts["layer"] = None
        elif parts and all(str(p).isdigit() for p in parts):
            blocks = sorted({int(p) for p in parts})  # timm returns the maps in block order, once each
            opts["layer"] = blocks[0] if len(blocks) == 1 else tuple(blocks)
        else:
            raise GalmoError(f"--layer must be a block number, several separated by commas (3,4,5) or 'final', "
                             f"got {layer!r}")
    return opts


def encoder_size(size, polar: bool):
    """The encoder input for these stages: ``size`` as given, except that a non-square (h, w) — the
    shape meant for the unwrapped image — becomes, without the unwrap, the square with the same
    number of pixels (the image stays square instead of being stretched)."""
    if not polar and size is not None and not np.isscalar(size) and size[0] != size[1]:
        return int(round(np.sqrt(size[0] * size[1])))
    return size


# ----------------------------------------------------------------------------------- composition
def make_pipeline(k=20, denoise: bool = True, polar: bool = True, pca: bool = True,
                  backbone: str = "tf_efficientnet_lite0", weights: str | None = "offline", size=(64, 252),
                  min_agree: int | None = None, members=("kmeans", "agglomerative", "birch"), bagging: int = 0,
                  pca_variance: float = 0.9, whiten: bool = False, standardize: bool = True, denoise_epochs: int = 4,
                  graph: bool = DEFAULTS["graph"], graph_components: int = DEFAULTS["graph_components"],
                  graph_neighbors: int = DEFAULTS["graph_neighbors"],
                  radial: str = "log", layer=FEATURE_PRESETS["texture"]["layer"], pool: str = "meanstd",
                  invariant: bool = True,
                  views: int = DEFAULTS["views"], views_max_fit: int = DEFAULTS["views_max_fit"],
                  invariant_components: int = DEFAULTS["invariant_components"],
                  invariant_reg: float = DEFAULTS["invariant_reg"],
                  seed: int = 0, device: str = "auto", run_dir=None, progress: bool = False):
    """The method as ``Pipeline([denoise, polar, encode, pca, graph, cluster])``; a disabled stage is
    ``"passthrough"``. With ``invariant`` (the default) polar + encode are one ``invariant`` step that
    ends in the projection learnt from augmented views (:class:`galmo.stages.InvariantFeatures`), in
    place of PCA (``pca``, ``pca_variance``, ``whiten`` and ``standardize`` then do nothing). The
    encoding defaults are the "texture" preset; ``radial="linear", layer=None, pool="avg", size=160,
    invariant=False, graph=False`` give the paper's. (The Pipeline draws exactly ``views_max_fit``
    galaxies for the views; :func:`run_cluster` draws each with that probability while streaming.)"""
    from sklearn.pipeline import Pipeline

    from galmo.stages.voting import VotingClustering
    from galmo.stages import AutoPCA, Denoiser, Encoder, GraphEmbedding, InvariantFeatures, PolarUnwrap

    featurizer = [("polar", PolarUnwrap(radial=radial) if polar else "passthrough"),
                  ("encode", Encoder(backbone=backbone, weights=weights, size=encoder_size(size, polar), device=device,
                                     progress=progress, layer=layer, pool=pool))]
    if invariant:
        reduce = [("invariant", InvariantFeatures(Pipeline(featurizer), views=views, max_fit=views_max_fit,
                                                  n_components=invariant_components, reg=invariant_reg,
                                                  random_state=seed))]
    else:
        reduce = featurizer + [("pca", AutoPCA(variance=pca_variance, standardize=standardize, whiten=whiten,
                                               random_state=seed) if pca else "passthrough")]
    return Pipeline([
        ("denoise", Denoiser(epochs=denoise_epochs, widths=(16, 32), seed=seed, device=device,
                             run_dir=None if run_dir is None else Path(run_dir) / "denoiser", progress=progress)
         if denoise else "passthrough"),
        *reduce,
        ("graph", GraphEmbedding(n_components=graph_components, n_neighbors=graph_neighbors, random_state=seed)
         if graph else "passthrough"),
        ("cluster", VotingClustering(n_clusters=k, members=members, min_agree=min_agree, bagging=bagging,
                                     random_state=seed, progress=progress)),
    ])


def clean_display(src, pos: np.ndarray) -> np.ndarray | None:
    """The noise-free version of the ``image`` kind for rows ``pos`` (sims: the noiseless fluxes
    through the same Legacy-Survey composite as the stored images), or None."""
    if "noiseless" not in getattr(src, "kinds", ()):
        return None
    from galmo.core.transforms import legacy_rgb

    bands = tuple(src.bands) if len(src.bands) == 3 else ("g", "r", "z")
    flux = src.read(pos, kind="noiseless")
    if "pxscale" in src.catalog.columns:  # the simulator composites flux per native 0.262" pixel
        scale = src.catalog["pxscale"].to_numpy(dtype=np.float32)[np.asarray(pos)]
        flux = flux * ((0.262 / scale) ** 2)[:, None, None, None]
    rgb = legacy_rgb(flux, bands=bands)  # (N, H, W, 3) RGB
    rgb = np.round(rgb * 255) / 255  # the stored composites are uint8
    return np.moveaxis(rgb[..., ::-1], -1, 1).astype(np.float32)  # planes in band order (B, G, R)


class _ArraySource:
    """Images already in memory, with the batch-reading interface :func:`stream_features` uses."""

    def __init__(self, X: np.ndarray):
        self._X, self.path = X, None

    def __len__(self):
        return len(self._X)

    def iter_batches(self, batch_size=256, kind="image", progress=False):
        for s in range(0, len(self._X), batch_size):
            yield np.arange(s, min(s + batch_size, len(self._X))), self._X[s:s + batch_size]


def features(X: np.ndarray, denoise: bool = False, polar: bool = True, backbone: str = "tf_efficientnet_lite0",
             weights: str | None = "offline", size=(64, 252), denoise_epochs: int = 4,
             denoise_max_train: int = 3000, seed: int = 0, device: str = "auto", run_dir=None,
             progress: bool = False, clean: np.ndarray | None = None, radial: str = "log",
             layer=FEATURE_PRESETS["texture"]["layer"], pool: str = "meanstd", views: int = 0,
             views_max_fit: int = 3000, log=print) -> tuple[np.ndarray, dict]:
    """Stages 1–3 on images ``X`` held in memory (studies that reuse one image set): the same stages
    as :func:`stream_features`. Returns (features (N, D), info with timings, stage objects and, with
    ``clean`` — the noiseless images of the first ``len(clean)`` rows — the denoiser's PSNR)."""
    _, F, info = stream_features(_ArraySource(np.asarray(X, dtype=np.float32)), denoise=denoise, polar=polar,
                                 backbone=backbone, weights=weights, size=size, denoise_epochs=denoise_epochs,
                                 denoise_max_train=denoise_max_train, seed=seed, device=device, run_dir=run_dir,
                                 progress=progress, radial=radial, layer=layer, pool=pool, views=views,
                                 views_max_fit=views_max_fit)
    if denoise and clean is not None:
        from galmo.core.metrics import psnr

        m = len(clean)
        info["psnr_noisy"] = psnr(X[:m], clean, 1.0)
        info["psnr_denoised"] = psnr(info["denoiser"].transform(X[:m]), clean, 1.0)
        info["psnr_gain"] = info["psnr_denoised"] - info["psnr_noisy"]
        log(f"[cluster] denoiser: PSNR {info['psnr_noisy']:.2f} → {info['psnr_denoised']:.2f} dB "
            f"({info['psnr_gain']:+.2f} dB vs the noiseless images)")
    return F, info


def stream_features(src, denoise: bool = False, polar: bool = True, backbone: str = "tf_efficientnet_lite0",
                    weights: str | None = "offline", size=(64, 252), denoise_epochs: int = 4,
                    denoise_max_train: int = 3000, seed: int = 0, device: str = "auto", run_dir=None,
                    progress: bool = False, radial: str = "log", layer=FEATURE_PRESETS["texture"]["layer"],
                    pool: str = "meanstd", batch_size: int = 512, views: int = 0,
                    views_max_fit: int = 3000) -> tuple[np.ndarray, np.ndarray, dict]:
    """Stages 1–3 over a source batch by batch: (readable row positions, features (N, D), info).

    Only the features are kept, never the images, so memory grows with N × D (896 floats per galaxy
    with the texture preset), not with N × C × H × W. The denoiser, when asked for, is first fitted on
    a random subsample of about ``denoise_max_train`` galaxies drawn during one extra pass.
    ``views`` > 0: for a random subsample of about ``views_max_fit`` galaxies (each row drawn with
    probability views_max_fit / N), also the features of ``views`` augmented copies
    (:meth:`galmo.nn.augment.AugmentConfig.observing`, after the denoiser and before the unwrap,
    encoded in full batches), in ``info["views"]`` (views, n, D) with their rows of the features in
    ``info["view_index"]`` — what :class:`galmo.stages.InvariantProjection` is fitted on.
    """
    from galmo.stages import Denoiser, Encoder, PolarUnwrap

    info: dict = {"timings_s": {"read": 0.0, "denoise": 0.0, "polar": 0.0, "encode": 0.0}}
    den = None
    if denoise:
        t = time.perf_counter()
        rng = np.random.default_rng(seed)
        frac = min(1.0, denoise_max_train / max(1, len(src)))
        sample = [imgs[rng.random(len(pos)) < frac] for pos, imgs in
                  src.iter_batches(batch_size=batch_size, kind="image", progress=False)]
        train = np.concatenate(sample) if sample else None
        if train is None or not len(train):
            raise GalmoError("no readable images in the source", path=getattr(src, "path", None))
        den = Denoiser(epochs=denoise_epochs, widths=(16, 32), seed=seed, device=device, progress=progress,
                       run_dir=None if run_dir is None else Path(run_dir) / "denoiser").fit(train)
        del train, sample
        info["denoiser"] = den
        info["timings_s"]["denoise"] += time.perf_counter() - t
    pu = PolarUnwrap(radial=radial) if polar else None
    enc = Encoder(backbone=backbone, weights=weights, size=encoder_size(size, polar), device=device,
                  layer=layer, pool=pool).fit()
    rows, feats, view_feats, view_index = [], [], [], []
    if views:
        import torch

        from galmo.stages import augmented_features

        view_rng = np.random.default_rng([seed, 1])
        view_gen = torch.Generator().manual_seed(int(seed))
        view_frac = min(1.0, views_max_fit / max(1, len(src)))
        n_done, view_buf = 0, []

        def encode_views():
            t_v = time.perf_counter()
            imgs = np.concatenate(view_buf)
            view_buf.clear()
            view_feats.append(augmented_features(
                imgs, lambda A: enc.transform(pu.transform(A) if pu is not None else A), views, view_gen))
            info["timings_s"]["views"] = info["timings_s"].get("views", 0.0) + time.perf_counter() - t_v
    t = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(src), unit="img", desc="features", leave=False)
    for pos, Z in src.iter_batches(batch_size=batch_size, kind="image", progress=False):
        info["timings_s"]["read"] += time.perf_counter() - t
        if den is not None:
            t = time.perf_counter()
            Z = den.transform(Z)
            info["timings_s"]["denoise"] += time.perf_counter() - t
        if views:  # copies of a subsample of the (denoised) images go through the remaining stages
            pick = np.flatnonzero(view_rng.random(len(Z)) < view_frac)
            if len(pick):
                view_index.append(n_done + pick)
                view_buf.append(np.asarray(Z[pick], dtype=np.float32))
                if sum(len(b) for b in view_buf) >= batch_size:  # encode views in full batches
                    encode_views()
            n_done += len(pos)
        for stage, fn in (("polar", pu.transform if pu is not None else None), ("encode", enc.transform)):
            if fn is not None:
                t = time.perf_counter()
                Z = fn(Z)
                info["timings_s"][stage] += time.perf_counter() - t
        rows.append(np.asarray(pos))
        feats.append(np.asarray(Z, dtype=np.float32))
        if bar is not None:
            bar.update(len(pos))
        t = time.perf_counter()
    if views and view_buf:
        encode_views()
    if bar is not None:
        bar.close()
    if not rows:
        raise GalmoError("no readable images in the source", path=getattr(src, "path", None))
    info["encoder"], info["polar"] = enc, pu
    if views:
        if not view_index:  # only possible with a views_max_fit far below the source's size
            raise GalmoError("no galaxies were drawn for the augmented views", path=getattr(src, "path", None))
        info["views"] = np.concatenate(view_feats, axis=1)
        info["view_index"] = np.concatenate(view_index)
    info["timings_s"] = {k: v for k, v in info["timings_s"].items() if v > 0 or k == "encode"}
    return np.concatenate(rows), np.concatenate(feats), info


def cluster_features(F: np.ndarray, k=20, pca: bool = True, pca_variance: float = 0.9, whiten: bool = False,
                     standardize: bool = True,
                     min_agree: int | None = None, members=("kmeans", "agglomerative", "birch"), bagging: int = 0,
                     graph: bool = DEFAULTS["graph"], graph_components: int = DEFAULTS["graph_components"],
                     graph_neighbors: int = DEFAULTS["graph_neighbors"],
                     invariant: bool = False, views: np.ndarray | None = None, view_index: np.ndarray | None = None,
                     invariant_components: int = DEFAULTS["invariant_components"],
                     invariant_reg: float = DEFAULTS["invariant_reg"],
                     seed: int = 0, progress: bool = False):
    """Stages 4–5 (and the optional graph embedding): (VotingClustering, the reduction — an
    InvariantProjection when ``invariant``, fitted on ``views`` of the galaxies ``F[view_index]``
    (:func:`stream_features`), else an AutoPCA, or None —, its coordinates (or the features
    without one), GraphEmbedding or None)."""
    from galmo.stages.voting import VotingClustering
    from galmo.stages import AutoPCA, GraphEmbedding, InvariantProjection

    if invariant:
        if views is None:
            raise GalmoError("the invariant projection needs the features of augmented views (views=...)")
        fit_on = F if view_index is None else F[np.asarray(view_index)]
        red = InvariantProjection(n_components=invariant_components, reg=invariant_reg).fit(fit_on, views=views)
    elif pca:
        red = AutoPCA(variance=pca_variance, standardize=standardize, whiten=whiten, random_state=seed).fit(F)
    else:
        red = None
    P = red.transform(F) if red is not None else np.asarray(F, dtype=np.float32)
    if graph and len(F) <= max(graph_neighbors, graph_components + 1):  # a tiny sample: a smaller graph
        graph_neighbors, graph_components = max(2, len(F) - 1), max(1, min(graph_components, len(F) - 2))
    ge = GraphEmbedding(n_components=graph_components, n_neighbors=graph_neighbors, random_state=seed) if graph else None
    Q = ge.fit_transform(P) if ge is not None else P
    vc = VotingClustering(n_clusters=k, members=members, min_agree=min_agree, bagging=bagging,
                          random_state=seed, progress=progress).fit(Q)
    return vc, red, P, ge


def score(vc, labels: np.ndarray | None) -> dict:
    """Fraction classified per K and, with labels, purity/NMI/ARI of the classified galaxies per K."""
    from galmo.core.metrics import clustering_scores

    out = {}
    for k, r in vc.per_k_.items():
        d = {"fraction_classified": r["fraction_classified"], "n_classified": int((r["labels"] >= 0).sum()),
             "n_groups_used": int(len(np.unique(r["labels"][r["labels"] >= 0])))}
        if labels is not None and (labels >= 0).any():
            d.update(clustering_scores(r["labels"], labels))
            # the members' own quality (all galaxies, no voting), for comparison
            for j, nm in enumerate(vc.member_names_):
                d[f"{nm}_nmi_all"] = clustering_scores(r["member_labels"][:, j], labels)["nmi"]
        out[int(k)] = d
    return out


# ----------------------------------------------------------------------------------- the run
def run_cluster(src, run_dir, k=20, denoise: bool = False, polar: bool = True, pca: bool = True,
                backbone: str = "tf_efficientnet_lite0", weights: str | None = "offline", size=(64, 252),
                min_agree: int | None = None, members=("kmeans", "agglomerative", "birch"), bagging: int = 0,
                pca_variance: float = 0.9, whiten: bool = False, standardize: bool = True, denoise_epochs: int = 4,
                denoise_max_train: int = 3000, graph: bool = DEFAULTS["graph"],
                graph_components: int = DEFAULTS["graph_components"],
                graph_neighbors: int = DEFAULTS["graph_neighbors"],
                morphology: bool = True, morph_per_group: int = 20, seed: int = 0,
                radial: str = "log", layer=FEATURE_PRESETS["texture"]["layer"], pool: str = "meanstd",
                invariant: bool = True,
                views: int = DEFAULTS["views"], views_max_fit: int = DEFAULTS["views_max_fit"],
                invariant_components: int = DEFAULTS["invariant_components"],
                invariant_reg: float = DEFAULTS["invariant_reg"],
                device: str = "auto", progress: bool = True, report: bool = True, log=print) -> dict:
    """Run the whole method on ``src`` and write the run folder (see the module docstring)."""
    from galmo import plots
    from galmo.core.catalog import write_catalog
    from galmo.core.io import write_json
    from galmo.core.metrics import contingency
    from galmo.report import add_section, build_report

    ks = [int(k)] if np.isscalar(k) else [int(x) for x in k]
    run_dir = Path(run_dir)
    fig_dir = run_dir / "figures"
    run_dir.mkdir(parents=True, exist_ok=True)
    size = encoder_size(size, polar)  # what the encoder really gets is what is recorded
    config = {"command": "cluster", "source": str(getattr(src, "path", "")), "k": ks, "denoise": denoise,
              "polar": polar, "pca": None if invariant else pca, "backbone": backbone, "weights": weights, "size": size,
              "min_agree": min_agree, "members": list(members), "bagging": bagging,
              "pca_variance": None if invariant else pca_variance, "whiten": None if invariant else whiten,
              "standardize": None if invariant else standardize, "denoise_epochs": denoise_epochs, "graph": graph,
              "graph_components": graph_components, "graph_neighbors": graph_neighbors, "seed": seed,
              "radial": radial, "layer": layer, "pool": pool, "invariant": invariant,
              "views": views if invariant else 0, "views_max_fit": views_max_fit if invariant else None,
              "invariant_components": invariant_components if invariant else None,
              "invariant_reg": invariant_reg if invariant else None}
    if invariant and (views < 1 or views_max_fit < 3 or not invariant_reg > 0 or invariant_components < 1):
        raise GalmoError(f"the invariant projection needs views ≥ 1, views_max_fit ≥ 3, invariant_reg > 0 and "
                         f"invariant_components ≥ 1; got {views}, {views_max_fit}, {invariant_reg}, "
                         f"{invariant_components}")
    write_json(run_dir / "config.json", config)
    t0 = time.perf_counter()
    rows, F, info = stream_features(src, denoise=denoise, polar=polar, backbone=backbone, weights=weights,
                                    size=size, denoise_epochs=denoise_epochs, denoise_max_train=denoise_max_train,
                                    seed=seed, device=device, run_dir=run_dir, progress=progress, radial=radial,
                                    layer=layer, pool=pool, views=views if invariant else 0,
                                    views_max_fit=views_max_fit)
    if len(rows) < max(ks):
        raise GalmoError(f"{len(rows)} readable galaxies: too few for K={max(ks)} groups", path=src.path)
    if getattr(src, "rejected", None):
        from galmo.sources import write_rejected

        write_rejected(src, run_dir)
        log(f"[cluster] skipped {len(src.rejected)} bad items (rejected.csv)")
    cat = src.catalog.iloc[rows].reset_index(drop=True)
    labels = cat["label"].to_numpy() if "label" in cat.columns else None
    if denoise and "noiseless" in getattr(src, "kinds", ()):
        from galmo.core.metrics import psnr

        pick = np.sort(np.random.default_rng(seed).choice(len(rows), size=min(500, len(rows)), replace=False))
        ref, Xp = clean_display(src, rows[pick]), src.read(rows[pick])
        den = info["denoiser"].transform(Xp)
        info["psnr_noisy"], info["psnr_denoised"] = psnr(Xp, ref, 1.0), psnr(den, ref, 1.0)
        info["psnr_gain"] = info["psnr_denoised"] - info["psnr_noisy"]
        log(f"[cluster] denoiser: PSNR {info['psnr_noisy']:.2f} → {info['psnr_denoised']:.2f} dB "
            f"({info['psnr_gain']:+.2f} dB against the noiseless images, {len(pick)} galaxies)")
    t = time.perf_counter()
    vc, ap, P, ge = cluster_features(F, k=ks, pca=pca, pca_variance=pca_variance, whiten=whiten,
                                     standardize=standardize, min_agree=min_agree, members=members, bagging=bagging,
                                     graph=graph, graph_components=graph_components, graph_neighbors=graph_neighbors,
                                     invariant=invariant, views=info.get("views"), view_index=info.get("view_index"),
                                     invariant_components=invariant_components, invariant_reg=invariant_reg,
                                     seed=seed, progress=progress)
    info["timings_s"]["cluster"] = time.perf_counter() - t
    per_k = score(vc, labels)
    groups = vc.labels_
    # ---- catalog
    out = pd.DataFrame({"id": cat["id"].astype(str).to_numpy(), "group": groups, "agreement": vc.agreement_})
    for j, nm in enumerate(vc.member_names_):
        out[f"label_{nm}"] = vc.member_labels_[:, j]
    for kk in ks[1:]:
        out[f"group_k{kk}"] = vc.per_k_[kk]["labels"]
    coords = P if ap is not None else _pca2(P, seed)
    prefix = "pc2d" if ap is None else ("inv" if invariant else "pca")
    for i in range(coords.shape[1]):
        out[f"{prefix}_{i + 1}"] = coords[:, i].astype(np.float32)
    for col in ("label", "label_name"):
        if col in cat.columns:
            out[col] = cat[col].to_numpy()
    cat_path = write_catalog(out, run_dir / "cluster_catalog.parquet")
    # ---- metrics
    k0 = ks[0]
    metrics = {"n": int(len(rows)), "k": k0, "members": vc.member_names_,
               "min_agree": vc.min_agree or vc.n_members_, **per_k[k0],
               "fraction_classified_by_k": {str(kk): per_k[kk]["fraction_classified"] for kk in ks},
               "pca_components": int(ap.n_components_) if ap is not None and not invariant else None,
               "pca_variance_kept": float(ap.explained_variance_kept_) if ap is not None and not invariant else None,
               "invariant_components": int(ap.n_components_) if invariant else None,
               "invariant_views": f"{views} views of {len(info['view_index'])} galaxies" if invariant else None,
               "invariant_n_views": views if invariant else None,
               "invariant_n_fit": int(len(info["view_index"])) if invariant else None,
               "invariant_ratio": [round(float(v), 3) for v in ap.ratio_] if invariant else None,
               "stages": {"denoise": denoise, "polar": polar, "invariant": invariant, "pca": pca and not invariant,
                          "graph": graph},
               "graph_fitted_on": int(ge.n_fit_) if ge is not None else None,
               "by_k": {str(kk): v for kk, v in per_k.items()}}
    for key in ("psnr_noisy", "psnr_denoised", "psnr_gain"):
        if key in info:
            metrics[key] = float(info[key])
    log(f"[cluster] K={k0}: {metrics['fraction_classified']:.1%} classified"
        + (f", purity {metrics['purity']:.3f}, NMI {metrics['nmi']:.3f}, ARI {metrics['ari']:.3f}"
           if "purity" in metrics else ""))
    # ---- figures
    figures, captions = [], []
    xy = coords[:, :2] if coords.shape[1] >= 2 else np.c_[coords[:, 0], np.zeros(len(coords))]
    figures.append(plots.scatter_labels(xy, groups, fig_dir / "cluster_map.png",
                                        title=f"K={k0} groups (-1 = unclassified)", xlabel=f"{prefix} 1",
                                        ylabel=f"{prefix} 2"))
    captions.append(f"galaxies on the first two {'invariant' if invariant else 'principal'} components, coloured by "
                    "group (-1: members disagree)")
    conf_df = None
    if labels is not None and (labels >= 0).any():
        table, gu, cu = contingency(groups, labels)
        names = list(getattr(src, "class_names", None) or [])
        col_names = [names[c] if c < len(names) else str(c) for c in cu]
        figures.append(plots.confusion(table, fig_dir / "cluster_confusion.png", [f"group {g}" for g in gu],
                                       col_names, title="groups × classes (classified galaxies)", normalize="row",
                                       xlabel="true class", ylabel="group"))
        captions.append("contingency of groups and true classes; colour = fraction of the group")
        conf_df = pd.DataFrame(table, columns=col_names)
        conf_df.insert(0, "group", gu)
        conf_df.insert(1, "majority", [col_names[i] for i in table.argmax(1)])
        conf_df.insert(2, "purity", table.max(1) / np.maximum(table.sum(1), 1))
        write_catalog(conf_df, run_dir / "cluster_confusion.csv", require_id=False)
    montage_paths = []
    for g in list(np.unique(groups[groups >= 0])) + [-1]:
        pos = np.flatnonzero(groups == g)
        if not len(pos):
            continue
        pick = np.sort(np.random.default_rng(seed).choice(pos, size=min(24, len(pos)), replace=False))
        name = "unclassified" if g < 0 else f"group_{g:02d}"
        titles = [str(cat["label_name"].iat[i])[:14] for i in pick] if "label_name" in cat.columns else None
        montage_paths.append(plots.montage(list(src.read(rows[pick])), fig_dir / f"cluster_{name}.png",
                                           titles=titles, ncols=8,
                                           suptitle=f"{name} ({len(pos)} galaxies)", cell=0.9))
    # ---- morphology
    med = None
    if morphology:
        from galmo.morphology import group_medians, lotz_class, measure_groups

        t = time.perf_counter()
        g_src = np.full(len(src.catalog), -1)
        g_src[rows] = groups
        mdf = measure_groups(src, g_src, per_group=morph_per_group, seed=seed, progress=progress)
        info["timings_s"]["morphology"] = time.perf_counter() - t
        if len(mdf):
            mdf.insert(1, "id", src.catalog["id"].astype(str).to_numpy()[mdf["pos"].to_numpy()])
            mdf["lotz_class"] = lotz_class(mdf["gini"], mdf["m20"])
            write_catalog(mdf.drop(columns=["pos"]), run_dir / "cluster_morphology.parquet")
            med = group_medians(mdf)
            figures.append(plots.gini_m20(mdf, fig_dir / "cluster_gini_m20.png", by="group",
                                          title=f"Gini–M20 ({mdf.attrs.get('images', '')})"))
            captions.append(f"up to {morph_per_group} galaxies per group on the Gini–M20 plane; "
                            "lines: Lotz et al. (2008)")
            figures.append(plots.concentration_asymmetry(mdf, fig_dir / "cluster_c_a.png", by="group"))
            captions.append("concentration–asymmetry plane; dashed: A = 0.35 (Conselice 2003)")
            metrics["morphology_failed_fraction"] = float(mdf["gini"].isna().mean())
    metrics["timings_s"] = {k2: round(v, 2) for k2, v in info["timings_s"].items()}
    metrics["timings_s"]["total"] = round(time.perf_counter() - t0, 2)
    write_json(run_dir / "metrics.json", metrics)
    if report:
        body = _report_body(metrics, per_k, conf_df, med, cat_path, config)
        add_section(run_dir, "cluster", "Unsupervised groups (voting clustering after eUML)", body,
                    figures + montage_paths,
                    captions + [f"montage: {Path(p).stem.replace('cluster_', '')}" for p in montage_paths])
        build_report(run_dir)
    return metrics


def _pca2(F: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=min(2, F.shape[1]), random_state=seed).fit_transform(F).astype(np.float32)


def _report_body(metrics: dict, per_k: dict, conf_df, med, cat_path, config) -> str:
    from galmo.report import metrics_html, table_html

    stages = ", ".join(f"{s} {'on' if v else 'off'}" for s, v in metrics["stages"].items())
    head = {k: metrics[k] for k in ("n", "k", "min_agree", "fraction_classified", "n_classified", "purity", "nmi",
                                     "ari", "invariant_components", "invariant_views", "pca_components",
                                     "pca_variance_kept", "psnr_noisy", "psnr_denoised",
                                     "psnr_gain") if k in metrics and metrics[k] is not None}
    enc = (f"{'log' if config.get('radial') == 'log' else 'linear'}-polar unwrap, " if config.get("polar") else "")
    lay = config.get("layer")
    layer = ("final features" if lay is None else f"intermediate feature map {lay}" if np.isscalar(lay)
             else f"intermediate feature maps {', '.join(str(v) for v in lay)}")
    reduced = (f", reduced to {metrics['invariant_components']} invariant components learnt from "
               f"{metrics['invariant_views']}" if metrics.get("invariant_components") else "")
    size = config["size"]
    size = "native" if size is None else (size if np.isscalar(size) else "×".join(str(v) for v in size))
    body = (f"<p>Stages: {stages}; {enc}backbone {config['backbone']} at {size} px, {layer} pooled by "
            f"{config.get('pool', 'avg')}{reduced}; members "
            f"{', '.join(metrics['members'])} (Hungarian-aligned). A galaxy is <em>classified</em> when at "
            f"least {metrics['min_agree']} of {len(metrics['members'])} members put it in the same group; "
            f"purity/NMI/ARI are over the classified galaxies (purity: majority true class per group). "
            f"Catalog: <code>{Path(cat_path).name}</code>.</p>")
    body += metrics_html(head)
    if len(per_k) > 1:
        body += "<h3>Fraction classified per K</h3>" + table_html(
            pd.DataFrame([{"K": k, **{c: v for c, v in d.items() if c in ("fraction_classified", "n_classified",
                                                                            "purity", "nmi", "ari")}}
                          for k, d in per_k.items()]))
    if conf_df is not None:
        body += "<h3>Groups × true classes</h3>" + table_html(conf_df)
    if med is not None:
        body += ("<h3>Morphology per group (medians of a sample)</h3><p>statmorph on the r-band flux where the "
                 "source has it; NaN where statmorph flagged the measurement as bad.</p>" + table_html(med))
    return body


# ----------------------------------------------------------------------------------- demo
def demo_section(run_dir, source, quick: bool = False) -> dict:
    """The demo's cluster section on ``source`` (the default sims): K=20, the recommended stages (no denoiser)."""
    if quick:
        n = min(len(source), 300)
        sub = _Subset(source, np.sort(np.random.default_rng(0).choice(len(source), size=n, replace=False)))
        return run_cluster(sub, run_dir, k=10, size=64, denoise_epochs=2, denoise_max_train=300,
                           morph_per_group=1, progress=False, report=True)
    return run_cluster(source, run_dir, k=20, denoise_epochs=DEFAULTS["denoise_epochs"],
                       denoise_max_train=1500, morph_per_group=6, progress=True, report=True)


class _Subset:
    """Rows ``pos`` of a source, with the Source reading interface the pipeline uses."""

    def __init__(self, src, pos):
        self._src, self._pos = src, np.asarray(pos)
        self.catalog = src.catalog.iloc[self._pos].reset_index(drop=True)
        self.path, self.bands, self.kinds = src.path, src.bands, src.kinds
        self.class_names, self.rejected = src.class_names, []

    def __len__(self):
        return len(self._pos)

    def read(self, idx, kind="image"):
        return self._src.read(self._pos[np.asarray(idx)], kind=kind)

    def iter_batches(self, batch_size=256, kind="image", progress=False):
        for s in range(0, len(self._pos), batch_size):
            idx = np.arange(s, min(s + batch_size, len(self._pos)))
            yield idx, self.read(idx, kind)
