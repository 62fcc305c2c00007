"""Rotation-invariant view-pooling network of Dieleman, Willett & Dambre (2015), "Rotation-invariant
convolutional neural networks for galaxy morphology prediction" (MNRAS 450, 1441).

Sixteen views of each image go through ONE shared convolutional trunk in a single batched forward
(the views are stacked along the batch axis), their features are pooled and a dense head maps them
to class logits or raw Galaxy Zoo vote outputs.

The view set. Let ``x`` be the image and ``R45 x`` the image rotated by 45° (the one interpolated
operation, a bilinear ``grid_sample`` about the image centre). The views are

    { d(crop(x)) : d ∈ D4 }  ∪  { d(crop(R45 x)) : d ∈ D4 }

where D4 is the dihedral group of the square (4 rotations by 0/90/180/270° × optional flip, done with
``torch.rot90``/``torch.flip``, i.e. exact index permutations) and ``crop`` is a centred square crop
(``make_views`` can also average-pool them). For any g ∈ D4 applied to the input, crop commutes with g, and
R45 g = g' R45 for some g' ∈ D4 (R45 commutes with rotations by 90°; a flip turns R45 into R-45 =
R-90 R45; bilinear interpolation on a square grid respects the grid's symmetries). So g merely
*permutes* the 16 views inside each of the two 8-view orbits, and any symmetric pooling over an orbit
(mean / max) makes the output invariant to the 8 dihedral transforms of the input, exactly up to
floating-point rounding (measured max |Δp| ~1e-7). The paper concatenated the view features instead,
which is only approximately invariant; ``pool="concat"`` is kept for comparison.

The trunk follows the paper's (conv 6×6/32 → pool → conv 5×5/64 → pool → conv 3×3/128 → conv 3×3/128
→ pool) scaled by ``width``, with BatchNorm; ``downsample`` is the stride of the first convolution
(the paper downscaled its images 3× before cutting views; a strided first layer keeps the full-resolution
pixels for the same cost); the head is dense → ReLU → dropout → dense (the paper
used maxout layers of 2048 units; ``hidden`` sets the size).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from galmo.nn.models import register_model

N_VIEWS = 16


def rot90(x: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.rot90(x, k, dims=(-2, -1))`` as the flips and transpose it is made of (the same values
    to the bit), so that it exports to ONNX (``torch.rot90`` has no ONNX exporter)."""
    k %= 4
    if k == 1:
        return x.flip(-1).transpose(-2, -1)
    if k == 2:
        return x.flip(-2, -1)
    return x.flip(-2).transpose(-2, -1) if k == 3 else x


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th (0..7) element of D4 applied to (..., H, W): rotate by 90°·(k % 4), then flip if k ≥ 4."""
    y = rot90(x, k)
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def dihedral_orbit(x: torch.Tensor) -> list[torch.Tensor]:
    return [dihedral(x, k) for k in range(8)]


def rotation_grid(h: int, w: int, angle_deg: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """A (1, H, W, 2) ``grid_sample`` grid rotating an image by ``angle_deg`` about its centre.

    Pixel-centre coordinates relative to the centre are exact half-integers, and the rotation is
    computed in float64 and rounded once, so the grid is symmetric under the grid's own 90°
    rotations and flips to the last bit (what keeps the view set exactly permuted). The last
    :data:`GRID_CACHE_SIZE` grids are cached (one per size, angle, device and dtype in use).
    """
    return _grid(int(h), int(w), float(angle_deg), str(torch.device(device) if device is not None else "cpu"), dtype)


GRID_CACHE_SIZE = 32


@functools.lru_cache(maxsize=GRID_CACHE_SIZE)
def _grid(h: int, w: int, angle_deg: float, device: str, dtype) -> torch.Tensor:
    # a normal tensor even when first asked for under inference_mode: training may reuse it in autograd
    with torch.inference_mode(False):
        t = math.radians(angle_deg)
        c, s = math.cos(t), math.sin(t)
        ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
        xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        # output pixel p samples the input at R(-angle) p (in pixel units), then normalised
        # (align_corners=False: pixel i of n sits at (2i + 1)/n - 1 = 2 (i - (n-1)/2) / n)
        sx = c * xx + s * yy
        sy = -s * xx + c * yy
        return torch.stack([2 * sx / w, 2 * sy / h], dim=-1)[None].to(device=device, dtype=dtype)


def rotate(x: torch.Tensor, angle_deg: float, padding_mode: str = "zeros") -> torch.Tensor:
    """Rotate a (N, C, H, W) batch by ``angle_deg`` (bilinear, about the centre). 90° multiples are exact."""
    if angle_deg % 90 == 0:
        return rot90(x, int(angle_deg // 90))
    n, _, h, w = x.shape
    grid = rotation_grid(h, w, angle_deg, x.device, x.dtype).expand(n, -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if size >= min(h, w):
        return x
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def make_views(x: torch.Tensor, crop: int, downsample: int = 1) -> torch.Tensor:
    """(N, C, H, W) → (16·N, C, s, s): view v of image i at row v·N + i.

    Views 0–7: the dihedral orbit of the centred crop of ``x``; views 8–15: the same for ``x`` rotated
    by 45°. Requires H == W and (H − crop) even so that cropping commutes with the dihedral group.
    """
    base = [center_crop(x, crop), center_crop(rotate(x, 45.0), crop)]
    if downsample > 1:
        base = [F.avg_pool2d(b, downsample) for b in base]
    return torch.cat([v for b in base for v in dihedral_orbit(b)], dim=0)


def _conv(c_in, c_out, k, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class RotInvNet(nn.Module):
    """View-pooling network (see the module docstring). ``forward(x)`` takes (N, C, H, W), H == W."""

    def __init__(self, in_chans: int = 3, num_outputs: int = 10, image_size: int = 64, crop: int | None = None,
                 downsample: int = 1, width: int = 32, hidden: int = 256, drop_rate: float = 0.3,
                 pool: str = "mean"):
        super().__init__()
        if crop is None:  # the square inscribed in the 45°-rotated frame: no empty corners
            crop = int(image_size / math.sqrt(2))
        if (image_size - crop) % 2:
            crop -= 1
        if pool not in ("mean", "max", "meanmax", "concat"):
            raise ValueError(f"pool must be mean, max, meanmax or concat, got {pool!r}")
        self.image_size, self.crop, self.downsample, self.pool = image_size, crop, downsample, pool
        w = width
        self.trunk = nn.Sequential(
            _conv(in_chans, w, 5, stride=downsample), nn.MaxPool2d(2),
            _conv(w, 2 * w, 5), nn.MaxPool2d(2),
            _conv(2 * w, 4 * w, 3), _conv(4 * w, 4 * w, 3), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.view_features = 4 * w
        mult = {"mean": 1, "max": 1, "meanmax": 2, "concat": N_VIEWS}[pool]
        self.num_features = self.view_features * mult
        self.head = nn.Sequential(nn.Linear(self.num_features, hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
                                  nn.Linear(hidden, num_outputs))

    def views(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"RotInvNet needs square images, got {tuple(x.shape[-2:])}")
        return make_views(x, self.crop)

    # At inference, at most this many views go through the trunk per pass: one pass over all 16·N views
    # is what makes small batches fast, but past a few hundred views the activations fall out of cache
    # and one huge pass is slower than several (measured: width 32, batch 64, 0.7× a plain 16-pass loop
    # unchunked). Training always makes one pass (BatchNorm sees the whole batch).
    max_views_per_pass: int = 256

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        v = self.views(x)
        if self.training or v.shape[0] <= self.max_views_per_pass:
            f = self.trunk(v)  # ONE forward over all 16·N views
        else:
            f = torch.cat([self.trunk(c) for c in v.split(self.max_views_per_pass)])
        f = f.view(N_VIEWS, n, -1)
        if self.pool == "mean":
            return f.mean(0)
        if self.pool == "max":
            return f.amax(0)
        if self.pool == "meanmax":
            return torch.cat([f.mean(0), f.amax(0)], dim=1)
        return f.permute(1, 0, 2).reshape(n, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def forward_naive(self, x: torch.Tensor) -> torch.Tensor:
        """The same function with the 16 views as 16 separate trunk passes (benchmark reference)."""
        n = x.shape[0]
        views = self.views(x).view(N_VIEWS, n, *x.shape[1:2], *self.views(x[:1]).shape[-2:])
        f = torch.stack([self.trunk(views[v]) for v in range(N_VIEWS)])
        if self.pool == "mean":
            g = f.mean(0)
        elif self.pool == "max":
            g = f.amax(0)
        elif self.pool == "meanmax":
            g = torch.cat([f.mean(0), f.amax(0)], dim=1)
        else:
            g = f.permute(1, 0, 2).reshape(n, -1)
        return self.head(g)


@register_model
def rotinv(in_chans: int = 3, num_outputs: int = 10, image_size: int = 64, crop: int | None = None,
           downsample: int = 1, width: int = 32, hidden: int = 256, drop_rate: float = 0.3,
           pool: str = "mean") -> RotInvNet:
    """Dieleman et al. (2015) view-pooling network, exactly invariant to 90° rotations and flips."""
    return RotInvNet(in_chans=in_chans, num_outputs=num_outputs, image_size=image_size, crop=crop,
                     downsample=downsample, width=width, hidden=hidden, drop_rate=drop_rate, pool=pool)
