"""Settings of the embeddings method, one dataclass per verb (no torch: the CLI reads them).

``PretrainConfig`` (``galmo pretrain``; saved in the run folder's config.json, so ``galmo run`` can
re-run it), ``EmbedConfig``, ``SimilarConfig``, ``OutliersConfig``, ``ProbeConfig`` (the other verbs)
and ``StudyConfig`` (the encoder comparison of the demo; library only).
"""

from __future__ import annotations

from dataclasses import dataclass

from galmo.core.config import (HELP, Config, backend_option, batch_size_option, crop_frac_option, data_option,
                               device_option, framing_option, on_error_option, option, progress_option, seed_option)

# the patch transformer's sizes (galmo.nn.models.patch_transformer.SIZES; repeated here to keep torch out)
MODEL_SIZES = ("tiny", "small", "base", "large")
INDEX_METHODS = ("auto", "exact", "pq", "hnsw", "ivf")
PRETRAIN_METHODS = ("astropt", "contrastive")
DEFAULT_LR = {"astropt": 1e-3, "contrastive": 3e-4}
DEFAULT_ENCODER = "tf_efficientnet_lite0"


def _shared(key: str, text: str) -> str:
    """The shared help of ``key`` (:data:`galmo.core.config.HELP`); ``text`` until the vocabulary has it."""
    return HELP.get(key, text)


# the same as galmo.methods.supervised.config's (galmo train and galmo pretrain share the flags)
CHECKPOINT_EVERY_HELP = ("also save the resumable checkpoint (last/) every this many training steps (0: only "
                         "by time and at epoch ends)")
CHECKPOINT_MINUTES_HELP = ("save the resumable checkpoint (last/) every this many minutes of training, and at "
                           "epoch ends; a crash or kill loses at most this much (0: only at epoch ends and by "
                           "--checkpoint-every)")
TOP_HELP = "how many of the ranked galaxies: neighbours (similar, the query itself first) or montage (outliers)"


def source_option(use: str):
    return option(None, HELP["data"] + f"; {use} (none: the one named in the embeddings)", metavar="SOURCE")


def emb_option():
    return option(None, HELP["emb"], metavar="FILE")


def out_option(help_: str):
    return option(None, help_, metavar="PATH")


@dataclass
class PretrainConfig(Config):
    """``galmo pretrain``: self-supervised pretraining on unlabelled images — an AstroPT-like patch
    transformer (next-patch prediction) or a contrastive (SimCLR-style) backbone."""

    method = "pretrain"
    data: str | None = data_option()
    out: str | None = out_option("run folder, e.g. runs/astropt-tiny")
    objective: str = option("contrastive", "astropt: next-patch prediction with a patch transformer; contrastive: "
                                       "SimCLR's loss over two observing views of each galaxy (any rotation, flip, "
                                       "shift, zoom, blur, noise at the image's own level, gain, colours) with a "
                                       "timm backbone", choices=PRETRAIN_METHODS, flag="method")
    model_size: str = option("tiny", "patch-transformer size (width, depth, heads); astropt only", choices=MODEL_SIZES)
    backbone: str = option(DEFAULT_ENCODER, HELP["backbone"] + "; contrastive only")
    weights: str | None = option("offline", _shared("weights", "the backbone's initial weights")
                                 + "; contrastive only: offline continues from the ImageNet weights "
                                   "(domain-adaptive pretraining), none trains from scratch")
    temperature: float = option(0.2, "NT-Xent temperature; contrastive only")
    invariant: bool = option(True, HELP["dihedral_mean"] + "; contrastive only", flag="dihedral-mean")
    epochs: int = option(10, HELP["epochs"])
    lr: float | None = option(None, HELP["lr"] + " (none: 1e-3 for astropt, 3e-4 for contrastive)")
    patch_size: int = option(8, "patch side in pixels (all bands of a patch are one token); astropt only")
    image_size: tuple[int, ...] | None = option(None, HELP["image_size"] + "; square only (none: astropt the image "
                                                                          "side rounded down to a multiple of "
                                                                          "--patch-size, contrastive 96)")
    photometry: bool = option(False, "chain photometry tokens (magnitudes and colours from the catalog's "
                                     "flux_<band>/mag_<band> columns)")
    phot_names: tuple[str, ...] | None = option(None, "photometry tokens (none: one magnitude per band and the "
                                                      "colours of adjacent bands)", cli=False)
    max_images: int | None = option(None, HELP["max_images"])
    val_frac: float = option(0.1, _shared("val_frac", "fraction of the images held out to validate the loss")
                             + "; none below 20 images")
    augment: bool = option(True, _shared("augment", "augment the training images on the fly")
                           + "; astropt: random flips and transposes (the 8 symmetries of the square); "
                             "contrastive always draws its views")
    resume: bool = option(False, HELP["resume"])
    checkpoint_every: int = option(0, _shared("checkpoint_every", CHECKPOINT_EVERY_HELP), metavar="STEPS")
    checkpoint_minutes: float = option(5.0, _shared("checkpoint_minutes", CHECKPOINT_MINUTES_HELP), metavar="MIN")
    device: str = device_option()
    seed: int = seed_option()
    batch_size: int = batch_size_option(64)
    on_error: str = on_error_option()
    progress: bool = progress_option()


@dataclass
class EmbedConfig(Config):
    """``galmo embed``: every galaxy of a source embedded with one encoder."""

    method = "embed"
    encoder: str = option(DEFAULT_ENCODER, "what embeds: a pretrain run folder, a supervised run folder, or a "
                                           "timm name (offline ImageNet weights for EfficientNet-Lite0)",
                          metavar="SPEC")
    data: str | None = data_option()
    out: str | None = out_option("output .parquet (id, emb_0..emb_{d-1}, metadata)")
    image_size: tuple[int, ...] | None = option(None, HELP["image_size"] + "; timm backbones only (none: the "
                                                                          "backbone's native size)")
    weights: str = option("offline", _shared("weights", "the backbone's initial weights: offline (packaged), FILE "
                                                        "(.safetensors or state dict), hub (download) or none (random)")
                          + "; timm backbones only")
    dihedral_mean: bool = option(False, HELP["dihedral_mean"] + "; timm backbones and supervised runs (8× the "
                                                                "time; contrastive runs always do)")
    tokens: str = option("all", "patch transformers with photometry tokens: average all tokens, or the image "
                                "tokens only (no photometry needed)", choices=("all", "image"))
    framing: str | None = framing_option("the encoder's: recorded with a galmo model, else resize")
    crop_frac: float | None = crop_frac_option("the encoder's: recorded with a galmo model, else 1")
    device: str = device_option()
    backend: str = backend_option()
    batch_size: int = batch_size_option(128)
    on_error: str = on_error_option()
    progress: bool = progress_option()


@dataclass
class SimilarConfig(Config):
    """``galmo similar``: nearest neighbours of a galaxy or an image by cosine similarity."""

    method = "similar"
    emb: str | None = emb_option()
    id: str | None = option(None, "query galaxy id (in the embeddings); give --id or --image")
    image: str | None = option(None, "query image file (FITS/PNG/JPEG), embedded with the embeddings' encoder")
    top: int = option(10, TOP_HELP)
    data: str | None = source_option("for the montage")
    out: str | None = out_option("write the table (.csv/.parquet) and a montage PNG beside it (none: print only)")
    index_method: str = option("auto", "faiss index: exact up to 100 000 vectors, else PQ fast-scan + exact re-rank "
                                "(auto), or one of them, hnsw, ivf", choices=INDEX_METHODS)
    rebuild: bool = option(False, "rebuild the index saved beside the embeddings")


@dataclass
class OutliersConfig(Config):
    """``galmo outliers``: an anomaly score per galaxy (IsolationForest + LOF grid, rank-normalised)."""

    method = "outliers"
    emb: str | None = emb_option()
    data: str | None = source_option("for the montage and the catalog columns")
    out: str | None = out_option("output folder (outliers.csv, top_outliers.png, outliers_metrics.json)")
    top: int = option(32, TOP_HELP)
    seed: int = seed_option()


@dataclass
class ProbeConfig(Config):
    """``galmo probe``: a linear probe on a fraction of the labels vs a CNN trained from scratch."""

    method = "probe"
    emb: str | None = emb_option()
    labels: str = option("label", "catalog column to predict, e.g. label or redshift", metavar="COLUMN")
    data: str | None = source_option("with the labels")
    fraction: tuple[float, ...] = option((0.01,), "fractions of the training labels the probe sees")
    folds: int = option(5, "cross-validation folds")
    kind: str = option("auto", "probe: logistic (classification), ridge (regression), or auto (integer labels "
                               "with at most 50 values: classification)",
                       choices=("auto", "classification", "regression"))
    cnn: bool = option(True, "also train the supervised CNN baseline from scratch on the same labels")
    out: str | None = out_option("write the results as JSON (none: print only)")
    seed: int = seed_option()


@dataclass
class StudyConfig(Config):
    """The encoder comparison of the demo (:func:`galmo.methods.embeddings.study.compare_encoders`)."""

    method = "embeddings-study"
    quick: bool = option(False, "smoke-test sizes: 1 pretraining epoch on 256 images, 2 folds, 10/100 % labels, "
                                "32 px EfficientNet, PCA map")
    fractions: tuple[float, ...] = option((0.01, 0.1, 1.0), "label fractions of the probes")
    folds: int = option(5, "cross-validation folds of the probes")
    cnn_folds: int = option(1, "folds the supervised CNN baseline is trained on")
    cnn: bool = option(True, "train the supervised CNN baseline")
    pt_epochs: int | None = option(None, "pretraining epochs (none: 20, or 1 when quick)")
    lite0_size: int | None = option(None, "EfficientNet-Lite0 input pixels (none: 96, or 32 when quick)")
    contrastive: bool = option(True, "also pretrain and compare the contrastive encoder (Lite0 from ImageNet)")
    cl_epochs: int | None = option(None, "contrastive pretraining epochs (none: 2, or 1 when quick)")
    progress: bool = option(False, HELP["progress"])

    def resolved(self) -> "StudyConfig":
        """The settings actually used: ``quick`` and the "none" defaults applied."""
        c = self.replace(pt_epochs=self.pt_epochs or (1 if self.quick else 20),
                         lite0_size=self.lite0_size or (32 if self.quick else 96),
                         cl_epochs=self.cl_epochs or (1 if self.quick else 2))
        return c.replace(folds=2, cnn_folds=1, fractions=(0.1, 1.0)) if self.quick else c
