"""Joint-embedding pretraining: SimCLR's NT-Xent loss over two observing views of each galaxy.

Two views of every image of a batch are drawn with :func:`galmo.nn.augment.augment` — any rotation,
flip, shift, zoom, a PSF-like blur, noise at the image's own level, a gain and small per-band colour
changes (:func:`contrastive_views`): what differs between two observations of one galaxy, never its
morphology. The model (:class:`galmo.nn.models.contrastive.ContrastiveEncoder`) projects both; the
loss pulls the two projections of a galaxy together and pushes those of the other galaxies of the
batch away (Chen et al. 2020; in astronomy Hayat et al. 2021 on SDSS, Stein et al. 2021 on DECaLS).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from galmo.nn.augment import AugmentConfig, augment


def contrastive_views() -> AugmentConfig:
    """The views' augmentation: the symmetries (any angle, flip, ±4 px, zoom ×1/1.3–1.3) and the observing
    conditions (blur σ ≤ 1.5 px, extra noise ≤ 1.5 × the image's own σ, gain ±20 %, colours ±5 %)."""
    return AugmentConfig(rotate=True, translate=4.0, zoom=1.3, flip=True, brightness=0.2, colour=0.05,
                         blur=1.5, noise=1.5)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent (InfoNCE over 2N views): for each view, cross-entropy of picking its partner among the
    other 2N − 1 views by cosine similarity / ``temperature``."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


class ContrastiveTask:
    """NT-Xent for :func:`galmo.nn.train.fit`. Batches: (images,) in [0, 1]; labels are never used."""

    def __init__(self, temperature: float = 0.2, views: AugmentConfig | None = None):
        self.temperature = float(temperature)
        self.views = views or contrastive_views()

    def loss(self, model, batch, generator):
        x = batch[0].float()
        v1, v2 = augment(x, generator, self.views), augment(x, generator, self.views)
        z = model(torch.cat([v1, v2]))
        loss = nt_xent(z[:len(x)], z[len(x):], self.temperature)
        return loss, {"nt_xent": float(loss.detach())}

    def validate(self, model, loader) -> dict:
        """Mean NT-Xent over ``loader`` with fixed views (a seeded generator), weighted by batch size
        (batches of one image left out); the forward passes run through :func:`galmo.nn.infer.infer_batches`."""
        from galmo.nn.infer import infer_batches

        g = torch.Generator().manual_seed(0)

        def losses(x):  # one row per image: the batch's loss
            loss = self.loss(model, (x,), g)[0] if len(x) > 1 else torch.tensor(float("nan"))
            return loss.reshape(1, 1).expand(len(x), 1)

        device = next(model.parameters()).device
        y = np.concatenate([b[:, 0] for b in infer_batches(losses, loader, device=device)] or [np.zeros(0)])
        return {"val_loss": float(np.nanmean(y)) if np.isfinite(y).any() else float("nan")}
