"""eUML stage 3: pretrained CNN features of the images."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from galmo.stages._common import check_fitted, check_images


class Encoder(TransformerMixin, BaseEstimator):
    """Pretrained CNN features (timm via :mod:`galmo.nn.backbones`; offline EfficientNet-Lite0 by default).

    ``weights``: "offline", a file (.safetensors or state dict), "hub" (online), or None (random —
    only for tests). ``size``: the input the images are resized to once per batch, an int (square)
    or (height, width) (default: the backbone's native size). ``layer``: None for the final features,
    the block whose feature map is pooled (:func:`galmo.nn.backbones.intermediate`), or a sequence of
    blocks whose pooled maps are put side by side; ``pool``: "avg"
    or "meanstd" (:func:`galmo.nn.backbones.pool_features`). Threads are set once
    (:func:`galmo.nn.device.set_threads`).
    """

    def __init__(self, backbone: str = "tf_efficientnet_lite0", weights: str | None = "offline",
                 size=None, batch_size: int = 64, device: str = "auto", threads: int | None = None,
                 progress: bool = False, layer: int | None = None, pool: str = "avg"):
        self.backbone = backbone
        self.layer = layer
        self.pool = pool
        self.weights = weights
        self.size = size
        self.batch_size = batch_size
        self.device = device
        self.threads = threads
        self.progress = progress

    def fit(self, X=None, y=None):
        from galmo.nn.backbones import create_backbone
        from galmo.nn.device import set_threads

        self.threads_ = set_threads(self.threads)
        self.model_ = create_backbone(self.backbone, weights=self.weights, num_classes=0).eval()
        if self.layer is None and self.pool == "avg":
            self.n_features_ = int(self.model_.num_features)
        else:  # one small forward tells the width of the chosen map
            from galmo.nn.backbones import encode

            self.n_features_ = int(encode(self.model_, np.zeros((1, 3, 32, 32), np.float32), size=self.size,
                                          layer=self.layer, pool=self.pool, backend="torch").shape[1])
        return self

    def transform(self, X):
        from galmo.nn.backbones import encode
        from galmo.nn.device import resolve_device

        check_fitted(self, "model_")
        X = check_images(X, "Encoder")
        return encode(self.model_, X, size=self.size, batch_size=self.batch_size,
                      device=resolve_device(self.device), progress=self.progress, layer=self.layer, pool=self.pool)
