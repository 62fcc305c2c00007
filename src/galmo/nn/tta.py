"""Test-time augmentation and ensembles as ONE module, so the inference loop exports them as one graph.

:class:`TTAEnsemble` ``(models, target, tta)`` maps an image batch to the predictions of every member
(class probabilities by softmax, or Galaxy Zoo vote fractions by
:func:`galmo.core.schema.normalise_votes`) averaged over the member's ``tta`` test-time transforms
(:func:`tta_transforms`: the dihedral group, then a finer grid of rotation angles), then averaged over
the members. Its ``forward`` is plain tensor code (the flips and transposes of
:func:`galmo.nn.models.rotinv.dihedral` and the bilinear ``grid_sample`` rotation of
:func:`galmo.nn.models.rotinv.rotate`), so :mod:`galmo.nn.infer` runs it
with ONNX Runtime on CPU; what does not export or match runs with PyTorch (one warning).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from galmo.core.errors import GalmoError
from galmo.core.schema import normalise_votes
from galmo.nn.models.rotinv import dihedral, dihedral_orbit, rotate


def tta_transforms(n: int, period: float = 90.0) -> list[tuple[int, float]]:
    """``n`` test-time transforms (dihedral index 0..7, extra rotation angle in degrees).

    The first 8 are the dihedral group; beyond that the angle grid is refined: with m = ⌈n/8⌉ angles
    k·period/m, each combined with the 8 dihedral transforms. ``n=1`` is the identity. ``period`` is
    90° for ordinary models and 45° for ``rotinv``, which already pools the 45° multiples.
    """
    if n < 1:
        raise GalmoError(f"--tta must be ≥ 1 (got {n})")
    m = math.ceil(n / 8)
    return [(j % 8, (j // 8) * period / m) for j in range(n)]


def apply_transform(x: torch.Tensor, k: int, angle: float) -> torch.Tensor:
    """Rotate (N, C, H, W) by ``angle`` degrees (bilinear, reflected borders; none for multiples of
    360°), then apply the ``k``-th dihedral transform (exact)."""
    if angle % 360:
        x = rotate(x, angle, padding_mode="reflection")
    return dihedral(x, k)


def tta_period(model: nn.Module) -> float:
    """The angle period of the transforms: 45° for ``rotinv`` (it pools the 45° views), else 90°."""
    return 45.0 if type(model).__name__ == "RotInvNet" else 90.0


def predictions(out: torch.Tensor, target: str, votes=None) -> torch.Tensor:
    """Raw network outputs → class probabilities (softmax) or tree-consistent vote fractions; with a
    :class:`galmo.nn.tasks.votes.VoteObjective` ``votes``, what it averages (fractions or concentrations)."""
    if target == "class":
        return out.softmax(1)
    return normalise_votes(out) if votes is None else votes.outputs(out)


class TTAEnsemble(nn.Module):
    """Predictions of ``models`` on a batch: each member's averaged over its ``tta`` transforms
    (:func:`tta_transforms` with the member's :func:`tta_period`), then averaged over the members."""

    def __init__(self, models, target: str, tta: int = 1, votes=None):
        super().__init__()
        self.members = nn.ModuleList(models)
        self.target = target
        self.votes = votes  # the vote head's VoteObjective (schema, loss); None: the Kaggle table, mse
        self.transforms = [tta_transforms(tta, period=tta_period(m)) for m in self.members]

    def extra_repr(self) -> str:  # part of the ONNX cache key: the transforms and the vote head change the graph
        head = "" if self.votes is None else f", votes={self.votes.schema.name}/{self.votes.kind}"
        return f"target={self.target!r}, transforms={self.transforms}{head}"

    def member_mean(self, model: nn.Module, x: torch.Tensor, tfs) -> torch.Tensor:
        """One member's predictions averaged over the transforms ``tfs``."""
        return sum(predictions(model(apply_transform(x, k, angle)), self.target, self.votes)
                   for k, angle in tfs) / len(tfs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(self.member_mean(m, x, tfs) for m, tfs in zip(self.members, self.transforms)) / len(self.members)


def dihedral_mean(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn``'s (B, d) output averaged over the 8 rotations by 90° and flips of a square batch, in one
    call on the 8·B images (``fn(x)`` as it is for a non-square batch)."""
    if x.shape[-1] != x.shape[-2]:
        return fn(x)
    views = torch.cat([v.contiguous() for v in dihedral_orbit(x)])
    return fn(views).reshape(8, x.shape[0], -1).mean(0)


class DihedralMean(nn.Module):
    """An embedding made invariant to the 8 symmetries of the square (:func:`dihedral_mean`) as one
    module: ``module.forward_features`` (``features=True``) or ``module`` itself, averaged."""

    def __init__(self, module: nn.Module, features: bool = True):
        super().__init__()
        self.module = module
        self.features = features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        fn = self.module.forward_features if self.features else self.module
        return dihedral_mean(lambda v: _pooled(fn(v)), x)

    forward = forward_features


def _pooled(out: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) feature maps → (B, C) means; (B, d) as it is."""
    return out.flatten(2).mean(-1) if out.ndim > 2 else out
