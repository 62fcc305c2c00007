"""Any timm backbone with a galmo head, so every architecture is selectable by one flag."""

from __future__ import annotations

import torch.nn as nn

from galmo.nn.models import register_model


class TimmClassifier(nn.Module):
    """A timm backbone (offline EfficientNet-Lite0 weights by default) plus a linear head."""

    def __init__(self, backbone: str = "tf_efficientnet_lite0", num_outputs: int = 10, in_chans: int = 3,
                 weights: str | None = "offline", drop_rate: float = 0.2, drop_path_rate: float = 0.0):
        super().__init__()
        from galmo.nn.backbones import create_backbone

        extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}  # stochastic depth, timm's own
        self.backbone = create_backbone(backbone, weights=weights, num_classes=0, in_chans=in_chans, **extra)
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(self.backbone.num_features, num_outputs))
        self.num_features = self.backbone.num_features

    def forward_features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.backbone(x))


@register_model
def timm_classifier(**kwargs) -> TimmClassifier:
    return TimmClassifier(**kwargs)
