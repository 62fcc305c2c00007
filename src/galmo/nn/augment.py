"""Training augmentations as in Dieleman, Willett & Dambre (2015), batched in torch.

Per image: a uniform random rotation (0–360°), a random translation (± ``translate`` pixels), a
log-uniform zoom in [1/zoom, zoom], a horizontal flip with probability 1/2 (together one affine
``grid_sample`` per batch, reflection padding) and a brightness / colour perturbation: the whole image
is multiplied by exp(N(0, brightness)) and each band by exp(N(0, colour)). Optionally (off for
training by default) the observing conditions change too: a Gaussian blur of σ uniform in [0, ``blur``]
px (a worse PSF) and extra Gaussian noise of σ uniform in [0, ``noise``] times each band's own noise
level, measured on the input (MAD of pixel differences, like :func:`galmo.stages.noise_sigma` but with
torch's lower median) before the resampling and the
blur have smoothed it, since a worse seeing does not lower the sky noise. All random numbers come
from the ``torch.Generator`` passed in (the one :func:`galmo.nn.train.fit` derives from (seed, epoch,
step)), so an augmented run is exactly reproducible and exactly resumable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    rotate: bool = True          # uniform angle in [0, 360)
    translate: float = 4.0       # max shift in pixels (uniform in ±translate, each axis)
    zoom: float = 1.3            # log-uniform scale in [1/zoom, zoom]
    flip: bool = True            # horizontal flip with probability 1/2
    brightness: float = 0.1      # sigma of the log of a global gain
    colour: float = 0.05         # sigma of the log of a per-band gain
    blur: float = 0.0            # max sigma (px) of an extra Gaussian blur, uniform in [0, blur]
    noise: float = 0.0           # max extra noise, in units of each band's own noise sigma
    ops: int = 0                 # RandAugment-like policy: this many observing ops per image (0: off)
    magnitude: float = 0.5       # the policy's strength in [0, 1] (each op's maximum, scaled)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(rotate=False, translate=0.0, zoom=1.0, flip=False, brightness=0.0, colour=0.0)

    @classmethod
    def observing(cls) -> "AugmentConfig":
        """What changes between two observations of one galaxy (orientation, centring, apparent size,
        seeing, depth, calibration) and nothing of its morphology: the views from which
        :class:`galmo.stages.InvariantProjection` learns which feature directions are nuisance."""
        return cls(rotate=True, translate=1.5, zoom=1.25, flip=True, brightness=0.1, colour=0.0, blur=1.0, noise=1.0)


def random_affine(n: int, h: int, w: int, generator: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """(N, 2, 3) ``affine_grid`` matrices (output → input, normalised coordinates)."""
    u = torch.rand(n, 5, generator=generator, dtype=torch.float64)
    angle = u[:, 0] * 2 * math.pi if cfg.rotate else torch.zeros(n, dtype=torch.float64)
    log_z = math.log(cfg.zoom) if cfg.zoom and cfg.zoom > 1 else 0.0
    scale = torch.exp((2 * u[:, 1] - 1) * log_z)           # >1 zooms in
    flip = torch.where(u[:, 2] < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n, dtype=torch.float64)
    tx = (2 * u[:, 3] - 1) * cfg.translate * 2 / w          # pixels → normalised units
    ty = (2 * u[:, 4] - 1) * cfg.translate * 2 / h
    c, s = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([c * flip, -s, tx], 1), torch.stack([s * flip, c, ty], 1)], 1)
    return theta


def augment(x: torch.Tensor, generator: torch.Generator, cfg: AugmentConfig | None = None) -> torch.Tensor:
    """Augment a (N, C, H, W) float batch (any device); the random numbers are drawn on the CPU."""
    cfg = cfg or AugmentConfig()
    n, c, h, w = x.shape
    sigma = _noise_sigma(x) if cfg.noise or cfg.ops else None  # the observation's own noise, before any resampling or blur
    geometric = cfg.rotate or cfg.translate or (cfg.zoom and cfg.zoom > 1) or cfg.flip
    if geometric:  # in fp32 even inside autocast: a bf16 sampling grid is off by up to ~1/4 px at 64 px
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            theta = random_affine(n, h, w, generator, cfg).to(device=x.device, dtype=x.dtype)
            grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.brightness or cfg.colour:
        g = torch.randn(n, 1 + c, generator=generator)
        gain = torch.exp(g[:, :1] * cfg.brightness + g[:, 1:] * cfg.colour).to(device=x.device, dtype=x.dtype)
        x = x * gain[:, :, None, None]
    if cfg.blur:
        x = _blur(x, torch.rand(n, generator=generator) * cfg.blur)
    if cfg.noise:
        x = _add_noise(x, sigma * (torch.rand(n, 1, generator=generator) * cfg.noise).to(x.device), generator)
    if cfg.ops:
        x = policy(x, generator, cfg.ops, cfg.magnitude, sigma)
    return x


# The policy's operations and their maxima at magnitude 1: what changes between two observations of
# a galaxy (seeing, depth, calibration), never its shape: no shear, no colour inversion, no solarise,
# no posterise, no contrast curve (RandAugment's other ops change a galaxy's profile or colours).
POLICY_MAX = {"blur": 1.5,    # σ of an extra Gaussian PSF, px
              "noise": 2.0,   # extra noise σ, in units of each band's own noise σ
              "gain": 0.3,    # σ of the log of a global gain
              "colour": 0.1}  # σ of the log of a per-band gain


def policy(x: torch.Tensor, generator: torch.Generator, ops: int, magnitude: float,
           sigma: torch.Tensor | None = None) -> torch.Tensor:
    """RandAugment-like (Cubuk et al. 2020) over morphology-preserving operations: each image gets
    ``ops`` of the :data:`POLICY_MAX` operations, chosen at random, each with a strength uniform in
    [0, ``magnitude`` × its maximum]. Applied after the geometric augmentation (rotation, flip, shift,
    zoom: symmetries of the problem, always on). ``sigma``: each band's noise σ (N, C) measured before
    any resampling (measured on ``x`` when not given)."""
    n, c = x.shape[:2]
    k = len(POLICY_MAX)
    if not 0 < ops <= k or not 0.0 <= magnitude <= 1.0:
        from galmo.core.errors import GalmoError

        raise GalmoError(f"the augmentation policy takes 1–{k} ops and a magnitude in [0, 1] "
                         f"(got {ops}, {magnitude})")
    chosen = torch.rand(n, k, generator=generator).argsort(1)[:, :ops]
    on = torch.zeros(n, k).scatter_(1, chosen, 1.0)  # (N, ops) → which ops each image gets
    u = torch.rand(n, k, generator=generator) * magnitude * on * torch.tensor(list(POLICY_MAX.values()))
    g = torch.randn(n, 1 + c, generator=generator)
    sigma = _noise_sigma(x) if sigma is None else sigma
    x = _blur(x, u[:, 0])
    x = _add_noise(x, sigma * u[:, 1:2].to(x.device), generator)
    gain = torch.exp(g[:, :1] * u[:, 2:3] + g[:, 1:] * u[:, 3:4]).to(device=x.device, dtype=x.dtype)
    return x * gain[:, :, None, None]


def _add_noise(x: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``x`` plus Gaussian noise of σ (N, C) per image and band."""
    return x + torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype) * sigma[:, :, None, None]


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur, σ (N,) px per image (σ below 0.05 px leaves an image as it is)."""
    n, c, h, w = x.shape
    r = max(1, int(math.ceil(3 * float(sigma.max()))))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None, :] / sigma.clamp(min=0.05)[:, None]) ** 2)
    k = torch.where(sigma[:, None] < 0.05, (t[None, :] == 0).float(), k)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0).to(device=x.device, dtype=x.dtype)  # (N·C, 2r+1)
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def _noise_sigma(x: torch.Tensor) -> torch.Tensor:
    """(N, C) noise σ: MAD of horizontal pixel differences / √2 (:func:`galmo.stages.noise_sigma`)."""
    d = (x[..., 1:] - x[..., :-1]).flatten(2).float()
    mad = (d - d.median(-1, keepdim=True).values).abs().median(-1).values
    return (1.4826 / math.sqrt(2.0)) * mad
