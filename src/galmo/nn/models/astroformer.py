"""Astroformer (Dagli 2023): the hybrid conv-transformer for the low-data regime, built from timm.

Astroformer is timm's CoAtNet (``MaxxVit``: a convolutional stem, MBConv stages, transformer stages
with a relative position bias, an MLP head) with the block layout ``("C", "C", "C", "T")`` (three
MBConv stages, one transformer stage) in place of CoAtNet's ``("C", "C", "T", "T")``. Nothing is
copied: each size is timm's own ``MaxxVitCfg`` of ``coatnet_N`` with the block layout replaced, so
``astroformer-0`` … ``astroformer-5`` have the published widths and depths (``astroformer-4``, the
94.86 % Galaxy10 DECals model: embed (192, 384, 768, 1536), depths (2, 12, 28, 2), stem 192).

Two sizes for a laptop CPU at 64 px: ``astroformer-tiny`` (embed (32, 64, 128, 256), depths
(1, 2, 3, 1); 1.4 M parameters, ~170 training images/s on 2 cores) and ``astroformer-small`` (embed
(48, 96, 192, 384), depths (2, 2, 5, 2); 5.7 M, ~100 images/s).

The model is built for one input size (``image_size``, square or (H, W)): the transformer stage's
attention window and its relative position bias table (``(2·h − 1) × (2·w − 1)`` entries per head for an
``h × w`` token grid, h = H/32) follow from it, as timm defines them. timm's MaxxVit needs sides that
are multiples of 32 (its stride-2 shortcuts misalign otherwise); other sizes are zero-padded, centred,
to the next multiple (sky-subtracted cutouts: zero is the sky), never resampled, so the pixel scale
stays the survey's. Any band count (``in_chans``).
Stochastic depth: ``drop_path_rate`` (linearly increasing over the blocks); dropout before the head:
``drop_rate``.
"""

from __future__ import annotations

import dataclasses
import math

import torch.nn as nn
import torch.nn.functional as F

from galmo.nn.models import register_model

LAYOUT = ("C", "C", "C", "T")
SMALL_SIZES = {
    "tiny": dict(embed_dim=(32, 64, 128, 256), depths=(1, 2, 3, 1), stem_width=32, head_hidden_size=256),
    "small": dict(embed_dim=(48, 96, 192, 384), depths=(2, 2, 5, 2), stem_width=48, head_hidden_size=384),
}
SIZES = ("tiny", "small", "0", "1", "2", "3", "4", "5")


def astroformer_cfg(size: str):
    """timm's ``MaxxVitCfg`` of an Astroformer size (``tiny``, ``small`` or ``0`` … ``5``)."""
    from timm.models.maxxvit import model_cfgs

    from galmo.core.errors import GalmoError

    size = str(size)
    if size not in SIZES:
        raise GalmoError(f"unknown astroformer size {size!r}; known: {', '.join(SIZES)}")
    base = model_cfgs["coatnet_0" if size in SMALL_SIZES else f"coatnet_{size}"]
    return dataclasses.replace(base, block_type=LAYOUT, **SMALL_SIZES.get(size, {}))


STRIDE = 32  # MaxxVit's total downsampling: the stem (2) and four stages (2 each)


class Astroformer(nn.Module):
    """timm's ``MaxxVit`` with the Astroformer layout (``self.net``), for ``image_size`` inputs (padded to
    multiples of 32 when they are not)."""

    def __init__(self, size: str = "tiny", num_outputs: int = 10, in_chans: int = 3, image_size=64,
                 drop_rate: float = 0.1, drop_path_rate: float = 0.0):
        super().__init__()
        from timm.models.maxxvit import MaxxVit

        hw = tuple(image_size) if isinstance(image_size, (tuple, list)) else (int(image_size),) * 2
        self.image_size = tuple(int(v) for v in hw)
        self.padded_size = tuple(STRIDE * math.ceil(v / STRIDE) for v in self.image_size)
        self.net = MaxxVit(astroformer_cfg(size), img_size=self.padded_size, in_chans=in_chans,
                           num_classes=num_outputs, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        self.num_features = self.net.head_hidden_size or self.net.num_features

    def _pad(self, x):
        dh, dw = (p - s for p, s in zip(self.padded_size, x.shape[-2:]))
        if dh or dw:
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        return x

    def forward_features(self, x):
        """The pooled features before the classifier (``num_features``)."""
        return self.net.forward_head(self.net.forward_features(self._pad(x)), pre_logits=True)

    def forward(self, x):
        return self.net(self._pad(x))


def astroformer(size: str = "tiny", **kwargs) -> Astroformer:
    """An Astroformer of ``size``: ``num_outputs`` logits of ``in_chans``-band ``image_size`` inputs."""
    return Astroformer(size, **kwargs)


def _register(size: str) -> None:
    def make(**kwargs):
        return astroformer(size, **kwargs)

    make.__doc__ = f"astroformer-{size}: {astroformer.__doc__}"
    register_model(make, name=f"astroformer-{size}")


for _size in SIZES:
    _register(_size)
