"""Settings of the unsupervised method, each written once (no torch, no heavy imports: the CLI reads them).

:class:`ClusterConfig` gives the flags of ``galmo cluster`` (:func:`galmo.core.config.add_options`),
the run's ``config.json`` and the arguments of every library function of
:mod:`galmo.methods.unsupervised.run`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from galmo.core.config import (HELP, Config, backend_option, batch_size_option, crop_frac_option, data_option,
                               device_option, framing_option, on_error_option, option, progress_option, seed_option)
from galmo.core.errors import GalmoError

MEMBERS = ("kmeans", "agglomerative", "birch")

# How the images become feature vectors. "euml": the paper's (linear polar unwrap, the backbone's final
# average-pooled features); "texture": log-polar unwrap and the mean and standard deviation of the
# feature maps after block stages 2–6 of EfficientNet-Lite0 (indices of timm's forward_intermediates:
# 24, 40, 80, 112 and 192 channels at strides 4–16, 896 numbers in all), which keep the arm-orientation
# and clumpiness statistics that separate spiral and disturbed classes (docs/unsupervised.md).
FEATURE_PRESETS = {
    "euml": {"radial": "linear", "layer": None, "pool": "avg", "size": 160},
    "texture": {"radial": "log", "layer": (2, 3, 4, 5, 6), "pool": "meanstd", "size": (64, 252)},
}
DEFAULT_FEATURES = "texture"
# Settings that only the PCA reduction (--no-invariant) reads.
PCA_ONLY = ("pca", "pca_variance", "whiten", "standardize")


@dataclass
class ClusterConfig(Config):
    """Everything ``galmo cluster`` and :func:`galmo.methods.unsupervised.run.run_cluster` take."""

    method = "cluster"
    data: str | None = data_option()
    out: str | None = option(None, "run folder, e.g. runs/NAME", metavar="DIR")
    k: tuple[int, ...] = option((20,), "number of groups; several K → one fit each (fraction classified "
                                "reported per K; the first K fills the catalog)")
    framing: str | None = framing_option("resize, to the square of the source's shorter side")
    crop_frac: float | None = crop_frac_option("1")
    # ---- stages
    denoise: bool = option(False, "run eUML's autoencoder denoiser first (off by default: on the sims it lowers "
                           "purity, see docs/unsupervised.md)")
    denoise_epochs: int = option(4, "epochs of the denoiser's training")
    denoise_max_train: int = option(3000, "galaxies (a seeded random subsample) the denoiser is trained on")
    polar: bool = option(True, "the adaptive polar unwrap before the encoder (--no-polar skips it)")
    invariant: bool = option(True, "reduce the features by the invariant projection learnt from augmented views "
                             "of the galaxies (--no-invariant: by PCA, as eUML does; docs/unsupervised.md)")
    views: int = option(16, "augmented views per galaxy for the invariant projection")
    views_max_fit: int = option(3000, "galaxies (a random subsample) whose views fit the invariant projection")
    invariant_components: int = option(60, "directions kept by the invariant projection (at most one fewer than "
                                       "the galaxies fitted)")
    invariant_reg: float = option(0.1, "ridge added to the nuisance covariance (standardised features)")
    pca: bool = option(True, "with --no-invariant: PCA of the encoder features (--no-pca clusters them as they are)")
    pca_variance: float = option(0.9, "with --no-invariant: explained variance kept by AutoPCA")
    whiten: bool = option(False, "with --no-invariant: whiten the PCA components")
    standardize: bool = option(True, "with --no-invariant: scale the features to unit variance before the PCA "
                               "(better on the default sims)")
    graph: bool = option(True, "cluster a spectral embedding of the k-NN graph of the reduced features "
                         "(--no-graph: cluster those coordinates directly, as eUML does)")
    graph_components: int = option(10, "dimensions of the graph embedding")
    graph_neighbors: int = option(15, "neighbours per galaxy in the graph")
    # ---- encoder
    backbone: str = option("tf_efficientnet_lite0", HELP["backbone"] + "; others than the default need --weights")
    weights: str | None = option("offline", HELP["weights"])
    features: str = option(DEFAULT_FEATURES, "how images become vectors: 'texture' (log-polar unwrap, mean and std "
                           "of five feature maps) or 'euml' (the paper: linear unwrap, final pooled features); "
                           "--image-size/--radial/--layer/--pool override single settings",
                           choices=tuple(FEATURE_PRESETS))
    image_size: tuple[int, ...] | None = option(None, HELP["image_size"] + "; none: that of --features",
                                                metavar="PX")
    radial: str | None = option(None, "polar unwrap rows: one per pixel of radius (linear, eUML) or log-spaced "
                                "(log: spiral arms become straight lines); none: that of --features",
                                choices=("linear", "log"))
    layer: str | None = option(None, "index of the pooled feature map in timm's forward_intermediates (EfficientNet: "
                               "0 = stem, 1–7 = block stages), several separated by commas, pooled side by side, or "
                               "'final' (eUML); none: that of --features")
    pool: str | None = option(None, "pooling of the feature map: average (avg, eUML) or mean and standard "
                              "deviation (meanstd); none: that of --features", choices=("avg", "meanstd"))
    # ---- voting
    min_agree: int | None = option(None, "members that must agree (none: all)")
    members: tuple[str, ...] = option(MEMBERS, "clustering members; the first is the alignment reference",
                                      choices=MEMBERS)
    bagging: int = option(0, "bootstrap fits per member (0: off)")
    fit_max: int = option(3000, "galaxies (a seeded random subsample) the pipeline is fitted on; the others are "
                          "streamed through it and assigned to the fitted groups. The sample's images are held "
                          "in memory")
    # ---- outputs and running
    morph_per_group: int = option(20, "galaxies per group measured with statmorph (0: none)")
    report: bool = option(True, "write the report section and report.html", cli=False)
    batch_size: int = batch_size_option(512)
    device: str = device_option()
    backend: str = backend_option()
    seed: int = seed_option()
    on_error: str = on_error_option()
    progress: bool = progress_option()

    def __post_init__(self):
        import numpy as np

        if np.isscalar(self.k):
            self.k = (int(self.k),)
        if self.image_size is not None and np.isscalar(self.image_size):
            self.image_size = (int(self.image_size),)
        self.k, self.members = tuple(self.k), tuple(self.members)
        if self.image_size is not None:
            self.image_size = tuple(self.image_size)
        if self.layer is not None and not isinstance(self.layer, str):  # library callers: an int or a sequence
            self.layer = ",".join(str(v) for v in np.atleast_1d(self.layer))
        if self.weights in ("none", "None", "random"):
            self.weights = None

    # ------------------------------------------------------------------ derived settings
    def encoding(self) -> dict:
        """radial, layer, pool and size of the encoding: the preset ``features`` with every setting
        given explicitly replacing its value (``layer`` "final" → None, "3,4" → (3, 4))."""
        if self.features not in FEATURE_PRESETS:
            raise GalmoError(f"--features must be one of {', '.join(FEATURE_PRESETS)}, got {self.features!r}")
        opts = dict(FEATURE_PRESETS[self.features])
        if self.image_size is not None:
            size = list(self.image_size)
            if len(size) not in (1, 2) or min(size) < 16:
                raise GalmoError(f"--image-size takes one or two numbers ≥ 16 (square, or HEIGHT WIDTH), got {size}")
            opts["size"] = int(size[0]) if len(size) == 1 else (int(size[0]), int(size[1]))
        if self.radial is not None:
            opts["radial"] = self.radial
        if self.pool is not None:
            opts["pool"] = self.pool
        if self.layer is not None:
            opts["layer"] = parse_layer(self.layer)
        return opts

    def encoder_size(self):
        """What the encoder really gets: the size of :meth:`encoding`, except that a non-square (h, w)
        — the shape meant for the unwrapped image — becomes, without the unwrap, the square with the
        same number of pixels (the image stays square instead of being stretched)."""
        import numpy as np

        size = self.encoding()["size"]
        if not self.polar and size is not None and not np.isscalar(size) and size[0] != size[1]:
            return int(round(np.sqrt(size[0] * size[1])))
        return size

    def validate(self) -> "ClusterConfig":
        """Refuse settings that cannot run or would be silently ignored; returns self."""
        if not self.k or any(int(k) < 2 for k in self.k):
            raise GalmoError(f"--k must be ≥ 2, got {list(self.k)}")
        unknown = [m for m in self.members if m not in MEMBERS]
        if not self.members or unknown:
            raise GalmoError(f"--members must be among {', '.join(MEMBERS)}, got {list(self.members)}")
        if self.min_agree is not None and not 1 <= self.min_agree <= len(self.members):
            raise GalmoError(f"--min-agree must be between 1 and the number of members ({len(self.members)}), "
                             f"got {self.min_agree}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        changed = [f"--{'no-' if isinstance(defaults[n], bool) and defaults[n] else ''}{n.replace('_', '-')}"
                   for n in PCA_ONLY if getattr(self, n) != defaults[n]]
        if self.invariant and changed:
            raise GalmoError(f"{', '.join(changed)} set the PCA that --no-invariant uses; the default invariant "
                             "projection has its own settings (--invariant-components, --invariant-reg, --views)")
        if self.invariant and (self.views < 1 or self.views_max_fit < 3 or not self.invariant_reg > 0
                               or self.invariant_components < 1):
            raise GalmoError(f"the invariant projection needs --views ≥ 1, --views-max-fit ≥ 3, --invariant-reg > 0 "
                             f"and --invariant-components ≥ 1; got {self.views}, {self.views_max_fit}, "
                             f"{self.invariant_reg}, {self.invariant_components}")
        if not 0 < self.pca_variance <= 1:
            raise GalmoError(f"--pca-variance must be in (0, 1], got {self.pca_variance}")
        for name in ("fit_max", "batch_size", "denoise_epochs", "denoise_max_train", "graph_components",
                     "graph_neighbors"):
            if getattr(self, name) < 1:
                raise GalmoError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if self.fit_max < max(self.k):
            raise GalmoError(f"--fit-max {self.fit_max} is fewer galaxies than K={max(self.k)} groups")
        if self.bagging < 0 or self.morph_per_group < 0:
            raise GalmoError("--bagging and --morph-per-group must be ≥ 0")
        self.encoding()  # the encoder settings parse
        return self


def parse_layer(layer):
    """``layer`` as the encoder takes it: None ("final"), one block number, or a sorted tuple of them
    (timm returns the maps in block order, once each)."""
    import numpy as np

    parts = [str(p).strip() for p in (layer.strip("()[] ").split(",") if isinstance(layer, str) else
                                      ([layer] if np.isscalar(layer) else list(layer)))]
    if len(parts) == 1 and parts[0].lower() == "final":
        return None
    if parts and all(p.isdigit() for p in parts):
        blocks = sorted({int(p) for p in parts})
        return blocks[0] if len(blocks) == 1 else tuple(blocks)
    raise GalmoError(f"--layer must be a block number, several separated by commas (3,4,5) or 'final', "
                     f"got {layer!r}")
