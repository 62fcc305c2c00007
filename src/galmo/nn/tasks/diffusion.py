"""Denoising diffusion (DDPM, Ho et al. 2020) with condition dropout for classifier-free guidance.

A batch is (images in [0, 1], condition): class indices (long, N) or vote fractions (float, N×37).
The loss is the MSE between the model's prediction from ``DDPMScheduler.add_noise(x0, ε, t)``
(x0 = 2·image − 1) and its target: the velocity ``DDPMScheduler.get_velocity(x0, ε, t)`` for a
``v_prediction`` model (the default; see :mod:`galmo.nn.models.diffusion`) or the noise ε for an
``epsilon`` one, with t and ε drawn from the loop's generator; a fraction ``p_uncond`` (≈ 10 %) of the
conditions is replaced by the null one. Training images are also put through a random element of
the dihedral group (galaxies have no preferred orientation), drawn from the same generator. Validation: the same loss on fixed draws (seed 12345),
no dropout, no flips.
"""

from __future__ import annotations

VAL_SEED = 12345


def noise_scheduler(schedule: dict):
    """The diffusers ``DDPMScheduler`` of a model's :attr:`noise_schedule` (training and add_noise)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**schedule)


def dihedral(x, generator):
    """Each image of ``x`` (N, C, H, W) flipped and rotated by one of the 8 symmetries of the square."""
    import torch

    k = torch.randint(0, 8, (x.shape[0],), generator=generator).to(x.device)
    x = torch.where((k % 2 == 1)[:, None, None, None], x.flip(-1), x)
    turns = k // 2
    out = x.clone()
    for r in (1, 2, 3):
        out = torch.where((turns == r)[:, None, None, None], torch.rot90(x, r, (-2, -1)), out)
    return out


class DiffusionTask:
    """The v- (or ε-) prediction loss of a :class:`~galmo.nn.models.diffusion.GalaxyUNet` for the one loop."""

    def __init__(self, schedule: dict, p_uncond: float = 0.1, flips: bool = True):
        self.schedule = dict(schedule)
        self.scheduler = noise_scheduler(self.schedule)
        self.p_uncond, self.flips = float(p_uncond), flips

    def _sse(self, model, x, cond, generator, drop: bool):
        """Summed squared error of the noise prediction for one batch (draws from ``generator``)."""
        import torch
        import torch.nn.functional as F

        n, dev = x.shape[0], x.device
        x0 = 2.0 * x - 1.0
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(dev)
        t = torch.randint(0, self.schedule["num_train_timesteps"], (n,), generator=generator).to(dev)
        null = (torch.rand(n, generator=generator) < self.p_uncond).to(dev) if drop else None
        pred = model(self.scheduler.add_noise(x0, noise, t), t, cond, null)
        target = noise if self.schedule.get("prediction_type") == "epsilon" else \
            self.scheduler.get_velocity(x0, noise, t)
        return F.mse_loss(pred.float(), target, reduction="sum")

    def loss(self, model, batch, generator):
        x, cond = batch
        if self.flips:
            x = dihedral(x, generator)
        sse = self._sse(model, x, cond, generator, drop=True)
        loss = sse / x.numel()
        return loss, {"mse": float(loss.detach())}

    def validate(self, model, loader) -> dict:
        """Mean squared prediction error per pixel on fixed draws, through galmo.nn.infer."""
        import torch

        from galmo.nn.infer import infer_batches

        g = torch.Generator().manual_seed(VAL_SEED)
        n = 0

        def sse(x, cond):
            nonlocal n
            n += x.numel()
            return self._sse(model, x, cond, g, drop=False).reshape(1)

        tot = sum(float(s[0]) for s in infer_batches(sse, loader, device=next(model.parameters()).device,
                                                      dtype=None))
        return {"val_loss": tot / max(n, 1)}
