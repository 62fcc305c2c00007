"""Supervised morphology (Dieleman, Willett & Dambre 2015) plus what a survey team needs in production.

Library::

    from galmo.methods.supervised.run import train, predict, evaluate, triage
    summary = train("sims.h5", "runs/rotinv", model="rotinv", target="class", epochs=10)
    preds = predict("runs/rotinv", "new.h5", tta=8)                 # DataFrame: id, probabilities, ...
    auto, thr = triage(preds, coverage=0.5)                          # the confident half is auto-classified
    metrics = evaluate("runs/rotinv", "sims.h5")                     # on the saved test split

``train(data, out, **options)`` takes the options of :class:`~galmo.methods.supervised.config.SupervisedConfig`;
``run_train(cfg)`` runs a config (what ``galmo train`` and ``galmo run`` call). Command line:
``galmo train``, ``galmo predict``, ``galmo evaluate`` (see ``docs/supervised.md``).

Models (one flag): ``rotinv`` (the view-pooling network of the paper, exactly invariant to 90°
rotations and flips), ``simple_cnn`` (a plain CNN from scratch) and ``timm_classifier`` (any timm
backbone, by default the offline ImageNet EfficientNet-Lite0, fine-tuned). Targets: ``class`` (Galaxy10
labels, cross-entropy) or ``votes`` (the 37 Galaxy Zoo cumulative vote fractions, outputs normalised
per question by :func:`galmo.core.schema.normalise_votes`, MSE; RMSE reported as in the challenge).
Training is :func:`galmo.nn.train.fit` (the one loop) with the task
:class:`galmo.nn.tasks.classify.SupervisedTask`; every prediction goes through :mod:`galmo.nn.infer`.

``on_error="skip"``: a galaxy whose image cannot be decoded is left out (of training, of the
predictions) and listed in ``rejected.csv`` in the run folder, or ``<stem>.rejected.csv`` beside the
predictions file (:func:`galmo.sources.base.report_rejected`).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from galmo.core.catalog import write_catalog
from galmo.core.errors import GalmoError
from galmo.core.io import read_json, write_json
from galmo.core.resample import Framing, Resampler, catalog_pxscale, fit_source
from galmo.core.schema import ANSWER_COLUMNS, Schema, detect_schema, get_schema
from galmo.methods.supervised.config import ASTROFORMERS, MODELS, TARGETS, SupervisedConfig  # noqa: F401
from galmo.nn import checkpoint as ckpt
from galmo.nn.augment import AugmentConfig
from galmo.nn.tasks.classify import SupervisedTask  # noqa: F401  (re-exported: it lived here)
from galmo.sources import as_source
from galmo.sources.base import report_rejected

SPLIT_FILE = "split.csv"
TEST_IDS_FILE = "test_ids.csv"
READ_CHUNK = 2048  # galaxies read from a source at a time when predicting (bounded memory)


# ---------------------------------------------------------------------------------------- data
def targets_of(src, target: str, rows: np.ndarray | None = None, schema="gz2-kaggle", vote_loss: str = "mse"):
    """Labels (int64) of ``rows``, or their votes (float32, N × answers of ``schema``): cumulative
    fractions for ``vote_loss="mse"``, counts for ``"dirichlet"``; GalmoError when missing."""
    cat = src.catalog if rows is None else src.catalog.iloc[rows]
    if target == "class":
        if "label" not in cat.columns:
            raise GalmoError("--target class needs labels, but this source has no 'label' column", path=src.path)
        return cat["label"].to_numpy(dtype=np.int64)
    return vote_targets(src, cat, get_schema(schema), vote_loss)


def resolve_schema(src, name: str = "auto") -> Schema:
    """``--schema``: the named one, or (``auto``) the one whose answer columns the source's catalog has
    (the Kaggle GZ2 table when none)."""
    return get_schema(detect_schema(src.catalog.columns) or "gz2-kaggle" if name == "auto" else name)


def vote_targets(src, cat: pd.DataFrame, schema: Schema, vote_loss: str) -> np.ndarray:
    """The votes of catalog rows ``cat`` for ``vote_loss`` (see :func:`targets_of`). A missing answer
    column is an error naming it; Dirichlet on a fractions table needs the volunteers per galaxy
    (``n_volunteers``, which the simulator writes)."""
    missing = schema.missing(cat.columns)
    if missing:
        more = f" (and {len(missing) - 1} more: {', '.join(missing[1:4])}{' ...' if len(missing) > 4 else ''})" \
            if len(missing) > 1 else ""
        raise GalmoError(f"no vote column '{missing[0]}'{more}: --target votes with the {schema.name} schema needs "
                         f"its {len(schema.label_cols)} answer columns ({schema.label_cols[0]} .. "
                         f"{schema.label_cols[-1]}); pick the catalog's campaign with --schema", path=src.path)
    v = cat[schema.label_cols].to_numpy(dtype=np.float64)
    if schema.votes == "counts":
        return (v if vote_loss == "dirichlet" else schema.cumulative_from_counts(v)).astype(np.float32)
    if vote_loss == "mse":
        return v.astype(np.float32)
    if "n_volunteers" not in cat.columns:
        raise GalmoError(f"--vote-loss dirichlet needs vote counts: the {schema.name} table holds cumulative fractions "
                         "and the catalog has no n_volunteers column to turn them into counts (use --vote-loss mse)",
                         path=src.path)
    return np.rint(v * cat["n_volunteers"].to_numpy(np.float64)[:, None]).astype(np.float32)


def usable_rows(src, target: str, schema="gz2-kaggle", vote_loss: str = "mse") -> np.ndarray:
    """Catalog rows with a known target (label ≥ 0, or finite votes)."""
    y = targets_of(src, target, schema=schema, vote_loss=vote_loss)
    ok = (y >= 0) if target == "class" else np.isfinite(y).all(1)
    return np.flatnonzero(ok)


def split_rows(labels: np.ndarray | None, n: int, val_frac: float, test_frac: float, seed: int,
               where: str = "the source"):
    """Seeded train/val/test split of positions 0..n-1; three sorted int arrays. Stratified by
    ``labels`` when every class has ≥ 3 members and each part can hold one galaxy of every class;
    otherwise (a small source: e.g. 64 galaxies in 10 classes leave 7 for validation) that part of the
    split is random, unstratified, and a warning naming ``where`` says so."""
    from sklearn.model_selection import train_test_split

    if not 0 <= val_frac < 1 or not 0 <= test_frac < 1 or val_frac + test_frac >= 1:
        raise GalmoError(f"--val-frac {val_frac} and --test-frac {test_frac} must be in [0, 1) and sum below 1")
    pos = np.arange(n)
    strat = None
    if labels is not None:
        counts = np.bincount(labels)
        strat = labels if counts[counts > 0].min() >= 3 else None
    s1 = _stratifiable(strat, pos, test_frac, "test", where)
    rest, test = (pos, pos[:0]) if test_frac == 0 else train_test_split(
        pos, test_size=test_frac, random_state=seed, stratify=s1)
    if val_frac == 0:
        return np.sort(rest), pos[:0], np.sort(test)
    s2 = _stratifiable(strat, rest, val_frac / (1 - test_frac), "validation", where)
    train, val = train_test_split(rest, test_size=val_frac / (1 - test_frac), random_state=seed + 1, stratify=s2)
    return np.sort(train), np.sort(val), np.sort(test)


def _stratifiable(strat: np.ndarray | None, pos: np.ndarray, frac: float, part: str, where: str):
    """``strat[pos]`` when scikit-learn can split ``pos`` stratified with ``test_size=frac`` (each class ≥ 2
    members, both parts ≥ the number of classes); else None, with a warning when ``strat`` was wanted."""
    if strat is None or frac == 0:
        return None
    y = strat[pos]
    counts = np.bincount(y)
    k = int((counts > 0).sum())
    n_part = math.ceil(frac * len(pos))
    if counts[counts > 0].min() >= 2 and n_part >= k and len(pos) - n_part >= k:
        return y
    warnings.warn(f"{where}: {len(pos)} galaxies in {k} classes are too few for a stratified {part} split of "
                  f"{n_part} (each part needs one galaxy of every class): that split is random, unstratified",
                  stacklevel=3)
    return None


def read_images(src, rows: np.ndarray, kind: str = "image", chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(kept, images): the images of catalog rows ``rows`` (float32 N×C×H×W, read ``chunk`` at a time)
    and the indices into ``rows`` they belong to. With ``src.on_error == "skip"`` a galaxy whose image
    cannot be decoded is left out and added to ``src.rejected`` (:meth:`Source.read_ok`); otherwise it
    raises BadInput naming the file."""
    rows = np.asarray(rows, dtype=np.int64)
    kept, parts = [], []
    for s in range(0, len(rows), chunk):
        part = rows[s:s + chunk]
        pos, images = src.read_ok(part, kind=kind)
        kept.append(s + np.flatnonzero(np.isin(part, pos)))
        parts.append(images)
    if not parts:
        return np.zeros(0, np.int64), np.zeros((0, *src.shape), np.float32)
    return np.concatenate(kept), np.concatenate(parts).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------- models
def model_kwargs(model: str, *, target: str, n_classes: int, in_chans: int, image_size, backbone: str | None = None,
                 weights: str | None = "auto", width: int | None = None, downsample: int | None = None,
                 drop_rate: float | None = None, drop_path: float = 0.0, n_votes: int = len(ANSWER_COLUMNS)) -> dict:
    """Registry kwargs for ``model`` (``rotinv``, ``simple_cnn``, ``timm_classifier``, ``astroformer-*``);
    ``image_size``: H or (H, W); ``drop_path``: stochastic depth, for the models that have it; ``n_votes``:
    the outputs of the votes target (its schema's answers)."""
    n_out = n_votes if target == "votes" else n_classes
    size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (int(image_size),) * 2
    if drop_path and model in ("rotinv", "simple_cnn"):
        raise GalmoError(f"--drop-path: the {model} model has no stochastic depth (astroformer and timm models do)")
    if model == "rotinv":
        kw = dict(in_chans=in_chans, num_outputs=n_out, image_size=size[0], width=width or 32,
                  downsample=2 if downsample is None else downsample)
    elif model == "simple_cnn":
        kw = dict(in_chans=in_chans, num_outputs=n_out, width=width or 32)
    elif model == "timm_classifier":
        from galmo.nn.backbones import DEFAULT_BACKBONE, OFFLINE_PACKAGES

        backbone = backbone or DEFAULT_BACKBONE
        if weights == "auto":
            weights = "offline" if backbone in OFFLINE_PACKAGES else None
        kw = dict(backbone=backbone, num_outputs=n_out, in_chans=in_chans, weights=weights)
    elif model in ASTROFORMERS:
        kw = dict(num_outputs=n_out, in_chans=in_chans, image_size=list(size))
    else:
        raise GalmoError(f"--model must be one of {', '.join(MODELS)} (got {model!r})")
    if drop_path:
        kw["drop_path_rate"] = float(drop_path)
    if drop_rate is not None:
        kw["drop_rate"] = drop_rate
    return kw


def _last_linear(model):
    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            last = m
    return last



# ---------------------------------------------------------------------------------------- train
def train(data, out, *, log=print, **options) -> dict:
    """Train a supervised model on ``data`` into the run folder ``out``; evaluate on the test split.

    ``options``: the fields of :class:`~galmo.methods.supervised.config.SupervisedConfig` (model,
    target, epochs, lr, ...). ``split_from``: another run folder whose train/val/test split
    (``split.csv``) is reused, so that models trained with different seeds or settings are compared —
    or ensembled — on the same test galaxies, none of which any of them has seen.

    Writes ``split.csv`` (id, split) and ``test_ids.csv``, the best weights (``model.safetensors`` +
    ``config.json``, the config's save()), ``metrics.jsonl`` per epoch and, at the end,
    ``metrics.json``, figures and the report. Raises :class:`galmo.nn.train.TrainingInterrupted`
    after Ctrl-C / ``stop_after_steps`` (resume with ``resume=True``). Returns ``{"fit": fit summary,
    "test": test metrics}``.
    """
    return run_train(SupervisedConfig(data=data, out=out, **options), log=log)


def train_settings(cfg: SupervisedConfig):
    """The training loop's :class:`galmo.nn.train.TrainConfig` of a method config (the one place)."""
    from galmo.nn.train import TrainConfig

    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       seed=cfg.seed, device=cfg.device, patience=cfg.patience, progress=cfg.progress,
                       stop_after_steps=cfg.stop_after_steps, monitor="val_loss", mode="min", ema=cfg.ema,
                       precision=cfg.precision, channels_last=cfg.channels_last, warmup_frac=cfg.warmup_frac,
                       checkpoint_every=cfg.checkpoint_every, checkpoint_minutes=cfg.checkpoint_minutes)


def augment_settings(cfg: SupervisedConfig) -> AugmentConfig | None:
    """The training augmentation (None with ``augment=False``): the defaults, ``zoom``/``translate`` and
    the policy (``policy_ops``, ``policy_magnitude``) set."""
    if not cfg.augment:
        return None
    aug = AugmentConfig(ops=int(cfg.resolved("policy_ops")), magnitude=cfg.policy_magnitude)
    if cfg.zoom is not None:
        aug.zoom = cfg.zoom
    if cfg.translate is not None:
        aug.translate = cfg.translate
    return aug


def class_weights(cfg: SupervisedConfig, labels: torch.Tensor, n_classes: int):
    """``--class-weight balanced``: n / (K · n_k) per class k present in the training labels (scikit-learn's
    "balanced"; 1 for a class absent from them), as a float32 tensor; None for ``none``."""
    if cfg.class_weight == "none":
        return None
    if cfg.target != "class":
        raise GalmoError("--class-weight applies to the class target")
    from sklearn.utils.class_weight import compute_class_weight

    y = labels.numpy()
    present = np.unique(y)
    w = np.ones(n_classes, np.float32)
    w[present] = compute_class_weight("balanced", classes=present, y=y)
    return torch.from_numpy(w)


def mix_settings(cfg: SupervisedConfig):
    """Mixup / CutMix / label smoothing (a :class:`galmo.nn.mix.MixConfig`), None when all are off."""
    from galmo.nn.mix import MixConfig

    mix = MixConfig(mixup=float(cfg.resolved("mixup")), cutmix=float(cfg.resolved("cutmix")), prob=cfg.mix_prob,
                    label_smoothing=float(cfg.resolved("label_smoothing")))
    if mix.label_smoothing and cfg.target != "class":
        raise GalmoError("--label-smoothing applies to the class target (vote fractions are soft already)")
    return mix if mix.mixing or mix.label_smoothing else None


def run_train(cfg: SupervisedConfig, log=print, source=None) -> dict:
    """Run one training (see :func:`train`); ``source``: an already opened ``cfg.data``."""
    from galmo.nn.device import set_threads

    set_threads()
    out = Path(cfg.out)
    src = _training_source(source if source is not None else cfg.data, cfg)
    data = _TrainingData.select(src, cfg)
    tr, va, te = _split(data, cfg, out)
    log(f"[train] {src.path}: {len(tr)} train / {len(va)} val / {len(te)} test galaxies, "
        f"{'×'.join(map(str, src.shape))}, target {cfg.target}, model {cfg.model}")
    train_set, val_set = _datasets(src, data, tr, va, cfg.kind, log)
    summary = _fit(cfg, src, data, train_set, val_set, out, log)
    result = {"fit": {k: v for k, v in summary.items() if k != "history"}}
    del train_set, val_set
    if cfg.evaluate_at_end and len(te):
        result["test"] = evaluate(out, src, split="test", tta=cfg.tta, device=cfg.device, progress=cfg.progress,
                                  log=log)
    report_rejected(src, out, "dir", log)
    return result


def _training_source(data, cfg: SupervisedConfig):
    src = as_source(data, cfg.on_error)
    if cfg.kind not in src.kinds:
        raise GalmoError(f"--kind {cfg.kind}: this source has only {', '.join(src.kinds)}", path=src.path)
    _, h, w = src.shape
    if cfg.model == "rotinv" and h != w:
        raise GalmoError(f"--model rotinv needs square cutouts, this source has {h}×{w}", path=src.path)
    return src


class _TrainingData:
    """The galaxies a run trains, validates and tests on: catalog rows, ids, targets, classes."""

    def __init__(self, rows, ids, y, n_classes, class_names, schema=None):
        self.rows, self.ids, self.y, self.n_classes, self.class_names = rows, ids, y, n_classes, class_names
        self.schema = schema  # the votes target's Schema (None for classes)

    @classmethod
    def select(cls, src, cfg: SupervisedConfig) -> "_TrainingData":
        schema = resolve_schema(src, cfg.schema) if cfg.target == "votes" else get_schema("gz2-kaggle")
        rows = usable_rows(src, cfg.target, schema, cfg.vote_loss)
        if cfg.max_images and len(rows) > cfg.max_images:
            rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, cfg.max_images, replace=False))
        if len(rows) < 10:
            raise GalmoError(f"only {len(rows)} galaxies with a known {cfg.target}: too few to train", path=src.path)
        y = targets_of(src, cfg.target, rows, schema, cfg.vote_loss)
        n_classes, names = 0, None
        if cfg.target == "class":
            n_classes = int(max(y.max() + 1, len(src.class_names or [])))
            names = list(src.class_names) if src.class_names else [str(k) for k in range(n_classes)]
        return cls(rows, src.catalog["id"].astype(str).to_numpy()[rows], y, n_classes, names,
                   schema if cfg.target == "votes" else None)


def _split(data: _TrainingData, cfg: SupervisedConfig, out: Path):
    """(train, val, test) positions into ``data.rows``: a resumed run's own split, ``split_from``'s, or
    a new seeded one; written to ``split.csv`` and ``test_ids.csv`` unless it is the run's own."""
    reuse = out if cfg.resume and (out / SPLIT_FILE).exists() else (Path(cfg.split_from) if cfg.split_from else None)
    if reuse is None:
        tr, va, te = split_rows(data.y if cfg.target == "class" else None, len(data.rows), cfg.val_frac,
                                cfg.test_frac, cfg.seed, where=str(cfg.data or out))
        lab = np.empty(len(data.rows), dtype=object)
        lab[tr], lab[va], lab[te] = "train", "val", "test"
    else:
        lab = _saved_split(reuse, data.ids, "--resume" if reuse == out else "--split-from")
        tr, va, te = (np.flatnonzero(lab == s) for s in ("train", "val", "test"))
        if reuse == out:
            return tr, va, te
    if cfg.train_frac < 1:
        tr = _train_subset(data, cfg, tr, lab)
    out.mkdir(parents=True, exist_ok=True)
    write_catalog(pd.DataFrame({"id": data.ids, "split": lab}), out / SPLIT_FILE)
    write_catalog(pd.DataFrame({"id": data.ids[te]}), out / TEST_IDS_FILE)
    return tr, va, te


def _train_subset(data: _TrainingData, cfg: SupervisedConfig, tr: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """``train_frac`` of the training positions (stratified by class where it can be, seeded); the
    others are labelled ``unused`` in ``lab`` (split.csv): never trained on, never tested on."""
    from sklearn.model_selection import train_test_split

    if not 0 < cfg.train_frac <= 1:
        raise GalmoError(f"--train-frac must be in (0, 1] (got {cfg.train_frac})")
    n_keep = max(1, round(cfg.train_frac * len(tr)))
    if n_keep >= len(tr):
        return tr
    strat = _stratifiable(data.y if cfg.target == "class" else None, tr, 1 - n_keep / len(tr), "training subset", str(cfg.data or cfg.out))
    keep, _ = train_test_split(tr, train_size=n_keep, random_state=cfg.seed + 2, stratify=strat)
    lab[np.setdiff1d(tr, keep)] = "unused"
    return np.sort(keep)


def _saved_split(run: Path, ids: np.ndarray, what: str) -> np.ndarray:
    """The split label of each of ``ids`` in ``run``'s split.csv."""
    if not (run / SPLIT_FILE).exists():
        raise GalmoError(f"no {SPLIT_FILE} here: not a `galmo train` run folder", path=run)
    split = pd.read_csv(run / SPLIT_FILE, dtype={"id": str}).set_index("id")["split"]
    lab = split.reindex(ids).to_numpy()
    if pd.isna(lab).any():
        raise GalmoError(f"{what}: {int(pd.isna(lab).sum())} of the source's galaxies are not in the run's "
                         f"{SPLIT_FILE}", path=run)
    return lab


def _datasets(src, data: _TrainingData, tr, va, kind: str, log):
    """Train and validation TensorDatasets (images read once; undecodable ones skipped when allowed)."""
    t0 = time.perf_counter()
    both = np.concatenate([tr, va])
    kept, x = read_images(src, data.rows[both], kind)
    x = torch.from_numpy(x)
    yt = torch.from_numpy(data.y[both[kept]])
    log(f"[train] images read in {time.perf_counter() - t0:.1f} s")
    n_tr = int((kept < len(tr)).sum())
    train_set = torch.utils.data.TensorDataset(x[:n_tr], yt[:n_tr])
    val_set = torch.utils.data.TensorDataset(x[n_tr:], yt[n_tr:]) if len(x) > n_tr else None
    return train_set, val_set


def _build_model(cfg: SupervisedConfig, kw: dict):
    from galmo.nn.models import create

    torch.manual_seed(cfg.seed)
    net = create(cfg.model, **kw)
    if cfg.target == "votes" and cfg.vote_loss == "mse":  # every answer positive: normalise_votes' ReLU alive
        lin = _last_linear(net)
        if lin is not None and lin.bias is not None:
            torch.nn.init.constant_(lin.bias, 0.1)
    return net


def _fit(cfg: SupervisedConfig, src, data: _TrainingData, train_set, val_set, out: Path, log) -> dict:
    """Build the model and train it with the one loop; config.json is ``cfg.save`` + the checkpoint keys."""
    from galmo.nn.train import fit

    c, h, w = src.shape
    weights = None if cfg.weights in (None, "none") else cfg.weights
    kw = model_kwargs(cfg.model, target=cfg.target, n_classes=data.n_classes, in_chans=c, image_size=(h, w),
                      backbone=cfg.backbone, weights=weights, width=cfg.width, downsample=cfg.downsample,
                      drop_rate=cfg.resolved("drop_rate"), drop_path=cfg.resolved("drop_path"),
                      n_votes=len(data.schema.label_cols) if data.schema else len(ANSWER_COLUMNS))
    net = _build_model(cfg, kw)
    if cfg.init_from and not cfg.resume:
        kw = _init_from(net, kw, Path(cfg.init_from), cfg, (c, h, w))
    aug, mix = augment_settings(cfg), mix_settings(cfg)
    sup = {"target": cfg.target, "class_names": data.class_names, "n_classes": data.n_classes, "kind": cfg.kind,
           "source": str(src.path), "val_frac": cfg.val_frac, "test_frac": cfg.test_frac, "seed": cfg.seed,
           "augment": aug.to_dict() if aug else None, "mix": mix.to_dict() if mix else None, "model": cfg.model,
           "shape": [c, h, w], "framing": Framing(getattr(src, "fit", "resize"),
                                                  pxscale=catalog_pxscale(src.catalog)).to_dict()}
    saved = cfg.replace(data=str(src.path), out=str(out), resume=False, stop_after_steps=None)
    weights = class_weights(cfg, train_set.tensors[1], data.n_classes)
    sup["class_weights"] = None if weights is None else [round(float(v), 6) for v in weights]
    sup.update(schema=data.schema.name if data.schema else None, vote_loss=cfg.vote_loss if data.schema else None)
    task = SupervisedTask(cfg.target, aug, mix, n_classes=data.n_classes, class_weights=weights,
                          votes=vote_objective(sup))
    return fit(net, train_set, val_set, task, train_settings(cfg), out,
               model_name=cfg.model, model_kwargs=kw, resume=cfg.resume, extra_config={"supervised": sup},
               on_epoch_end=lambda m: log(_epoch_line(m)), config=saved)


def _init_from(net, kw: dict, run: Path, cfg: SupervisedConfig, shape) -> dict:
    """Load the weights of the run ``run`` into ``net`` (``init_from``: fine-tuning); the run must hold the
    same model for the same target, classes and image shape. Returns the model kwargs (the run's)."""
    saved = ckpt.read_config(run)
    sup = saved.get("supervised") or {}
    if saved["model"]["name"] != cfg.model or sup.get("target") != cfg.target:
        raise GalmoError(f"--init-from: that run trained {saved['model']['name']} on {sup.get('target')}, this one "
                         f"{cfg.model} on {cfg.target}", path=run)
    if list(sup.get("shape", [])) != list(shape):
        raise GalmoError(f"--init-from: that run's images are {sup.get('shape')}, these {list(shape)}", path=run)
    model, _ = ckpt.load_checkpoint(run)
    state = model.state_dict()
    if {k: tuple(v.shape) for k, v in state.items()} != {k: tuple(v.shape) for k, v in net.state_dict().items()}:
        raise GalmoError("--init-from: that run's model has other layer shapes (width, classes, ...)", path=run)
    net.load_state_dict(state)
    return {**kw, **{k: v for k, v in saved["model"].get("kwargs", {}).items() if k in kw}}


def _epoch_line(m: dict) -> str:
    return "[train] epoch {epoch}: ".format(**m) + ", ".join(
        f"{k} {v:.4g}" for k, v in m.items() if k not in ("epoch", "step") and isinstance(v, float))


# ---------------------------------------------------------------------------------------- predict
# The test-time transforms and the ensemble live with their module (galmo.nn.tta), re-exported here.
from galmo.nn.tta import TTAEnsemble, apply_transform, tta_transforms  # noqa: E402,F401
from galmo.nn.tta import predictions as outputs_to_predictions  # noqa: E402,F401


def ensemble_fn(models, target: str, tta: int = 1, votes=None) -> TTAEnsemble:
    """One module of an image batch: the members' TTA-averaged predictions, averaged over members
    (:class:`galmo.nn.tta.TTAEnsemble`, so the inference loop runs all of it with ONNX Runtime on CPU);
    ``votes``: the vote head's :class:`~galmo.nn.tasks.votes.VoteObjective`."""
    return TTAEnsemble(models, target, tta, votes).eval()


def vote_objective(sup: dict):
    """The :class:`~galmo.nn.tasks.votes.VoteObjective` of a run's 'supervised' block (None for classes;
    runs from before the schemas: the Kaggle table with mse)."""
    from galmo.nn.tasks.votes import VoteObjective

    if sup["target"] != "votes":
        return None
    return VoteObjective(sup.get("schema") or "gz2-kaggle", sup.get("vote_loss") or "mse")


def predict_arrays(model, images, target: str, tta: int = 1, batch_size: int = 256, device="cpu",
                   progress: bool = False) -> np.ndarray:
    """Probabilities (N, K) or vote fractions (N, 37) of an image array, averaged over ``tta``
    transforms (through :func:`galmo.nn.infer.infer`)."""
    from galmo.nn.infer import infer

    return infer(ensemble_fn([model], target, tta), images, batch_size=batch_size, device=device,
                 progress=progress, desc="predicting")


def entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1)
    return -(p * np.log(p)).sum(1)


def load_run(run_dir, device="auto"):
    """(model on device, checkpoint config, the 'supervised' config block) of a training run folder."""
    from galmo.nn.device import resolve_device

    run_dir = Path(run_dir)
    cfg = ckpt.read_config(run_dir)
    sup = cfg.get("supervised")
    if not sup:
        raise GalmoError("not a supervised run (config.json has no 'supervised' block; train it with "
                         "`galmo train`)", path=run_dir)
    model, cfg = ckpt.load_checkpoint(run_dir, device=resolve_device(device))
    return model, cfg, sup


def _run_list(run_dir) -> list[Path]:
    runs = [Path(r) for r in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    if not runs:
        raise GalmoError("no run folder given")
    return runs


def load_runs(run_dir, device="auto"):
    """(models, configs, the shared 'supervised' block) of one run folder or a list of them (an
    ensemble, as Dieleman et al. averaged several networks). Members must predict the same thing:
    same target, classes, image kind and shape."""
    runs = _run_list(run_dir)
    models, cfgs, sups = [], [], []
    for r in runs:
        m, c, s = load_run(r, device)
        models.append(m)
        cfgs.append(c)
        sups.append(s)
    for r, s in zip(runs[1:], sups[1:]):
        for key in ("target", "class_names", "kind", "shape", "schema", "vote_loss"):
            if s.get(key) != sups[0].get(key):
                raise GalmoError(f"cannot ensemble: its {key} is {s.get(key)!r}, {runs[0]}'s is "
                                 f"{sups[0].get(key)!r}", path=r)
    return models, cfgs, sups[0]


def check_unseen(runs: list[Path], test_ids: set) -> None:
    """Raise when a member of an ensemble was trained or validated on any of ``test_ids``."""
    for r in runs:
        f = r / SPLIT_FILE
        if not f.exists():
            continue
        sp = pd.read_csv(f, dtype={"id": str})
        seen = sp["id"][(sp["split"] != "test") & sp["id"].isin(test_ids)]
        if len(seen):
            raise GalmoError(f"{len(seen)} galaxies of the evaluation split were in this run's train/val split "
                             f"(e.g. {seen.iat[0]}); train ensemble members with --split-from {runs[0]}", path=r)


def predict(run_dir, data, *, rows=None, tta: int = 1, batch_size: int = 256, device: str = "auto",
            on_error: str = "raise", model=None, sup=None, progress: bool = False, framing: str | None = None,
            crop_frac: float | None = None, format: str = "galmo") -> pd.DataFrame:
    """Predictions for every galaxy of ``data`` (or the catalog rows ``rows``), same ``id``.

    ``run_dir`` may be a list of run folders: their probabilities (or vote fractions) are averaged.

    Class target: ``prob_0..prob_{K-1}``, ``pred_label``, ``pred_name``, ``confidence`` (max
    probability), ``entropy`` (nats). Votes target: the vote fractions of the run's schema
    (:func:`vote_frame`: the 37 ``Class*`` cumulative fractions of the Kaggle table, ``<answer>_fraction``
    of a counts schema, ``<answer>_concentration`` of a Dirichlet head), and ``confidence``/``entropy`` of
    the first question. ``label``/``label_name`` are copied when the source has them. ``format="zoobot"``:
    zoobot's column names instead (:func:`zoobot_frame`). With ``on_error="skip"`` (or a source opened so) galaxies
    whose image cannot be decoded are left out and added to ``src.rejected``. Images of another size
    or band count than the model's reach it by :mod:`galmo.core.resample` (its recorded framing, or
    ``framing`` / ``crop_frac``), said once.
    """
    src = as_source(data, on_error)
    if model is None:
        model, _, sup = load_runs(run_dir, device)
    models = model if isinstance(model, (list, tuple)) else [model]
    src, fit = fit_source(src, sup["shape"], sup.get("framing"), framing, crop_frac)
    rows = np.arange(len(src)) if rows is None else np.asarray(rows)
    rows, p = _predict_rows(models, src, rows, sup, tta, batch_size, device, progress, fit)
    preds = prediction_frame(src.catalog.iloc[rows], p, sup)
    return zoobot_frame(preds, sup) if format == "zoobot" else format_predictions(preds, run_dir, format)


def _predict_rows(models, src, rows: np.ndarray, sup: dict, tta: int, batch_size: int, device,
                  progress: bool, fit: Resampler) -> tuple[np.ndarray, np.ndarray]:
    """(rows read, predictions): the source is read :data:`READ_CHUNK` galaxies at a time, brought to
    the model's input by ``fit`` and every batch goes through :func:`galmo.nn.infer.infer` (members
    and transforms averaged)."""
    from galmo.nn.device import resolve_device
    from galmo.nn.infer import infer

    kind, target = sup.get("kind", "image"), sup["target"]
    read: list[np.ndarray] = []

    def image_batches():
        for s in range(0, len(rows), READ_CHUNK):  # bounded memory on big sources
            kept, x = read_images(src, rows[s:s + READ_CHUNK], kind)
            read.append(rows[s:s + READ_CHUNK][kept])
            for b in range(0, len(x), batch_size):
                yield fit(x[b:b + batch_size])

    p = infer(ensemble_fn(models, target, tta, vote_objective(sup)), image_batches(), batch_size=batch_size,
              device=resolve_device(device), progress=progress, desc="predicting", total=len(rows))
    width = len(vote_objective(sup).schema.label_cols) if target == "votes" else sup["n_classes"]
    rows_read = np.concatenate(read) if read else np.zeros(0, np.int64)
    if not len(rows_read):
        p = np.zeros((0, width), np.float32)
    return rows_read, p


def prediction_frame(cat: pd.DataFrame, p: np.ndarray, sup: dict) -> pd.DataFrame:
    """The predictions table of catalog rows ``cat`` from their probabilities / vote fractions ``p``."""
    df = pd.DataFrame({"id": cat["id"].astype(str).to_numpy()})
    if sup["target"] == "class":
        names = sup["class_names"]
        for k in range(p.shape[1]):
            df[f"prob_{k}"] = p[:, k]
        df["pred_label"] = p.argmax(1)
        df["pred_name"] = [names[k] for k in df["pred_label"]]
        df["confidence"] = p.max(1)
        df["entropy"] = entropy(p)
    else:
        df = pd.concat([df, vote_frame(p, vote_objective(sup))], axis=1)
    for col in ("label", "label_name"):
        if col in cat.columns:
            df[col] = cat[col].to_numpy()
    return df


def vote_frame(p: np.ndarray, votes) -> pd.DataFrame:
    """The vote columns of the predictions from the inference outputs ``p``: cumulative fractions named
    by the answer columns for a cumulative schema (``Class1.1`` ..), else galaxy-datasets' per-question
    fractions ``<answer>_fraction``; for a Dirichlet head also ``<answer>_concentration``. Then the
    first question's ``confidence`` (its top fraction; for a Dirichlet head less one standard deviation
    of it, ``uncertainty``, so that an unsure prediction ranks lower in triage) and ``entropy``."""
    from galmo.nn.tasks.votes import dirichlet_std

    schema = votes.schema
    cum = votes.fractions_of(p)
    cols = {}
    if schema.votes == "cumulative":
        cols.update(zip(schema.label_cols, cum.T))
    else:
        cols.update(zip(schema.fraction_columns, schema.shares(cum).T))
    a, b = schema.slices[0]
    first = cum[:, a:b]
    conf = first.max(1)
    if votes.kind == "dirichlet":
        cols.update(zip([f"{c}_concentration" for c in schema.label_cols], p.T))
        std = dirichlet_std(p[:, a:b], [(0, b - a)])
        cols["uncertainty"] = std[np.arange(len(p)), first.argmax(1)] if len(p) else np.zeros(0)
        conf = np.clip(conf - cols["uncertainty"], 0, 1)
    cols.update(confidence=conf, entropy=entropy(first))
    return pd.DataFrame(cols)


def zoobot_frame(preds: pd.DataFrame, sup: dict) -> pd.DataFrame:
    """``--format zoobot``: the predictions with zoobot / galaxy-datasets names: ``id_str``, each
    answer's ``<answer>_fraction`` (of its question's volunteers) and, for a Dirichlet head,
    ``<answer>_concentration``; ``confidence``, ``entropy`` (and ``uncertainty``) kept at the end."""
    votes = vote_objective(sup)
    if votes is None:
        raise GalmoError("--format zoobot writes Galaxy Zoo vote predictions; this run predicts classes "
                         "(train it with --target votes)")
    schema = votes.schema
    out = pd.DataFrame({"id_str": preds["id"].to_numpy()})
    if schema.votes == "cumulative":
        frac = schema.shares(preds[schema.label_cols].to_numpy(np.float64))
    else:
        frac = preds[schema.fraction_columns].to_numpy(np.float64)
    extra = [f"{c}_concentration" for c in schema.label_cols] if votes.kind == "dirichlet" else []
    tail = [c for c in ("confidence", "entropy", "uncertainty", "auto_classified") if c in preds.columns]
    return pd.concat([out, pd.DataFrame(frac, columns=schema.fraction_columns), preds[extra + tail]], axis=1)


def format_predictions(preds: pd.DataFrame, run_dir, format: str = "galmo") -> pd.DataFrame:
    """``preds`` of the run(s) ``run_dir`` in the output ``format``: galmo's own, or zoobot's names."""
    if format == "galmo":
        return preds
    if format != "zoobot":
        raise GalmoError(f"--format must be galmo or zoobot (got {format!r})")
    return zoobot_frame(preds, ckpt.read_config(_run_list(run_dir)[0])["supervised"])


def dirichlet_nll(conc: np.ndarray, counts: np.ndarray, votes) -> float:
    """Mean negative log likelihood per galaxy of the vote ``counts`` under the predicted concentrations."""
    from galmo.nn.tasks.votes import dirichlet_multinomial_nll

    nll = dirichlet_multinomial_nll(torch.from_numpy(counts).double(), torch.from_numpy(conc).double(),
                                    votes.schema.slices)
    return float(nll.mean())


def triage(preds: pd.DataFrame, coverage: float | None = None, threshold: float | None = None):
    """Mark confident galaxies as auto-classified. Returns (boolean mask, confidence threshold used).

    ``coverage`` c: exactly ``round(c·N)`` galaxies, the most confident (ties keep catalog order), are
    auto-classified. ``threshold`` t: those with confidence ≥ t.
    """
    conf = preds["confidence"].to_numpy(dtype=float)
    if (coverage is None) == (threshold is None):
        raise GalmoError("give exactly one of --triage COVERAGE or --threshold T")
    if coverage is not None:
        if not 0 <= coverage <= 1:
            raise GalmoError(f"--triage coverage must be in [0, 1] (got {coverage})")
        n_auto = int(round(coverage * len(conf)))
        order = np.argsort(-conf, kind="stable")
        auto = np.zeros(len(conf), bool)
        auto[order[:n_auto]] = True
        thr = float(conf[order[n_auto - 1]]) if n_auto else float("inf")
        return auto, thr
    return conf >= threshold, float(threshold)


def write_triage(preds: pd.DataFrame, auto: np.ndarray, out, src=None, montage_n: int = 64) -> dict:
    """The "for expert inspection" list (CSV, least confident first) and a montage of its head."""
    out = Path(out)
    stem = out.with_suffix("")
    expert = preds.loc[~auto].sort_values("confidence", kind="stable")
    cols = [c for c in ("id", "pred_name", "pred_label", "confidence", "entropy", "label_name") if c in expert.columns]
    csv = write_catalog(expert[cols], Path(f"{stem}_expert.csv"))
    files = {"expert_csv": str(csv)}
    if src is not None and len(expert):
        from galmo import plots

        pos = pd.Index(src.catalog["id"].astype(str)).get_indexer(expert["id"].head(montage_n))
        imgs = src.read(pos, kind="image")
        titles = [f"{r.get('pred_name', '')} {r['confidence']:.2f}" for _, r in expert.head(montage_n).iterrows()]
        files["expert_montage"] = str(plots.montage(list(imgs), Path(f"{stem}_expert.png"), titles=titles,
                                                   suptitle="for expert inspection (least confident first)"))
    return files


# ---------------------------------------------------------------------------------------- evaluate
def evaluate(run_dir, data, *, split: str = "test", tta: int = 1, device: str = "auto", out=None,
             batch_size: int = 256, report: bool = True, progress: bool = False, log=print,
             framing: str | None = None, crop_frac: float | None = None) -> dict:
    """Evaluate a run on ``data``: on its saved test split when those ids are in ``data`` (``split="test"``),
    else on every galaxy with a known target. Writes ``metrics.json`` (key ``test`` / ``all``), figures,
    the predictions (``predictions_<split>.parquet``) and the report section into ``out`` (default the run)."""
    runs = _run_list(run_dir)
    if len(runs) > 1 and not out:
        raise GalmoError("evaluating an ensemble needs --out (a folder for its metrics and figures)")
    out = Path(out) if out else runs[0]
    src = as_source(data)
    models, cfgs, sup = load_runs(runs, device)
    votes = vote_objective(sup)
    rows, used = _evaluation_rows(src, runs, sup["target"], split, votes.schema if votes else "gz2-kaggle")
    t0 = time.perf_counter()
    src, fit = fit_source(src, sup["shape"], sup.get("framing"), framing, crop_frac)
    rows, p = _predict_rows(models, src, rows, sup, tta, batch_size, device, progress, fit)
    secs = time.perf_counter() - t0
    preds = prediction_frame(src.catalog.iloc[rows], p, sup)
    name = cfgs[0]["model"]["name"] if len(runs) == 1 else f"ensemble of {len(runs)}"
    res: dict = {"split": used, "n": int(len(rows)), "tta": tta, "model": name,
                 "predict_images_per_s": len(rows) / secs if secs > 0 else None}
    if len(runs) > 1:
        res["members"] = [{"run": str(r), "model": c["model"]["name"], "kwargs": c["model"].get("kwargs", {})}
                          for r, c in zip(runs, cfgs)]
    y = targets_of(src, sup["target"], rows, votes.schema if votes else "gz2-kaggle")
    if sup["target"] == "class":
        _class_metrics(res, y, preds, sup["class_names"], out / "figures", log)
    else:
        _vote_metrics(res, y, votes.fractions_of(p), votes.schema, preds["confidence"].to_numpy(),
                      out / "figures", log)
        if votes.kind == "dirichlet":
            res["dirichlet_nll"] = dirichlet_nll(p, targets_of(src, "votes", rows, votes.schema, "dirichlet"), votes)
    write_catalog(preds, out / f"predictions_{used}.parquet")
    mpath = out / "metrics.json"
    allm = read_json(mpath) if mpath.exists() else {}
    allm[used] = res
    write_json(mpath, allm)
    if report:
        from galmo.methods.supervised.report import section
        from galmo.report import build_report

        section(out)
        build_report(out)
    return res


def _evaluation_rows(src, runs: list[Path], target: str, split: str, schema="gz2-kaggle") -> tuple[np.ndarray, str]:
    """(catalog rows, "test" or "all"): the first run's saved test split when ``split="test"`` and its
    ids are in ``src``, else every galaxy with a known target. An ensemble member that trained on
    any of them is refused."""
    rows = usable_rows(src, target, schema)
    used = "all"
    if split == "test" and (runs[0] / TEST_IDS_FILE).exists():
        test_ids = set(pd.read_csv(runs[0] / TEST_IDS_FILE, dtype={"id": str})["id"])
        sel = src.catalog["id"].astype(str).to_numpy()[rows]
        in_test = np.array([i in test_ids for i in sel], bool)
        if in_test.any():
            rows, used = rows[in_test], "test"
    if len(runs) > 1:
        check_unseen(runs, set(src.catalog["id"].astype(str).to_numpy()[rows]))
    if not len(rows):
        raise GalmoError(f"no galaxies with a known {target} to evaluate on", path=src.path)
    return rows, used


def _class_metrics(res: dict, y: np.ndarray, preds: pd.DataFrame, names: list, fig_dir: Path, log) -> None:
    """Top-1, balanced accuracy, accuracy at coverage, ECE, per-class P/R, confusion (+ figures) into ``res``."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    from galmo import plots
    from galmo.core import metrics as M

    k = len(names)
    p = preds[[f"prob_{j}" for j in range(k)]].to_numpy()
    pred, conf = p.argmax(1), p.max(1)
    correct = pred == y
    cov, acc = M.accuracy_coverage(y, pred, conf)
    bins = M.reliability_bins(conf, correct)
    prc = M.per_class_precision_recall(y, pred, k)
    res.update(top1=float(correct.mean()), balanced_accuracy=float(balanced_accuracy_score(y, pred)),
               acc_at_50pct_coverage=M.accuracy_at_coverage(y, pred, conf, 0.5),
               acc_at_80pct_coverage=M.accuracy_at_coverage(y, pred, conf, 0.8),
               ece=M.expected_calibration_error(conf, correct),
               per_class={names[j]: {"precision": float(prc["precision"][j]), "recall": float(prc["recall"][j]),
                                     "support": int(prc["support"][j])} for j in range(k)})
    cm = confusion_matrix(y, pred, labels=np.arange(k))
    res["confusion"] = cm.tolist()
    plots.confusion(cm, fig_dir / "supervised_confusion.png", names, names,
                    title=f"{res['model']}: test confusion (top-1 {res['top1']:.3f})")
    plots.accuracy_coverage_curve({res["model"]: (cov, acc)}, fig_dir / "supervised_coverage.png")
    plots.reliability_diagram(bins, fig_dir / "supervised_reliability.png", ece=res["ece"])
    log(f"[evaluate] {res['split']} ({res['n']}): top-1 {res['top1']:.4f}, balanced {res['balanced_accuracy']:.4f}, "
        f"50%-most-confident {res['acc_at_50pct_coverage']:.4f}, ECE {res['ece']:.4f}")


def _vote_metrics(res: dict, y: np.ndarray, p: np.ndarray, schema: Schema, conf: np.ndarray, fig_dir: Path,
                  log) -> None:
    """Vote RMSE of the cumulative fractions ``p`` against ``y`` (all, per question), high-agreement
    accuracy, first-question accuracy and its coverage curve by ``conf`` (+ figure) into ``res``."""
    from galmo import plots
    from galmo.core import metrics as M

    res["schema"] = schema.name
    res["rmse"] = M.vote_rmse(p, y)
    res["rmse_per_question"] = {f"Q{q.number}" if schema.votes == "cumulative" else q.name:
                                M.vote_rmse(p[:, a:b], y[:, a:b]) for q, (a, b) in zip(schema.questions, schema.slices)}
    ha = M.high_agreement_accuracy(p, y, threshold=0.8, schema=schema)
    res.update({f"high_agreement_{k}": v for k, v in ha.items()})
    a, b = schema.slices[0]
    yq, pq = y[:, a:b].argmax(1), p[:, a:b].argmax(1)
    cov, acc = M.accuracy_coverage(yq, pq, conf)
    res["q1_top1"] = float((yq == pq).mean())
    res["q1_acc_at_50pct_coverage"] = M.accuracy_at_coverage(yq, pq, conf, 0.5)
    plots.accuracy_coverage_curve({res["model"]: (cov, acc)}, fig_dir / "supervised_coverage.png",
                                  title=f"Q1 ({'/'.join(schema.questions[0].answers)}) accuracy vs coverage")
    log(f"[evaluate] {res['split']} ({res['n']}): vote RMSE {res['rmse']:.4f}, high-agreement accuracy "
        f"{res['high_agreement_all_accuracy']:.4f} (n={res['high_agreement_all_n']})")


# ---------------------------------------------------------------------------------------- demo
def demo_section(run_dir, source, quick: bool = False) -> dict:
    """Train the view-pooling network on ``source`` (≤ 5 min on 2 cores for 3000 galaxies; ``quick``:
    seconds) into ``run_dir/supervised/`` and add the "supervised" section to ``run_dir``'s report
    (:func:`galmo.methods.supervised.report.section` finds the run in that sub-folder)."""
    from galmo.methods.supervised.report import DEMO_RUN, section

    run_dir = Path(run_dir)
    sub = run_dir / DEMO_RUN
    if quick:
        kw = dict(epochs=1, max_images=160, width=4, batch_size=32)
    else:  # ~8 s per epoch for 2100 training galaxies on 2 free cores (×10–30 when they are shared)
        kw = dict(epochs=10, width=16, batch_size=32, lr=3e-3)
    train(source, sub, model="rotinv", target="class", progress=not quick, evaluate_at_end=False, **kw)
    test = evaluate(sub, source, split="test", report=False, out=sub)
    section(run_dir)
    return test
