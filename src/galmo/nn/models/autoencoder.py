"""Convolutional autoencoder used as the denoiser of the unsupervised pipeline (eUML, 2024).

eUML's network: two 5×5 conv blocks with 2×2 pooling, a dense bottleneck, and the mirrored
decoder, trained with MSE to reproduce its input. ``latent=int`` builds exactly that; the default
``latent=None`` keeps a convolutional bottleneck (no dense layer), which keeps positional detail
and denoises far better at the same cost. ``residual=True`` predicts a correction added
to the input, so a briefly trained network starts from the identity instead of destroying the
image (eUML's plain reconstruction, the default: ``residual=False``). What makes it a *denoiser* is the training task in
:mod:`galmo.stages` (noise injected at the input, the observed image as the target).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from galmo.nn.models import register_model


def _block(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.GELU())


class ConvAutoencoder(nn.Module):
    def __init__(self, in_chans: int = 3, size: int = 64, widths: tuple = (32, 64), kernel: int = 5,
                 latent: int | None = None, residual: bool = False):
        super().__init__()
        self.residual = residual
        widths = tuple(int(w) for w in widths)
        self.in_chans, self.size, self.latent = in_chans, size, latent
        enc, c = [], in_chans
        for w in widths:
            enc += [_block(c, w, kernel), nn.MaxPool2d(2)]
            c = w
        self.encoder = nn.Sequential(*enc)
        self.down = 2 ** len(widths)
        s = max(1, size // self.down)
        self._code_shape = (c, s, s)
        if latent:
            self.to_latent = nn.Linear(c * s * s, latent)
            self.from_latent = nn.Linear(latent, c * s * s)
        dec = []
        for w in reversed((in_chans,) + widths[:-1]):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), _block(c, max(w, 16), kernel)]
            c = max(w, 16)
        self.decoder = nn.Sequential(*dec)
        self.out = nn.Conv2d(c, in_chans, 3, padding=1)

    def encode(self, x):
        z = self.encoder(x)
        if self.latent:
            z = self.to_latent(z.flatten(1))
        return z

    def forward(self, x):
        h, w = x.shape[-2:]
        z = self.encode(x)
        if self.latent:
            z = F.gelu(self.from_latent(z)).view(-1, *self._code_shape)
        y = self.out(self.decoder(z))
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return x + y if self.residual else y


@register_model
def conv_autoencoder(**kwargs) -> ConvAutoencoder:
    return ConvAutoencoder(**kwargs)
