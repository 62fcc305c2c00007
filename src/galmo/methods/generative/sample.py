"""Sampling a conditional :class:`~galmo.nn.models.diffusion.GalaxyUNet` with classifier-free guidance.

Our own short loop over a diffusers scheduler (``DDPMPipeline`` passes no class labels):
``DDIMScheduler`` (η = 0) or ``DPMSolverMultistepScheduler`` (DPM-Solver++), both built from the
noise schedule the model was trained with, "trailing" timestep spacing (the last step starts at
pure noise, which matters at 10–25 steps). Guidance: ε = ε_null + w·(ε_cond − ε_null), the two
predictions in one batched forward pass (w = 1: the conditional model alone, one pass).

Deterministic for a seed: image ``i`` starts from the noise of its own seed ``seeds[i]`` and both
samplers are deterministic after that, so an image does not depend on the batch it was drawn in
(up to float rounding of batched kernels) nor on how many others are drawn. Batches go through
:func:`galmo.nn.infer.infer` (``torch.inference_mode``, progress bar in images).
"""

from __future__ import annotations

import numpy as np
import torch

from galmo.core.errors import GalmoError


def make_scheduler(name: str, schedule: dict, steps: int):
    """A fresh diffusers scheduler (``ddim`` or ``dpm``) set to ``steps`` steps (they keep state)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if steps < 1:
        raise GalmoError(f"--steps must be at least 1 (got {steps})")
    if name == "ddim":
        sched = DDIMScheduler(**schedule, clip_sample=True, timestep_spacing="trailing")
    elif name == "dpm":
        sched = DPMSolverMultistepScheduler(**schedule, timestep_spacing="trailing")
    else:
        raise GalmoError(f"--sampler must be ddim or dpm (got {name!r})")
    sched.set_timesteps(steps)
    return sched


def initial_noise(seeds, shape) -> np.ndarray:
    """The starting noise of each image, from its own seed: float32 (len(seeds), *shape)."""
    out = np.empty((len(seeds), *shape), np.float32)
    for k, s in enumerate(seeds):
        out[k] = torch.randn(shape, generator=torch.Generator().manual_seed(int(s))).numpy()
    return out


class GuidedSampler:
    """``(noise, condition) → images in [0, 1]``: the whole reverse process of one batch."""

    def __init__(self, model, sampler: str = "ddim", steps: int = 25, guidance: float = 3.0):
        self.model, self.sampler, self.steps, self.guidance = model, sampler, int(steps), float(guidance)

    def eps(self, x, t, cond):
        """The guided noise prediction at timestep ``t``."""
        if self.guidance == 1.0:
            return self.model(x, t, cond)
        n = x.shape[0]
        null = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]).to(x.device)
        both = self.model(torch.cat([x, x]), t, torch.cat([cond, cond]), null)
        e_cond, e_null = both.chunk(2)
        return e_null + self.guidance * (e_cond - e_null)

    def __call__(self, noise, cond):
        sched = make_scheduler(self.sampler, self.model.noise_schedule, self.steps)
        x = noise * sched.init_noise_sigma
        for t in sched.timesteps:
            x = sched.step(self.eps(sched.scale_model_input(x, t), t, cond), t, x).prev_sample
        return ((x.clamp(-1, 1) + 1) / 2).float()


def sample(model, cond, seeds, *, steps: int = 25, guidance: float = 3.0, sampler: str = "ddim",
           batch_size: int = 64, device="cpu", progress: bool = False) -> np.ndarray:
    """Images (N, C, H, W) float32 in [0, 1], one per condition (``cond``: N class indices or N×37 votes)
    and seed (``seeds``: N ints)."""
    from galmo.nn.infer import infer

    cond = np.asarray(cond)
    if len(cond) != len(seeds):
        raise GalmoError(f"{len(cond)} conditions but {len(seeds)} seeds")
    shape = (model.in_chans, model.image_size, model.image_size)
    model.eval()
    fn = GuidedSampler(model, sampler, steps, guidance)
    return infer(fn, (initial_noise(seeds, shape), cond), batch_size=batch_size, device=device, progress=progress,
                 desc="sampling", dtype=None)
