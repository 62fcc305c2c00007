"""``galmo cluster``: the unsupervised method's verb."""

from __future__ import annotations

import argparse
from pathlib import Path

from galmo.core.errors import GalmoError
from galmo.methods.unsupervised.config import DEFAULT_FEATURES, DEFAULTS, FEATURE_PRESETS


def register(sub) -> None:
    from galmo.cli import add_common

    p = sub.add_parser("cluster", help="unsupervised morphology groups (eUML voting clustering)")
    p.add_argument("--data", required=True, help="image source (HDF5, FITS, folder, catalog; see galmo info)")
    p.add_argument("--k", type=int, nargs="+", default=[20], help="number of groups; several K → one fit each "
                   "(fraction classified reported per K; the first K fills the catalog)")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--denoise", action="store_true",
                   help="run eUML's autoencoder denoiser first (off by default: on the sims it lowers purity, "
                        "see docs/unsupervised.md)")
    p.add_argument("--no-polar", action="store_true", help="skip the adaptive polar unwrap")
    p.add_argument("--no-invariant", action="store_true",
                   help="reduce the features by PCA (eUML) instead of the invariant projection learnt from "
                        "augmented views of the galaxies (the default; docs/unsupervised.md)")
    p.add_argument("--views", type=int, default=DEFAULTS["views"],
                   help="augmented views per galaxy for the invariant projection")
    p.add_argument("--views-max-fit", type=int, default=DEFAULTS["views_max_fit"],
                   help="galaxies (a random subsample) whose views fit the invariant projection")
    p.add_argument("--invariant-components", type=int, default=DEFAULTS["invariant_components"],
                   help="directions kept by the invariant projection (at most one fewer than the galaxies fitted)")
    p.add_argument("--invariant-reg", type=float, default=DEFAULTS["invariant_reg"],
                   help="ridge added to the nuisance covariance (standardised features)")
    p.add_argument("--no-pca", action="store_true", help="with --no-invariant: cluster the encoder features "
                   "without PCA")
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, default=DEFAULTS["graph"],
                   help="cluster a spectral embedding of the k-NN graph of the reduced features (default; "
                        "--no-graph: cluster those coordinates directly, as eUML does)")
    p.add_argument("--graph-components", type=int, default=DEFAULTS["graph_components"],
                   help="dimensions of the graph embedding")
    p.add_argument("--graph-neighbors", type=int, default=DEFAULTS["graph_neighbors"],
                   help="neighbours per galaxy in the graph")
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm model name (default offline "
                   "EfficientNet-Lite0; others need --weights)")
    p.add_argument("--weights", default="offline", help="'offline' (packaged), a .safetensors/state-dict file, "
                   "or 'hub' (online)")
    p.add_argument("--features", choices=list(FEATURE_PRESETS), default=DEFAULT_FEATURES,
                   help="how images become vectors: 'texture' (default: log-polar unwrap, mean and std of five "
                        "feature maps) or 'euml' (the paper: linear unwrap, final pooled features); "
                        "--size/--radial/--layer/--pool override single settings")
    p.add_argument("--size", type=int, nargs="+", default=None, metavar="PX",
                   help="encoder input: one number (square) or HEIGHT WIDTH (default: see --features)")
    p.add_argument("--radial", choices=["linear", "log"], default=None,
                   help="polar unwrap rows: one per pixel of radius (eUML) or log-spaced (spiral arms become "
                        "straight lines whose slope is the pitch angle)")
    p.add_argument("--layer", default=None, help="index of the pooled feature map in timm's forward_intermediates "
                   "(EfficientNet: 0 = stem, 1–7 = block stages), several separated by commas, pooled side by side "
                   "(texture preset: 2,3,4,5,6), or 'final' (eUML)")
    p.add_argument("--pool", choices=["avg", "meanstd"], default=None,
                   help="pooling of the feature map: average (eUML) or mean and standard deviation")
    p.add_argument("--min-agree", type=int, default=None, help="members that must agree (default: all)")
    p.add_argument("--members", nargs="+", default=["kmeans", "agglomerative", "birch"],
                   help="clustering members; the first is the alignment reference")
    p.add_argument("--bagging", type=int, default=0, help="bootstrap fits per member (default 0: off)")
    p.add_argument("--pca-variance", type=float, default=0.9, help="explained variance kept by AutoPCA")
    p.add_argument("--whiten", action="store_true", help="whiten the PCA components")
    p.add_argument("--no-standardize", action="store_true", help="PCA on the raw features instead of features "
                   "scaled to unit variance (the default standardises: better on the default sims)")
    p.add_argument("--denoise-epochs", type=int, default=DEFAULTS["denoise_epochs"])
    p.add_argument("--morph-per-group", type=int, default=DEFAULTS["morph_per_group"],
                   help="galaxies per group measured with statmorph (0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common(p, device=True, on_error=True, seed=True)
    p.set_defaults(func=cmd_cluster)


def cmd_cluster(args) -> int:
    from galmo.methods.unsupervised.run import encoding_options, run_cluster
    from galmo.sources import open_source

    if any(k < 2 for k in args.k):
        raise GalmoError(f"--k must be ≥ 2, got {args.k}")
    if args.min_agree is not None and not 1 <= args.min_agree <= len(args.members):
        raise GalmoError(f"--min-agree must be between 1 and the number of members ({len(args.members)}), "
                         f"got {args.min_agree}")
    if not args.no_invariant and (args.no_pca or args.whiten or args.no_standardize or args.pca_variance != 0.9):
        raise GalmoError("--no-pca, --whiten, --no-standardize and --pca-variance set the PCA that --no-invariant "
                         "uses; the default invariant projection has its own settings (--invariant-components, "
                         "--invariant-reg, --views)")
    weights = None if args.weights in ("none", "None", "random") else args.weights
    enc = encoding_options(args.features, size=args.size, radial=args.radial, layer=args.layer, pool=args.pool)
    src = open_source(args.data, on_error=args.on_error)
    metrics = run_cluster(src, args.out, k=args.k, denoise=args.denoise, polar=not args.no_polar,
                          pca=not args.no_pca, backbone=args.backbone, weights=weights, **enc,
                          min_agree=args.min_agree, members=args.members, bagging=args.bagging,
                          pca_variance=args.pca_variance, whiten=args.whiten,
                          standardize=not args.no_standardize, denoise_epochs=args.denoise_epochs,
                          graph=args.graph, graph_components=args.graph_components,
                          graph_neighbors=args.graph_neighbors, invariant=not args.no_invariant,
                          views=args.views, views_max_fit=args.views_max_fit,
                          invariant_components=args.invariant_components, invariant_reg=args.invariant_reg,
                          morphology=args.morph_per_group > 0,
                          morph_per_group=max(1, args.morph_per_group),
                          seed=args.seed, device=args.device, progress=not args.quiet)
    print(f"wrote {Path(args.out) / 'cluster_catalog.parquet'}, metrics.json and report.html in {args.out}")
    return 0 if metrics else 1
