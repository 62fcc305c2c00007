"""eUML stage 1: a convolutional autoencoder denoiser trained on the images themselves."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from galmo.core.metrics import psnr
from galmo.core.transforms import noise_sigma
from galmo.nn.tasks.denoise import DenoiseTask
from galmo.stages._common import StageInputError, check_fitted, check_images


class Denoiser(TransformerMixin, BaseEstimator):
    """Convolutional autoencoder denoiser trained on the images themselves (eUML stage 1).

    Trained with the one loop :func:`galmo.nn.train.fit` (noise injected at the input, see
    :class:`DenoiseTask`) on at most ``max_train`` of the images (each drawn with probability
    max_train / N from ``seed``); best weights are saved as a galmo checkpoint in ``run_dir`` (with
    ``run_dir=None`` in a temporary folder removed after the fit: the weights stay in memory only).
    ``checkpoint``: a folder of a previous fit to load instead of training. ``latent``: an int gives
    eUML's dense bottleneck; None a convolutional one (default). ``transform`` runs the model through
    :func:`galmo.nn.infer.infer` and clips to the range of the training images (``data_range_``).
    """

    def __init__(self, epochs: int = 8, batch_size: int = 64, lr: float = 2e-3, widths: tuple = (32, 64),
                 kernel: int = 5, latent: int | None = None, residual: bool = False, noise_factor: float = 1.0, run_dir=None,
                 checkpoint=None, seed: int = 0, device: str = "auto", progress: bool = False,
                 max_train: int | None = None):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.widths = widths
        self.kernel = kernel
        self.latent = latent
        self.residual = residual
        self.noise_factor = noise_factor
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.seed = seed
        self.device = device
        self.progress = progress
        self.max_train = max_train

    def fit(self, X, y=None):
        from galmo.nn import checkpoint as ckpt
        from galmo.nn.device import set_threads

        set_threads()
        X = check_images(X, "Denoiser")
        if self.max_train is not None:  # the draw galmo cluster makes: each image with probability max_train / N
            X = X[np.random.default_rng(self.seed).random(len(X)) < min(1.0, self.max_train / max(1, len(X)))]
        if not len(X):
            raise StageInputError("Denoiser: no images to train on")
        self.data_range_ = (float(X.min()), float(X.max()))
        if self.checkpoint is not None:
            self.model_, self.config_ = ckpt.load_checkpoint(self.checkpoint)
            self.data_range_ = tuple(self.config_.get("data_range", self.data_range_))
            self.checkpoint_dir_ = Path(self.checkpoint)
            self.history_ = []
            return self
        if self.run_dir:
            self.checkpoint_dir_ = Path(self.run_dir)
            self.history_ = self._train(X, self.checkpoint_dir_)
        else:
            with tempfile.TemporaryDirectory(prefix="galmo-denoiser-") as tmp:
                self.history_ = self._train(X, Path(tmp))
            self.checkpoint_dir_ = None
        return self

    def _train(self, X: np.ndarray, run_dir: Path) -> list:
        import torch
        from torch.utils.data import TensorDataset

        from galmo.nn.models import create
        from galmo.nn.train import TrainConfig, fit

        n, c, h, w = X.shape
        kwargs = {"in_chans": c, "size": h, "widths": list(self.widths), "kernel": self.kernel, "latent": self.latent,
                  "residual": self.residual}
        torch.manual_seed(self.seed)
        model = create("conv_autoencoder", **kwargs)
        sigma = torch.from_numpy(np.maximum(noise_sigma(X), 1e-4))
        data = torch.from_numpy(X)
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = min(max(1, n // 10), 512) if n >= 10 else 0
        val, train = order[:n_val], order[n_val:]
        train_set = TensorDataset(data[train], sigma[train])
        val_set = TensorDataset(data[val], sigma[val]) if n_val else None
        cfg = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=1e-4,
                          seed=self.seed, device=self.device, progress=self.progress)
        summary = fit(model, train_set, val_set, DenoiseTask(self.noise_factor), cfg, run_dir,
                      model_name="conv_autoencoder", model_kwargs=kwargs,
                      extra_config={"stage": "Denoiser", "noise_factor": self.noise_factor,
                                    "data_range": list(self.data_range_)})
        self.model_ = model.cpu().eval()
        return summary["history"]

    def transform(self, X):
        from galmo.nn.infer import infer

        check_fitted(self, "model_")
        X = check_images(X, "Denoiser")
        out = infer(self.model_, X, batch_size=256, device=self.device)
        lo, hi = getattr(self, "data_range_", (float(X.min()), float(X.max())))
        return np.clip(out, lo, hi)

    def psnr_gain(self, noisy, clean) -> dict:
        """PSNR (dB) of the noisy images and of their denoised version against the clean ones."""
        noisy = check_images(noisy, "Denoiser")
        clean = check_images(clean, "Denoiser")
        den = self.transform(noisy)
        before, after = psnr(noisy, clean, 1.0), psnr(den, clean, 1.0)
        return {"psnr_noisy": before, "psnr_denoised": after, "psnr_gain": after - before}
