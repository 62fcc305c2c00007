"""Settings of the unsupervised method (no torch, no heavy imports: the CLI reads them)."""

DEFAULTS = {"k": 20, "standardize": True, "pca_variance": 0.9, "denoise_epochs": 4,
            "denoise_max_train": 3000, "morph_per_group": 20,
            "views": 16, "views_max_fit": 3000, "invariant_components": 60, "invariant_reg": 0.1,
            "graph": True, "graph_components": 10, "graph_neighbors": 15}


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
