"""Mixup and CutMix with label mixing and label smoothing (timm's ``Mixup``), reproducible per step.

:func:`mix_batch` mixes a training batch with its reverse (timm's ``batch`` mode): with probability
``prob`` the batch is mixed, by mixup (λ ~ Beta(``mixup``, ``mixup``), pixels λ·x + (1 − λ)·x_rev) or,
with probability ``switch_prob`` when both are on, by CutMix (λ ~ Beta(``cutmix``, ``cutmix``), a box of
area ≈ 1 − λ pasted from x_rev; λ then corrected to the box's exact area). The labels are mixed by the
same λ: class labels become timm's smoothed one-hot targets ``λ·onehot(y) + (1 − λ)·onehot(y_rev)``
(``mixup_target``, smoothing ``label_smoothing``), vote fractions ``λ·v + (1 − λ)·v_rev``.

timm draws its random numbers from numpy's global generator; here it is seeded from the training
step's torch generator and restored afterwards, so a mixed run stays exactly resumable and the
caller's numpy state is untouched. A batch of odd size (the last of an epoch) is not mixed (timm's
batch mode pairs images with the reversed batch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class MixConfig:
    mixup: float = 0.0           # mixup α (0: off)
    cutmix: float = 0.0          # CutMix α (0: off)
    prob: float = 1.0            # probability that a batch is mixed
    switch_prob: float = 0.5     # with both on: probability of CutMix rather than mixup
    label_smoothing: float = 0.0

    @property
    def mixing(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def to_dict(self) -> dict:
        return asdict(self)


def mix_batch(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, cfg: MixConfig,
              num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mixed images, soft targets, λ) of a batch; ``num_classes`` for class labels, None for vote
    fractions (soft targets already). ``x`` is not modified."""
    from timm.data.mixup import Mixup, mixup_target

    lam = 1.0
    if cfg.mixing and len(x) % 2 == 0:
        x = x.clone()
        mixer = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.prob, switch_prob=cfg.switch_prob,
                      mode="batch", label_smoothing=0.0, num_classes=num_classes or 1)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        state = np.random.get_state()
        try:
            np.random.seed(seed)
            lam = float(mixer._mix_batch(x))  # in place on the clone; timm's per-batch λ, box-corrected
        finally:
            np.random.set_state(state)
    if num_classes is None:
        return x, lam * y + (1.0 - lam) * y.flip(0), lam
    return x, mixup_target(y, num_classes, lam, cfg.label_smoothing), lam


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft targets (timm's ``SoftTargetCrossEntropy``), mean over the batch."""
    from timm.loss import SoftTargetCrossEntropy

    return SoftTargetCrossEntropy()(logits, target)
