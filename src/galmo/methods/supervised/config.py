"""Settings of the supervised method, ``galmo train`` (no torch: the CLI reads them).

:class:`SupervisedConfig` holds every option of :func:`galmo.methods.supervised.run.train` once, with
its default and its help: the ``galmo train`` flags are generated from it and the run folder's
``config.json`` is its :meth:`~galmo.core.config.Config.save` (``galmo run`` re-runs it).
:class:`PredictConfig` and :class:`EvaluateConfig` give the flags of ``galmo predict`` / ``evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass

from galmo.core.config import (HELP, Config, backend_option, batch_size_option, data_option, device_option, on_error_option,
                               option, progress_option, seed_option)

MODELS = ("rotinv", "simple_cnn", "timm_classifier")
TARGETS = ("class", "votes")  # = galmo.nn.tasks.classify.TARGETS (that module imports torch)
PRECISIONS = ("fp32", "bf16", "fp16")
RUN_HELP = "a run folder made by `galmo train`; several: an ensemble (probabilities averaged)"
TTA_HELP = "average the predictions over N test-time transforms (8 = the dihedral group)"
CHECKPOINT_EVERY_HELP = ("also save the resumable checkpoint (last/) every this many training steps (0: only "
                         "by time and at epoch ends)")
CHECKPOINT_MINUTES_HELP = ("save the resumable checkpoint (last/) every this many minutes of training, and at "
                           "epoch ends; a crash or kill loses at most this much (0: only at epoch ends and by "
                           "--checkpoint-every)")


@dataclass
class SupervisedConfig(Config):
    """Every setting of one supervised training run (see docs/supervised.md)."""

    method = "train"

    data: str = data_option()
    out: str = option(None, "run folder, e.g. runs/rotinv")
    model: str = option("rotinv", "registered architecture: rotinv (the view-pooling network), simple_cnn or "
                        "timm_classifier", choices=MODELS)
    target: str = option("class", "Galaxy10 class or the 37 Galaxy Zoo vote fractions", choices=TARGETS)
    backbone: str | None = option(None, "timm model name; timm_classifier only (none: the offline "
                                  "tf_efficientnet_lite0)")
    weights: str | None = option("auto", "the backbone's initial weights: offline (packaged), FILE (.safetensors "
                                 "or state dict), hub (download) or none (random); timm_classifier only, auto: "
                                 "offline when the backbone is packaged, else none")
    width: int | None = option(None, "rotinv/simple_cnn: base channel width (none: 32)")
    downsample: int | None = option(None, "rotinv: stride of the first convolution (none: 2)")
    drop_rate: float | None = option(None, "dropout before the output layer (none: the model's default)")
    epochs: int = option(10, HELP["epochs"])
    batch_size: int = batch_size_option(64)
    lr: float = option(1e-3, HELP["lr"])
    weight_decay: float = option(0.05, "AdamW weight decay (not applied to biases and norm weights)")
    val_frac: float = option(0.1, "fraction of the images held out to validate the loss; it picks the best "
                             "epoch and stops early")
    test_frac: float = option(0.2, "fraction of the galaxies held out for the final test")
    seed: int = seed_option()
    device: str = device_option()
    resume: bool = option(False, HELP["resume"])
    checkpoint_every: int = option(0, HELP.get("checkpoint_every", CHECKPOINT_EVERY_HELP), metavar="STEPS")
    checkpoint_minutes: float = option(5.0, HELP.get("checkpoint_minutes", CHECKPOINT_MINUTES_HELP), metavar="MIN")
    patience: int | None = option(None, "early stop after this many epochs without improvement (none: never)")
    augment: bool = option(True, "augment the training images on the fly; random rotation, shift, zoom, flip "
                           "and brightness (Dieleman et al. 2015)")
    kind: str = option("image", "which images of the source to train on (image, flux, ...)", cli=False)
    max_images: int | None = option(None, HELP["max_images"])
    stop_after_steps: int | None = option(None, "stop (resumable) after this many steps (testing the resume)",
                                          cli=False)
    progress: bool = progress_option()
    evaluate_at_end: bool = option(True, "evaluate on the test split when training ends", cli=False)
    tta: int = option(1, TTA_HELP)  # of the final evaluation
    on_error: str = on_error_option()
    split_from: str | None = option(None, "reuse the train/val/test split of another run (compare or ensemble "
                                    "on the same test set)", metavar="RUN")
    ema: float | None = option(None, "validate and keep an exponential moving average of the weights with this "
                               "decay, e.g. 0.999 (none: no EMA)", metavar="DECAY")
    precision: str = option("fp32", "training arithmetic: bf16 autocast (CPUs with AVX-512 BF16 or AMX, recent "
                            "GPUs) or fp16 (CUDA); weights and predictions stay fp32", choices=PRECISIONS)
    channels_last: bool = option(False, "NHWC memory layout (faster convolutions)")
    zoom: float | None = option(None, "augmentation: log-uniform zoom in [1/Z, Z] (none: 1.3)")
    translate: float | None = option(None, "augmentation: max shift in pixels (none: 4)")


@dataclass
class PredictConfig(Config):
    """``galmo predict``: probabilities / vote fractions per galaxy (the triage flags are added by hand:
    they are mutually exclusive)."""

    run: tuple[str, ...] = option((), RUN_HELP, metavar="RUN")
    data: str = data_option()
    out: str = option(None, "output .parquet or .csv (same id column)")
    tta: int = option(1, TTA_HELP)
    batch_size: int = batch_size_option(256)
    device: str = device_option()
    backend: str = backend_option()
    on_error: str = on_error_option()
    progress: bool = progress_option()


@dataclass
class EvaluateConfig(Config):
    """``galmo evaluate``: top-1, balanced accuracy, P/R, confusion, coverage, calibration, RMSE."""

    run: tuple[str, ...] = option((), RUN_HELP, metavar="RUN")
    data: str = data_option()
    split: str = option("test", "the run's saved test split when its ids are in --data, or every galaxy (all)",
                        choices=("test", "all"))
    tta: int = option(1, TTA_HELP)
    out: str | None = option(None, "folder for metrics, figures and report; needed for an ensemble, whose "
                             "members must not have trained on the test split (train them with --split-from) "
                             "(none: the run folder)")
    batch_size: int = batch_size_option(256)
    device: str = device_option()
    backend: str = backend_option()
    progress: bool = progress_option()
