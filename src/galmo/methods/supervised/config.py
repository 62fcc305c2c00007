"""Settings of the supervised method, ``galmo train`` (no torch: the CLI reads them).

:class:`SupervisedConfig` holds every option of :func:`galmo.methods.supervised.run.train` once, with
its default and its help: the ``galmo train`` flags are generated from it and the run folder's
``config.json`` is its :meth:`~galmo.core.config.Config.save` (``galmo run`` re-runs it).
:class:`PredictConfig` and :class:`EvaluateConfig` give the flags of ``galmo predict`` / ``evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass

from galmo.core.config import (HELP, Config, backend_option, batch_size_option, crop_frac_option, data_option,
                               device_option, framing_option, on_error_option, option, progress_option, seed_option)
from galmo.core.schemas import SCHEMA_NAMES

ASTROFORMERS = tuple(f"astroformer-{s}" for s in ("tiny", "small", "0", "1", "2", "3", "4", "5"))
MODELS = ("rotinv", "simple_cnn", "timm_classifier", *ASTROFORMERS)
# The regularisation recipe of Astroformer (Dagli 2023), what --recipe astroformer sets; a flag given
# explicitly wins. Mixup 0.8, CutMix 1.0 (the timm/DeiT values the paper's training used), label
# smoothing 0.1, dropout 0.1, stochastic depth 0.1, and the morphology-preserving augmentation policy.
RECIPES = {"astroformer": {"mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1, "drop_rate": 0.1,
                           "drop_path": 0.1, "policy_ops": 2}}
TARGETS = ("class", "votes")  # = galmo.nn.tasks.classify.TARGETS (that module imports torch)
VOTE_LOSSES = ("mse", "dirichlet")  # = galmo.nn.tasks.votes.VOTE_LOSSES
SCHEMA_HELP = ("the Galaxy Zoo decision tree of the votes: gz2-kaggle (the 37 cumulative fractions Class1.1 .. "
               "Class11.6, what the simulator writes), or the vote counts of galaxy-datasets / zoobot catalogs: gz2, "
               "decals-dr12, decals-dr5, decals-dr8, hubble, candels; auto: the one whose columns the data has")
VOTE_LOSS_HELP = ("votes target: mse of the cumulative vote fractions (Dieleman et al. 2015) or dirichlet (zoobot's "
                  "Dirichlet-multinomial likelihood of the vote counts: predictions get concentrations and an "
                  "uncertainty)")
PREDICT_FORMATS = ("galmo", "zoobot")
PRECISIONS = ("fp32", "bf16", "fp16")
VAL_FRAC_HELP = "fraction of the images held out to validate the loss; it picks the best epoch and stops early"
TEST_FRAC_HELP = "fraction of the galaxies held out for the final test"
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
    model: str = option("rotinv", "registered architecture: rotinv (the view-pooling network), simple_cnn, "
                        "timm_classifier (any timm backbone) or astroformer-SIZE (the hybrid conv-transformer; "
                        "tiny and small train on a laptop CPU, 0–5 are the published sizes)", choices=MODELS,
                        metavar="MODEL")
    target: str = option("class", "Galaxy10 class or the Galaxy Zoo votes (of --schema)", choices=TARGETS)
    schema: str = option("auto", SCHEMA_HELP, choices=("auto",) + SCHEMA_NAMES)
    vote_loss: str = option("mse", VOTE_LOSS_HELP, choices=VOTE_LOSSES)
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
    val_frac: float = option(0.1, VAL_FRAC_HELP)
    test_frac: float = option(0.2, TEST_FRAC_HELP)
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
    init_from: str | None = option(None, "start from the weights of another run of the same model (fine-tuning, e.g. "
                                   "on expert labels); its architecture settings are used", metavar="RUN")
    split_from: str | None = option(None, "reuse the train/val/test split of another run (compare or ensemble "
                                    "on the same test set)", metavar="RUN")
    ema: float | None = option(None, "validate and keep an exponential moving average of the weights with this "
                               "decay, e.g. 0.999 (none: no EMA)", metavar="DECAY")
    precision: str = option("fp32", "training arithmetic: bf16 autocast (CPUs with AVX-512 BF16 or AMX, recent "
                            "GPUs) or fp16 (CUDA); weights and predictions stay fp32", choices=PRECISIONS)
    channels_last: bool = option(False, "NHWC memory layout (faster convolutions)")
    zoom: float | None = option(None, "augmentation: log-uniform zoom in [1/Z, Z] (none: 1.3)")
    translate: float | None = option(None, "augmentation: max shift in pixels (none: 4)")
    recipe: str | None = option(None, "a regularisation preset: astroformer = mixup 0.8, cutmix 1.0, label "
                                "smoothing 0.1, dropout 0.1, stochastic depth 0.1, augmentation policy 2 ops; "
                                "flags given explicitly win (none: no preset)", choices=tuple(RECIPES))
    mixup: float | None = option(None, "mixup α: images and labels mixed by λ ~ Beta(α, α) (none: the recipe's, "
                                 "else 0 = off)")
    cutmix: float | None = option(None, "CutMix α: a box of another image pasted, labels mixed by its area "
                                  "(none: the recipe's, else 0 = off)")
    mix_prob: float = option(1.0, "probability that a batch is mixed when mixup or cutmix is on")
    label_smoothing: float | None = option(None, "class target: label smoothing ε (none: the recipe's, else 0)")
    drop_path: float | None = option(None, "stochastic depth rate, for models that have it (astroformer, most "
                                     "timm backbones) (none: the recipe's, else 0)")
    policy_ops: int | None = option(None, "augmentation policy (RandAugment-like, morphology-preserving): this "
                                    "many of blur/noise/gain/colour per image (none: the recipe's, else 0 = off)")
    policy_magnitude: float = option(0.5, "augmentation policy strength in [0, 1]")
    warmup_frac: float = option(0.05, "fraction of the training steps spent warming the learning rate up "
                                "(then cosine decay)")
    class_weight: str = option("none", "class target: weight the loss per class; balanced = inverse class frequency "
                               "in the training split (a rare class counts as much as a common one in all)",
                               choices=("none", "balanced"))
    train_frac: float = option(1.0, "train on this fraction of the training split (stratified; the val and test "
                               "splits unchanged): data-efficiency studies")

    def resolved(self, name: str):
        """A recipe-aware setting: the explicit value, else the recipe's, else off."""
        value = getattr(self, name)
        if value is not None:
            return value
        return RECIPES.get(self.recipe or "", {}).get(name, 0 if name != "drop_rate" else None)


@dataclass
class PredictConfig(Config):
    """``galmo predict``: probabilities / vote fractions per galaxy (the triage flags are added by hand:
    they are mutually exclusive)."""

    run: tuple[str, ...] = option((), RUN_HELP, metavar="RUN")
    data: str = data_option()
    out: str = option(None, "output .parquet or .csv (same id column)")
    format: str = option("galmo", "columns of the output: galmo (id, probabilities or vote fractions, confidence, "
                         "...) or zoobot (id_str and zoobot / galaxy-datasets names: <answer>_fraction, and "
                         "<answer>_concentration for a dirichlet run), which their code reads unchanged",
                         choices=PREDICT_FORMATS)
    tta: int = option(1, TTA_HELP)
    framing: str | None = framing_option()
    crop_frac: float | None = crop_frac_option()
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
    framing: str | None = framing_option()
    crop_frac: float | None = crop_frac_option()
    batch_size: int = batch_size_option(256)
    device: str = device_option()
    backend: str = backend_option()
    progress: bool = progress_option()


STUDY_MODELS = ("rotinv", "convnext-atto", "lite0", "astroformer-tiny")  # = galmo.methods.supervised.study.MODELS
STUDY_RECIPES = ("none", "astroformer")


@dataclass
class DataEfficiencyConfig(Config):
    """``galmo study data-efficiency``: accuracy vs training-set size for several models, with and without
    the regularisation recipe, over seeds, on one source (the same val/test split per seed). ``epochs``
    are those of the full training set; a fraction f trains ⌈epochs / √f⌉ epochs (more passes over
    fewer images, fewer updates in all)."""

    method = "study-data-efficiency"

    data: str | None = option(None, HELP["data"] + " (none: the embedded default sample)", metavar="SOURCE")
    out: str = option(None, "study folder (one training run per setting under runs/, the table, the plot, "
                      "the report)")
    models: tuple[str, ...] = option(STUDY_MODELS, "models to compare: rotinv (view-pooling CNN), convnext-atto "
                                     "(timm, from scratch), lite0 (EfficientNet-Lite0 fine-tuned from its ImageNet "
                                     "weights), astroformer-tiny / astroformer-small", metavar="MODEL")
    fractions: tuple[float, ...] = option((0.05, 0.2, 1.0), "fractions of the training split to train on",
                                          metavar="FRAC")
    seeds: tuple[int, ...] = option((0, 1), "seeds (each: its own split, subsets and initialisation)",
                                    metavar="SEED")
    recipes: tuple[str, ...] = option(STUDY_RECIPES, "with (astroformer) and without (none) the regularisation "
                                      "recipe", metavar="RECIPE")
    epochs: int = option(10, HELP["epochs"])  # at the full training set; a fraction f trains ⌈epochs / √f⌉
    batch_size: int = batch_size_option(64)
    test_frac: float = option(0.2, TEST_FRAC_HELP)  # the same test galaxies for every model of a seed
    val_frac: float = option(0.1, VAL_FRAC_HELP)
    max_images: int | None = option(None, HELP["max_images"])
    device: str = device_option()
    progress: bool = progress_option()
