"""Class- or vote-conditional denoising U-Net (diffusers ``UNet2DModel``) for generative augmentation.

Two conditioning modes, both with a *null* condition for classifier-free guidance (Ho & Salimans
2022):

* ``condition="class"``: ``num_class_embeds = n_classes + 1``; the last index is the null class.
* ``condition="votes"``: the 37 Galaxy Zoo cumulative vote fractions (the structured form of
  GalaxySD's captions) go through a small MLP into the time-embedding space and are fed to the
  U-Net as ``class_labels`` with ``class_embed_type="identity"``; the null condition is a learned
  vector of that space.

``forward(sample, timestep, cond, null=None)`` predicts the velocity v = √ᾱ·ε − √(1−ᾱ)·x₀ (Salimans &
Ho 2022; ``prediction_type="v_prediction"``, the default) or the noise ε (``"epsilon"``); ``null`` (bool,
N) replaces the condition of those rows by the null one. Images are in [-1, 1], any number of bands.
Why v: with the squared-cosine schedule ᾱ(T) ≈ 2·10⁻⁹, and an ε-predicting network must then be
exact to 10⁻⁵ for x₀ = (x_t − √(1−ᾱ)·ε)/√ᾱ to make sense; after a few hundred CPU steps the tiny model
was not (ε-MSE 0.065 at t = 900 where "x₀ = the mean image" scores 0.0014) and sampled grey noise,
whereas v ≈ −x₀ at high noise is what a small network learns first.

Sizes by name (:data:`SIZES`): ``micro`` (16 px, (16, 32), no attention: tests and the demo), ``tiny``
(32 px, channels (32, 64, 128), attention only at 8×8: the one that trains on 2 CPU cores), ``small`` (64 px, (64, 128, 256, 256), attention at 16 and 8) and
``base`` (64 px, (128, 256, 256, 512)) for a GPU. The noise schedule the model was trained with is
part of its kwargs (:attr:`GalaxyUNet.noise_schedule`, with the prediction type), so any diffusers scheduler
is built from it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from galmo.core.errors import GalmoError
from galmo.core.schema import N_ANSWERS
from galmo.nn.models import register_model

CONDITIONS = ("class", "votes")
PREDICTIONS = ("v_prediction", "epsilon")  # what the network predicts (diffusers' prediction_type)
# name → (image size, block widths, attention per level, resnets per level, norm groups)
SIZES = {
    "micro": (16, (16, 32), (False, False), 1, 4),
    "tiny": (32, (32, 64, 128), (False, False, True), 1, 8),
    "small": (64, (64, 128, 256, 256), (False, False, True, True), 2, 32),
    "base": (64, (128, 256, 256, 512), (False, True, True, True), 2, 32),
}


def unet_config(size: str, in_chans: int, image_size: int | None = None) -> dict:
    """``UNet2DModel`` keyword arguments of a named size (class embedding added by the caller)."""
    if size not in SIZES:
        raise GalmoError(f"unknown generator size {size!r}; known: {', '.join(SIZES)}")
    px, widths, attn, layers, groups = SIZES[size]
    return dict(sample_size=int(image_size or px), in_channels=in_chans, out_channels=in_chans,
                block_out_channels=widths, layers_per_block=layers, norm_num_groups=groups,
                down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
                up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
                attention_head_dim=32)


class GalaxyUNet(nn.Module):
    """A conditional ``UNet2DModel`` predicting ε; see the module docstring."""

    def __init__(self, size: str = "tiny", condition: str = "class", n_classes: int = 10, in_chans: int = 3,
                 image_size: int | None = None, num_train_timesteps: int = 1000,
                 beta_schedule: str = "squaredcos_cap_v2", prediction_type: str = "v_prediction"):
        super().__init__()
        from diffusers import UNet2DModel

        if condition not in CONDITIONS:
            raise GalmoError(f"--condition must be one of {', '.join(CONDITIONS)} (got {condition!r})")
        cfg = unet_config(size, in_chans, image_size)
        self.condition, self.n_classes, self.in_chans = condition, int(n_classes), int(in_chans)
        self.image_size = cfg["sample_size"]
        if prediction_type not in PREDICTIONS:
            raise GalmoError(f"prediction_type must be one of {', '.join(PREDICTIONS)} (got {prediction_type!r})")
        self.noise_schedule = {"num_train_timesteps": int(num_train_timesteps), "beta_schedule": beta_schedule,
                               "prediction_type": prediction_type}
        emb_dim = cfg["block_out_channels"][0] * 4  # diffusers' time-embedding width
        if condition == "class":
            self.unet = UNet2DModel(**cfg, num_class_embeds=self.n_classes + 1)
        else:
            self.unet = UNet2DModel(**cfg, class_embed_type="identity")
            self.vote_mlp = nn.Sequential(nn.Linear(N_ANSWERS, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.null_embedding = nn.Parameter(torch.zeros(emb_dim))

    @property
    def null_class(self) -> int:
        return self.n_classes

    def embed_condition(self, cond: torch.Tensor, null: torch.Tensor | None) -> torch.Tensor:
        """What the U-Net gets as ``class_labels``: class indices (null → the last index) or vote embeddings."""
        if self.condition == "class":
            cond = cond.long()
            return cond if null is None else torch.where(null, torch.full_like(cond, self.null_class), cond)
        emb = self.vote_mlp(cond.float())
        if null is None:
            return emb
        return torch.where(null[:, None], self.null_embedding.to(emb.dtype).expand_as(emb), emb)

    def forward(self, sample, timestep, cond, null=None):
        return self.unet(sample, timestep, class_labels=self.embed_condition(cond, null), return_dict=False)[0]


@register_model
def diffusion_unet(**kwargs) -> GalaxyUNet:
    return GalaxyUNet(**kwargs)
