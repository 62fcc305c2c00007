"""A timm backbone with a projection head, for joint-embedding (SimCLR-style) pretraining.

:class:`ContrastiveEncoder` takes survey images as every galmo encoder does ((B, C, H, W) in [0, 1])
and prepares them as the ImageNet backbone expects (:func:`galmo.nn.backbones.to_rgb`, resize to
``img_size``, the backbone's mean/std — the same module as ``galmo embed`` uses for a timm name, so
a pretrained run and the plain ImageNet backbone see the pixels the same way). ``forward_features``
is the embedding (the backbone's pooled features); ``forward`` adds the projection MLP whose output
the contrastive loss (:mod:`galmo.nn.tasks.contrastive`) compares. Started from the offline ImageNet
weights (``weights="offline"``: domain-adaptive pretraining) or from random ones (``weights=None``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from galmo.nn.models import register_model


class ContrastiveEncoder(nn.Module):
    """Backbone (with its input preparation) + projection MLP (Linear, BatchNorm, ReLU, Linear)."""

    def __init__(self, backbone: str = "tf_efficientnet_lite0", weights: str | None = "offline", in_chans: int = 3,
                 img_size: int = 96, proj_dim: int = 128, hidden_dim: int = 512, invariant: bool = False):
        super().__init__()
        from galmo.nn.backbones import encoder_head, create_backbone

        net = create_backbone(backbone, weights=weights, num_classes=0)  # 3 planes: to_rgb makes them
        self.encoder = encoder_head(net, int(img_size), None, "avg", "cpu")
        self.num_features = int(net.num_features)
        self.img_size = int(img_size)
        self.invariant = bool(invariant)
        self.projector = nn.Sequential(nn.Linear(self.num_features, hidden_dim), nn.BatchNorm1d(hidden_dim),
                                       nn.ReLU(inplace=True), nn.Linear(hidden_dim, proj_dim))

    def extra_repr(self) -> str:
        return f"img_size={self.img_size}, invariant={self.invariant}"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding; with ``invariant`` (square images) the mean over the 8 rotations by 90° and flips
        (the embedding of a galaxy then does not depend on its orientation on the sky up to those)."""
        if not self.invariant:
            return self.encoder(x)
        from galmo.nn.tta import dihedral_mean

        return dihedral_mean(self.encoder, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


@register_model
def contrastive_encoder(**kwargs) -> ContrastiveEncoder:
    return ContrastiveEncoder(**kwargs)
