"""AstroPT-like autoregressive patch transformer (Smith et al. 2024; Euclid Q1 study, 2025).

The image is cut into ``patch_size``² patches (all bands in one token), the patches are ordered in
a spiral from the centre outward (:func:`spiral_order`), embedded linearly, given a learned
position embedding, and passed through a *causal* transformer that predicts the next patch
(Huber loss). Optional photometry tokens (one per catalog feature: magnitudes and colours) are
chained after the image tokens, each with its own learned embedding, and predicted the same way —
the multi-modal token chaining of the Euclid Q1 study.

Robust per-galaxy normalisation happens inside the model (:func:`normalise_images`): per-band
median subtracted, one scale per galaxy (the 99th percentile of |x| over all bands, so colours are
kept), then an arcsinh stretch. Any input — display-normalised [0, 1] composites, fluxes in
nanomaggies, JPEG photographs — therefore reaches the transformer on the same footing, and nothing
depends on a survey's exact noise level or PSF. Images of another size are resized to ``img_size``.

The embedding (:meth:`PatchTransformer.forward_features`) is the mean over all tokens (image and
photometry) of the final, layer-normed hidden states, as AstroPT averages its token embeddings.
The pretraining task (loss, dihedral augmentation) is :class:`galmo.nn.tasks.pretrain.PretrainTask`.

ONNX: :class:`FeatureEmbedder` makes the embedding one module for :mod:`galmo.nn.infer`. The median,
quantile, arcsinh and antialiased resize have no ONNX exporter; under ``torch.onnx.export`` (only
there) they are computed with operators that export (``topk``, logs, two matrix products), same
values to float32 rounding; PyTorch itself runs the original operators.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from galmo.core.errors import GalmoError
from galmo.nn.models import register_model

SIZES = {  # name -> (dim, depth, heads)
    "tiny": (64, 2, 4),
    "small": (128, 4, 4),
    "base": (256, 6, 8),
    "large": (512, 12, 8),
}


def spiral_order(gh: int, gw: int | None = None) -> np.ndarray:
    """Patch indices (row-major numbering) in spiral order from the centre outward.

    Patches are visited ring by ring (Chebyshev distance from the grid centre), and within a ring
    clockwise starting from the top-left corner direction, so the sequence winds outward like
    AstroPT's spiral. Every patch appears exactly once; the first is (one of) the central patch(es).
    """
    gw = gh if gw is None else gw
    ii, jj = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    di, dj = ii - (gh - 1) / 2.0, jj - (gw - 1) / 2.0
    ring = np.maximum(np.abs(di), np.abs(dj))
    angle = np.mod(np.arctan2(dj, -di) + 0.25 * np.pi, 2 * np.pi)  # clockwise from the top-left corner
    order = np.lexsort((angle.ravel(), np.round(ring.ravel(), 6)))
    return order.astype(np.int64)


def normalise_images(x: torch.Tensor, q: float = 0.99, stretch: float = 10.0) -> torch.Tensor:
    """Robust per-galaxy normalisation of (B, C, H, W): median-subtracted per band, divided by one
    per-galaxy scale (the ``q`` quantile of |x| over all bands), arcsinh-stretched. NaN/Inf → 0."""
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    flat = flat - _median(flat)[..., None]
    scale = _quantile(flat.abs().reshape(b, -1), q).clamp_min(1e-6).view(b, 1, 1)
    y = _asinh(stretch * flat / scale) / math.asinh(stretch)
    return y.reshape_as(x)


def _median(v: torch.Tensor) -> torch.Tensor:
    """torch's (lower) median over the last axis; under ``torch.onnx.export`` the same order
    statistic from a partial sort (``topk``: ONNX has no median operator)."""
    if not torch.onnx.is_in_onnx_export():
        return v.median(dim=-1).values
    n = v.shape[-1]
    return torch.topk(v, n - (n - 1) // 2, dim=-1).values[..., -1]


def _quantile(v: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(v, q, dim=-1)`` (linear interpolation); under ``torch.onnx.export`` the two
    order statistics around rank q·(n − 1) from a partial sort (``topk``), interpolated the same way."""
    if not torch.onnx.is_in_onnx_export():
        return torch.quantile(v, q, dim=-1)
    n = int(v.shape[-1])
    pos = float(np.float32(q) * np.float32(n - 1))  # the rank as torch computes it (float32)
    lo = int(math.floor(pos))
    top = torch.topk(v, n - lo, dim=-1).values  # descending: [..., -1] is rank lo, [..., -2] rank lo + 1
    return top[..., -1] if lo == n - 1 else torch.lerp(top[..., -1], top[..., -2], pos - lo)


def _asinh(v: torch.Tensor) -> torch.Tensor:
    """``torch.asinh``; under ``torch.onnx.export`` sign(v)·log(|v| + √(v² + 1)) (no exporter for asinh)."""
    if not torch.onnx.is_in_onnx_export():
        return torch.asinh(v)
    a = v.abs()
    return torch.sign(v) * torch.log(a + torch.sqrt(a * a + 1))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize to ``size``²; under ``torch.onnx.export`` the same linear map as
    two matrix products (:func:`galmo.nn.backbones._resize_matrix`: ONNX has no antialiased resize)."""
    if not torch.onnx.is_in_onnx_export():
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    from galmo.nn.backbones import _resize_matrix

    mh, mw = (_resize_matrix(int(n), size, x.device) for n in x.shape[-2:])
    return torch.matmul(torch.matmul(mh, x), mw.t())


class Block(nn.Module):
    """Pre-norm transformer block with causal self-attention (PyTorch SDPA)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))
        self.dropout = dropout

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class PatchTransformer(nn.Module):
    """Causal next-token transformer over spiral-ordered image patches (+ optional photometry tokens).

    ``n_phot``: number of photometry features chained after the image tokens (0: image only).
    Photometry values are standardised with the buffers ``phot_mean``/``phot_std`` (set from the
    pretraining set by :meth:`set_photometry_stats`, stored in the checkpoint).
    """

    def __init__(self, in_chans: int = 3, img_size: int = 64, patch_size: int = 8, size: str = "tiny",
                 dim: int | None = None, depth: int | None = None, heads: int | None = None,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, n_phot: int = 0,
                 phot_names: list | None = None, huber_delta: float = 1.0):
        super().__init__()
        if size not in SIZES:
            raise GalmoError(f"unknown patch transformer size {size!r}; known: {', '.join(SIZES)}")
        d0, l0, h0 = SIZES[size]
        dim, depth, heads = dim or d0, depth or l0, heads or h0
        if img_size % patch_size:
            raise GalmoError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if dim % heads:
            raise GalmoError(f"dim {dim} is not divisible by heads {heads}")
        self.in_chans, self.img_size, self.patch_size = in_chans, img_size, patch_size
        self.grid = img_size // patch_size
        self.n_patches = self.grid ** 2
        self.n_phot = int(n_phot)
        self.phot_names = list(phot_names or [])
        self.huber_delta = huber_delta
        self.num_features = dim
        self.patch_dim = in_chans * patch_size * patch_size
        self.register_buffer("order", torch.as_tensor(spiral_order(self.grid)), persistent=False)
        self.patch_embed = nn.Sequential(nn.Linear(self.patch_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.pos = nn.Parameter(torch.zeros(1, self.n_patches + self.n_phot, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, self.patch_dim)
        if self.n_phot:
            self.phot_w = nn.Parameter(torch.randn(self.n_phot, dim) * 0.02)
            self.phot_b = nn.Parameter(torch.zeros(self.n_phot, dim))
            self.phot_head = nn.Linear(dim, 1)
            self.register_buffer("phot_mean", torch.zeros(self.n_phot))
            self.register_buffer("phot_std", torch.ones(self.n_phot))

    # ------------------------------------------------------------------ tokens
    def set_photometry_stats(self, values: np.ndarray) -> None:
        v = np.asarray(values, np.float64)
        mean = np.nanmean(v, axis=0)
        std = np.nanstd(v, axis=0)
        self.phot_mean.copy_(torch.as_tensor(np.nan_to_num(mean), dtype=torch.float32))
        self.phot_std.copy_(torch.as_tensor(np.where(np.isfinite(std) & (std > 0), std, 1.0), dtype=torch.float32))

    def prepare(self, x: torch.Tensor, normalised: bool = False) -> torch.Tensor:
        """Normalised, resized images → (B, P, patch_dim) patches in spiral order (``normalised``: the
        images already went through :func:`normalise_images`)."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise GalmoError(f"patch transformer expects (B, {self.in_chans}, H, W) images, got {tuple(x.shape)}")
        x = x.float() if normalised else normalise_images(x)
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = _resize(x, self.img_size)
        b, c, p = x.shape[0], self.in_chans, self.patch_size
        g = self.grid
        patches = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p)
        return patches[:, self.order]

    def _phot_values(self, phot, b: int, device) -> torch.Tensor:
        if phot is None:
            raise GalmoError(f"this model chains {self.n_phot} photometry tokens ({', '.join(self.phot_names)}); "
                             "give photometry (catalog columns) with the images")
        v = torch.as_tensor(phot, dtype=torch.float32, device=device).reshape(b, self.n_phot)
        v = (v - self.phot_mean) / self.phot_std
        return torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0).clamp(-10, 10)

    def hidden(self, patches: torch.Tensor, phot_v: torch.Tensor | None = None) -> torch.Tensor:
        """Final normed hidden states (B, T, dim) for prepared patches (+ standardised photometry)."""
        h = self.patch_embed(patches)
        if self.n_phot and phot_v is not None:
            h = torch.cat([h, phot_v[..., None] * self.phot_w + self.phot_b], 1)
        h = h + self.pos[:, :h.shape[1]]
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h)

    # ------------------------------------------------------------------ public
    def forward(self, x, phot=None):
        """Next-token predictions: (patch predictions (B, P-1, patch_dim), photometry predictions or None)."""
        patches = self.prepare(x)
        pv = self._phot_values(phot, x.shape[0], x.device) if self.n_phot else None
        h = self.hidden(patches, pv)
        img_pred = self.head(h[:, :self.n_patches - 1])
        phot_pred = self.phot_head(h[:, self.n_patches - 1:self.n_patches - 1 + self.n_phot])[..., 0] \
            if self.n_phot else None
        return img_pred, phot_pred

    def pretrain_loss(self, x, phot=None, normalised: bool = False) -> tuple[torch.Tensor, dict]:
        patches = self.prepare(x, normalised)
        pv = self._phot_values(phot, x.shape[0], x.device) if self.n_phot else None
        h = self.hidden(patches, pv)
        img_loss = F.huber_loss(self.head(h[:, :self.n_patches - 1]), patches[:, 1:], delta=self.huber_delta)
        logs = {"img_loss": float(img_loss.detach())}
        loss = img_loss
        if self.n_phot:
            pred = self.phot_head(h[:, self.n_patches - 1:self.n_patches - 1 + self.n_phot])[..., 0]
            phot_loss = F.huber_loss(pred, pv, delta=self.huber_delta)
            loss = loss + phot_loss
            logs["phot_loss"] = float(phot_loss.detach())
        return loss, logs

    def forward_features(self, x, phot=None, tokens: str = "all") -> torch.Tensor:
        """The embedding: mean over tokens of the final hidden states, (B, dim).

        ``tokens="all"``: image and photometry tokens (the default); ``"image"``: image tokens only —
        an embedding without photometry information from the same weights (causal attention: image
        tokens never see the photometry tokens chained after them), so no photometry is needed."""
        patches = self.prepare(x)
        if tokens == "image" or not self.n_phot:
            return self.hidden(patches).mean(1)
        if tokens != "all":
            raise GalmoError(f"tokens must be 'all' or 'image', got {tokens!r}")
        return self.hidden(patches, self._phot_values(phot, x.shape[0], x.device)).mean(1)


@register_model
def patch_transformer(**kwargs) -> PatchTransformer:
    return PatchTransformer(**kwargs)


class FeatureEmbedder(nn.Module):
    """The embedding of a model as one module, so the inference loop can run it with ONNX Runtime:
    ``model.forward_features`` — for a :class:`PatchTransformer` with its ``tokens`` choice ("all" or
    "image") and the photometry — pooled over positions when it gives feature maps (B, C, ...)."""

    def __init__(self, model: nn.Module, tokens: str = "all"):
        super().__init__()
        self.model = model
        self.tokens = tokens
        # --backend auto keeps the patch transformer on PyTorch: its exported graph (unfused attention,
        # the exportable median) ran at 0.45–0.8× torch at batch ≥ 16 (benchmarks/bench_inference.py)
        self.onnx_auto = not isinstance(model, PatchTransformer)

    def extra_repr(self) -> str:
        return f"tokens={self.tokens!r}"

    def forward(self, x: torch.Tensor, phot: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(self.model, PatchTransformer):
            return self.model.forward_features(x, phot, tokens=self.tokens)
        out = self.model.forward_features(x)
        return out.flatten(2).mean(-1) if out.ndim > 2 else out
