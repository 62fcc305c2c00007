"""Noisier-to-noisy denoising (the Denoiser stage's training task)."""

from __future__ import annotations


class DenoiseTask:
    """Noisier-to-noisy training: the input is the observed image plus extra Gaussian noise of
    ``factor`` × its own estimated noise σ, the target is the observed image. With MSE the best
    prediction is E[image | noisier image], which removes noise (no clean image needed)."""

    def __init__(self, factor: float = 1.0):
        self.factor = factor

    def _noisy(self, x, sigma, generator):
        import torch

        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return x + self.factor * sigma[:, :, None, None] * eps

    def loss(self, model, batch, generator):
        import torch.nn.functional as F

        x, sigma = batch
        y = model(self._noisy(x, sigma, generator))
        loss = F.mse_loss(y, x)
        return loss, {"mse": float(loss.detach())}

    def validate(self, model, loader):
        """Mean squared error per pixel on ``loader``'s batches (fixed noise draws), through galmo.nn.infer."""
        import torch
        import torch.nn.functional as F

        from galmo.nn.infer import infer_batches

        g = torch.Generator().manual_seed(12345)
        tot, n = 0.0, 0

        def sse(x, sigma):
            nonlocal n
            n += x.numel()
            return F.mse_loss(model(self._noisy(x, sigma, g)), x, reduction="sum").reshape(1)

        for s in infer_batches(sse, loader, device=next(model.parameters()).device, dtype=None):
            tot += float(s[0])
        return {"val_loss": tot / max(n, 1)}
