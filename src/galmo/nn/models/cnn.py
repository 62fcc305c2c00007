"""A small plain convolutional network: the "supervised CNN trained from scratch" baseline.

``simple_cnn`` is a VGG-like stack of ``stages`` blocks (two 3×3 conv + BatchNorm + ReLU, then 2×2
max-pool; the width doubles at each stage), global average pooling and a dropout + linear head.
``forward_features(x)`` returns the pooled (N, num_features) vector, ``forward(x)`` the (N, num_outputs)
logits (or raw vote outputs). It works for any input size ≥ 2**stages pixels.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from galmo.nn.models import register_model


def conv_block(c_in: int, c_out: int, pool: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
              nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SimpleCNN(nn.Module):
    def __init__(self, in_chans: int = 3, num_outputs: int = 10, width: int = 32, stages: int = 4,
                 drop_rate: float = 0.2):
        super().__init__()
        chans = [in_chans] + [width * 2 ** min(k, 3) for k in range(stages)]
        self.features = nn.Sequential(*[conv_block(chans[k], chans[k + 1]) for k in range(stages)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = chans[-1]
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(self.num_features, num_outputs))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model
def simple_cnn(in_chans: int = 3, num_outputs: int = 10, width: int = 32, stages: int = 4,
               drop_rate: float = 0.2) -> SimpleCNN:
    """Plain CNN baseline trained from scratch (no pretrained weights)."""
    return SimpleCNN(in_chans=in_chans, num_outputs=num_outputs, width=width, stages=stages, drop_rate=drop_rate)
