"""Supervised morphology (the ``galmo train`` task): Galaxy10 classes or Galaxy Zoo vote fractions.

A batch is (images, labels) with cross-entropy, or (images, votes) with a vote objective of a Galaxy
Zoo schema (:class:`galmo.nn.tasks.votes.VoteObjective`: the MSE of the tree-normalised outputs
against cumulative fractions, or zoobot's Dirichlet-multinomial likelihood of the counts); training images are
augmented with :func:`galmo.nn.augment.augment` when an :class:`~galmo.nn.augment.AugmentConfig`
is given, then mixed (mixup / CutMix, labels by the same λ) and labels smoothed when a
:class:`~galmo.nn.mix.MixConfig` is given (:func:`galmo.nn.mix.mix_batch`; the loss is then the
soft-target cross-entropy). Validation always scores the plain cross-entropy of the true labels.
"""

from __future__ import annotations

import math

from galmo.core.errors import GalmoError

TARGETS = ("class", "votes")


class SupervisedTask:
    """What a batch means for :func:`galmo.nn.train.fit`: (images, labels) or (images, vote fractions)."""

    def __init__(self, target: str = "class", augment_cfg=None, mix_cfg=None, n_classes: int | None = None,
                 class_weights=None, votes=None):
        if target not in TARGETS:
            raise GalmoError(f"--target must be one of {', '.join(TARGETS)} (got {target!r})")
        if target == "class" and mix_cfg is not None and not n_classes:
            raise GalmoError("mixing class labels needs the number of classes")
        if class_weights is not None and (target != "class" or (mix_cfg is not None and mix_cfg.mixing)):
            raise GalmoError("--class-weight balanced applies to the class target without mixup/cutmix")
        self.class_weights = class_weights  # (K,) tensor or None: weights of the training cross-entropy
        self.target = target
        self.augment_cfg = augment_cfg
        self.mix_cfg = mix_cfg
        self.n_classes = n_classes
        if target == "votes" and votes is None:
            from galmo.nn.tasks.votes import VoteObjective

            votes = VoteObjective()
        self.votes = votes  # a VoteObjective (votes target): the schema and the loss

    def loss(self, model, batch, generator):
        import torch.nn.functional as F

        from galmo.nn.augment import augment

        x, y = batch
        if self.augment_cfg is not None:
            x = augment(x, generator, self.augment_cfg)
        if self.mix_cfg is not None:
            from galmo.nn.mix import mix_batch, soft_cross_entropy

            x, y, _ = mix_batch(x, y, generator, self.mix_cfg, self.n_classes if self.target == "class" else None)
            if self.target == "class":
                return soft_cross_entropy(model(x), y), {}
        out = model(x)
        if self.target == "class":
            w = None if self.class_weights is None else self.class_weights.to(device=out.device, dtype=out.dtype)
            return F.cross_entropy(out, y, weight=w), {}
        return self.votes.loss(out, y), {}

    def validate(self, model, loader) -> dict:
        """val_loss and val_acc (class) or val_rmse (votes: of the cumulative fractions) over ``loader``,
        through galmo.nn.infer."""
        import torch
        import torch.nn.functional as F

        from galmo.nn.infer import infer_batches

        tot, second, n, per = 0.0, 0.0, 0, 1

        def sums(x, y):  # (summed loss, correct answers or summed squared error) of one batch
            nonlocal n, per
            n += len(y)
            per = 1 if self.target == "class" else y.shape[1]
            out = model(x)
            if self.target == "class":
                return torch.stack([F.cross_entropy(out, y, reduction="sum"), (out.argmax(1) == y).sum().float()])
            return torch.stack([self.votes.loss_sum(out, y), self.votes.squared_error_sum(out, y)])

        for s in infer_batches(sums, loader, device=next(model.parameters()).device, dtype=None):
            tot += float(s[0])
            second += float(s[1])
        if self.target == "class":
            return {"val_loss": tot / n, "val_acc": second / n}
        return {"val_loss": tot / n, "val_rmse": math.sqrt(second / (n * per))}
