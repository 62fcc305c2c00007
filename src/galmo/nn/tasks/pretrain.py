"""Next-token pretraining of the patch transformer (:mod:`galmo.nn.models.patch_transformer`)."""

from __future__ import annotations

import torch


def dihedral_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random dihedral transform per galaxy (flips + transpose: the 8 symmetries of the square); the
    random numbers come from ``generator`` (the loop's per-step generator), so runs are reproducible."""
    b = x.shape[0]
    r = torch.rand(b, 3, generator=generator)
    fh, fv, tr = (r[:, 0] < 0.5), (r[:, 1] < 0.5), (r[:, 2] < 0.5)
    m = lambda t: t.to(x.device).view(b, 1, 1, 1)  # noqa: E731
    x = torch.where(m(fh), x.flip(-1), x)
    x = torch.where(m(fv), x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        x = torch.where(m(tr), x.transpose(-1, -2), x)
    return x


class PretrainTask:
    """Next-token prediction for :func:`galmo.nn.train.fit`. Batches: (images,) or (images, photometry)."""

    def __init__(self, augment: bool = True, normalised: bool = False):
        self.augment = augment
        self.normalised = normalised  # images were normalised once up front (the per-galaxy
        # normalisation commutes with the flips/transposes of the augmentation)

    def loss(self, model, batch, generator):
        x = batch[0].float()
        if self.augment:
            x = dihedral_augment(x, generator)
        phot = batch[1] if len(batch) > 1 else None
        return model.pretrain_loss(x, phot, self.normalised)

    def validate(self, model, loader) -> dict:
        """Mean loss (and its image / photometry parts) over ``loader``, weighted by batch size; the
        forward passes run through :func:`galmo.nn.infer.infer_batches`."""
        from galmo.nn.infer import infer_batches

        keys: list[str] = []

        def losses(x, phot=None):  # one row per image, each the batch's mean losses
            loss, logs = model.pretrain_loss(x, phot, self.normalised)
            keys[:] = list(logs)
            return torch.tensor([[float(loss), *logs.values()]]).expand(x.shape[0], -1)

        device = next(model.parameters()).device
        tot, n, parts = 0.0, 0, {}
        for y in infer_batches(losses, loader, device=device):
            b = len(y)
            tot += float(y[0, 0]) * b
            n += b
            for k, v in zip(keys, y[0, 1:]):
                parts[k] = parts.get(k, 0.0) + float(v) * b
        return {"val_loss": tot / max(n, 1), **{f"val_{k}": v / max(n, 1) for k, v in parts.items()}}


