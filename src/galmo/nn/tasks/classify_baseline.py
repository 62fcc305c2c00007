"""Cross-entropy classification with dihedral augmentation: the supervised CNN baseline of the
embeddings probes (:func:`galmo.methods.embeddings.probe.supervised_cnn`)."""

from __future__ import annotations

import numpy as np

from galmo.nn.tasks.pretrain import dihedral_augment


class DihedralClassifyTask:
    """Batches (images, integer labels); random flips/transposes in training."""

    def loss(self, model, batch, generator):
        import torch.nn.functional as F

        x, y = batch
        return F.cross_entropy(model(dihedral_augment(x.float(), generator)), y), {}

    def validate(self, model, loader) -> dict:
        """Mean cross-entropy and accuracy over ``loader``; the forward passes run through
        :func:`galmo.nn.infer.infer_batches`."""
        import torch
        import torch.nn.functional as F

        from galmo.nn.infer import infer_batches

        labels = []

        def logits(x, y):
            labels.append(y)
            return model(x)

        device = next(model.parameters()).device
        tot, correct, n = 0.0, 0, 0
        for out in infer_batches(logits, loader, device=device):
            y = labels.pop().cpu()
            tot += float(F.cross_entropy(torch.from_numpy(out), y, reduction="sum"))
            correct += int((np.argmax(out, 1) == y.numpy()).sum())
            n += len(y)
        return {"val_loss": tot / max(n, 1), "val_acc": correct / max(n, 1)}

