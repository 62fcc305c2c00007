"""Supervised morphology (Dieleman, Willett & Dambre 2015) plus what a survey team needs in production.

Library::

    from galmo.methods.supervised.run import train, predict, evaluate, triage
    summary = train("sims.h5", "runs/rotinv", model="rotinv", target="class", epochs=10)
    preds = predict("runs/rotinv", "new.h5", tta=8)                 # DataFrame: id, probabilities, ...
    auto, thr = triage(preds, coverage=0.5)                          # the confident half is auto-classified
    metrics = evaluate("runs/rotinv", "sims.h5")                     # on the saved test split

Command line: ``galmo train``, ``galmo predict``, ``galmo evaluate`` (see ``docs/supervised.md``).

Models (one flag): ``rotinv`` (the view-pooling network of the paper, exactly invariant to 90°
rotations and flips), ``simple_cnn`` (a plain CNN from scratch) and ``timm_classifier`` (any timm
backbone, by default the offline ImageNet EfficientNet-Lite0, fine-tuned). Targets: ``class`` (Galaxy10
labels, cross-entropy) or ``votes`` (the 37 Galaxy Zoo cumulative vote fractions, outputs normalised
per question by :func:`galmo.core.schema.normalise_votes`, MSE; RMSE reported as in the challenge).
Training is :func:`galmo.nn.train.fit` (the one loop) with :mod:`galmo.nn.augment` augmentations.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from galmo.nn import checkpoint as ckpt
from galmo.nn.augment import AugmentConfig, augment
from galmo.core.errors import GalmoError
from galmo.core.catalog import write_catalog
from galmo.core.io import read_json, write_json
from galmo.core.schema import ANSWER_COLUMNS, QUESTION_SLICES, normalise_votes
from galmo.sources import as_source, read_rows

from galmo.methods.supervised.config import MODELS, TARGETS  # noqa: F401
SPLIT_FILE = "split.csv"
TEST_IDS_FILE = "test_ids.csv"


# ---------------------------------------------------------------------------------------- data
def targets_of(src, target: str, rows: np.ndarray | None = None):
    """Labels (int64) or cumulative vote fractions (float32, N×37) of ``rows``; GalmoError when missing."""
    cat = src.catalog if rows is None else src.catalog.iloc[rows]
    if target == "class":
        if "label" not in cat.columns:
            raise GalmoError("--target class needs labels, but this source has no 'label' column", path=src.path)
        return cat["label"].to_numpy(dtype=np.int64)
    missing = [c for c in ANSWER_COLUMNS if c not in cat.columns]
    if missing:
        raise GalmoError(f"--target votes needs the 37 Galaxy Zoo vote-fraction columns; missing {missing[:3]}"
                         f"{' ...' if len(missing) > 3 else ''}", path=src.path)
    return cat[ANSWER_COLUMNS].to_numpy(dtype=np.float32)


def usable_rows(src, target: str) -> np.ndarray:
    """Catalog rows with a known target (label ≥ 0, or finite votes)."""
    y = targets_of(src, target)
    ok = (y >= 0) if target == "class" else np.isfinite(y).all(1)
    return np.flatnonzero(ok)


def split_rows(labels: np.ndarray | None, n: int, val_frac: float, test_frac: float, seed: int):
    """Seeded (stratified when ``labels`` is given and every class has ≥ 3 members) train/val/test split
    of positions 0..n-1. Returns three sorted int arrays."""
    from sklearn.model_selection import train_test_split

    if not 0 <= val_frac < 1 or not 0 <= test_frac < 1 or val_frac + test_frac >= 1:
        raise GalmoError(f"--val-frac {val_frac} and --test-frac {test_frac} must be in [0, 1) and sum below 1")
    pos = np.arange(n)
    strat = None
    if labels is not None:
        counts = np.bincount(labels)
        strat = labels if counts[counts > 0].min() >= 3 else None
    rest, test = (pos, pos[:0]) if test_frac == 0 else train_test_split(
        pos, test_size=test_frac, random_state=seed, stratify=strat)
    if val_frac == 0:
        return np.sort(rest), pos[:0], np.sort(test)
    s2 = strat[rest] if strat is not None else None
    train, val = train_test_split(rest, test_size=val_frac / (1 - test_frac), random_state=seed + 1, stratify=s2)
    return np.sort(train), np.sort(val), np.sort(test)


# ---------------------------------------------------------------------------------------- models
def model_kwargs(model: str, *, target: str, n_classes: int, in_chans: int, image_size: int,
                 backbone: str | None = None, weights: str | None = "auto", width: int | None = None,
                 downsample: int | None = None, drop_rate: float | None = None) -> dict:
    """Registry kwargs for ``model`` (``rotinv``, ``simple_cnn``, ``timm_classifier``)."""
    n_out = len(ANSWER_COLUMNS) if target == "votes" else n_classes
    if model == "rotinv":
        kw = dict(in_chans=in_chans, num_outputs=n_out, image_size=image_size, width=width or 32,
                  downsample=2 if downsample is None else downsample)
    elif model == "simple_cnn":
        kw = dict(in_chans=in_chans, num_outputs=n_out, width=width or 32)
    elif model == "timm_classifier":
        from galmo.nn.backbones import DEFAULT_BACKBONE, OFFLINE_PACKAGES

        backbone = backbone or DEFAULT_BACKBONE
        if weights == "auto":
            weights = "offline" if backbone in OFFLINE_PACKAGES else None
        kw = dict(backbone=backbone, num_outputs=n_out, in_chans=in_chans, weights=weights)
    else:
        raise GalmoError(f"--model must be one of {', '.join(MODELS)} (got {model!r})")
    if drop_rate is not None:
        kw["drop_rate"] = drop_rate
    return kw


def _last_linear(model):
    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            last = m
    return last


def outputs_to_predictions(out: torch.Tensor, target: str) -> torch.Tensor:
    """Raw network outputs → class probabilities (softmax) or tree-consistent vote fractions."""
    return out.softmax(1) if target == "class" else normalise_votes(out)


# ---------------------------------------------------------------------------------------- the task
class SupervisedTask:
    """What a batch means for :func:`galmo.nn.train.fit`: (images, labels) or (images, vote fractions)."""

    def __init__(self, target: str = "class", augment_cfg: AugmentConfig | None = None):
        if target not in TARGETS:
            raise GalmoError(f"--target must be one of {', '.join(TARGETS)} (got {target!r})")
        self.target = target
        self.augment_cfg = augment_cfg

    def loss(self, model, batch, generator):
        x, y = batch
        if self.augment_cfg is not None:
            x = augment(x, generator, self.augment_cfg)
        out = model(x)
        if self.target == "class":
            return F.cross_entropy(out, y), {}
        return F.mse_loss(normalise_votes(out), y), {}

    def evaluate(self, model, loader) -> dict:
        tot, correct, n = 0.0, 0, 0
        for x, y in loader:
            out = model(x)
            if self.target == "class":
                tot += F.cross_entropy(out, y, reduction="sum").item()
                correct += int((out.argmax(1) == y).sum())
            else:
                tot += F.mse_loss(normalise_votes(out), y, reduction="sum").item() / y.shape[1]
            n += len(y)
        if self.target == "class":
            return {"val_loss": tot / n, "val_acc": correct / n}
        return {"val_loss": tot / n, "val_rmse": math.sqrt(tot / n)}


# ---------------------------------------------------------------------------------------- train
def train(data, out, *, model: str = "rotinv", target: str = "class", backbone: str | None = None,
          weights: str | None = "auto", width: int | None = None, downsample: int | None = None,
          drop_rate: float | None = None, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
          weight_decay: float = 0.05, val_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0,
          device: str = "auto", resume: bool = False, patience: int | None = None, augment: bool = True,
          kind: str = "image", max_images: int | None = None, stop_after_steps: int | None = None,
          progress: bool = True, evaluate_at_end: bool = True, tta: int = 1, on_error: str = "raise",
          split_from=None, ema: float | None = None, precision: str = "fp32", channels_last: bool = False,
          zoom: float | None = None, translate: float | None = None, log=print) -> dict:
    """Train a supervised model on ``data`` into the run folder ``out``; evaluate on the test split.

    ``split_from``: another run folder whose train/val/test split (``split.csv``) is reused, so that
    models trained with different seeds or settings are compared — or ensembled — on the same test
    galaxies, none of which any of them has seen.

    Writes ``split.csv`` (id, split) and ``test_ids.csv``, the best weights (``model.safetensors`` +
    ``config.json``), ``metrics.jsonl`` per epoch and, at the end, ``metrics.json``, figures and the
    report. Raises :class:`galmo.nn.train.TrainingInterrupted` after Ctrl-C / ``stop_after_steps`` (resume
    with ``resume=True``). Returns ``{"fit": fit summary, "test": test metrics}``.
    """
    from galmo.nn.device import set_threads
    from galmo.nn.models import create
    from galmo.nn.train import TrainConfig, fit

    set_threads()
    out = Path(out)
    src = as_source(data, on_error)
    if kind not in src.kinds:
        raise GalmoError(f"--kind {kind}: this source has only {', '.join(src.kinds)}", path=src.path)
    c, h, w = src.shape
    if model == "rotinv" and h != w:
        raise GalmoError(f"--model rotinv needs square cutouts, this source has {h}×{w}", path=src.path)
    rows = usable_rows(src, target)
    if max_images and len(rows) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_images, replace=False))
    if len(rows) < 10:
        raise GalmoError(f"only {len(rows)} galaxies with a known {target}: too few to train", path=src.path)
    y_all = targets_of(src, target, rows)
    n_classes = 0
    class_names = None
    if target == "class":
        n_classes = int(max(y_all.max() + 1, len(src.class_names or [])))
        class_names = list(src.class_names) if src.class_names else [str(k) for k in range(n_classes)]
    ids = src.catalog["id"].astype(str).to_numpy()[rows]
    reuse = out if resume and (out / SPLIT_FILE).exists() else (Path(split_from) if split_from else None)
    if reuse is not None:
        if not (reuse / SPLIT_FILE).exists():
            raise GalmoError(f"no {SPLIT_FILE} here: not a `galmo train` run folder", path=reuse)
        split = pd.read_csv(reuse / SPLIT_FILE, dtype={"id": str}).set_index("id")["split"]
        lab = split.reindex(ids).to_numpy()
        if pd.isna(lab).any():
            what = "--resume" if reuse == out else "--split-from"
            raise GalmoError(f"{what}: {int(pd.isna(lab).sum())} of the source's galaxies are not in the run's "
                             f"{SPLIT_FILE}", path=reuse)
        tr, va, te = (np.flatnonzero(lab == s) for s in ("train", "val", "test"))
        if reuse != out:
            out.mkdir(parents=True, exist_ok=True)
            write_catalog(pd.DataFrame({"id": ids, "split": lab}), out / SPLIT_FILE)
            write_catalog(pd.DataFrame({"id": ids[te]}), out / TEST_IDS_FILE)
    else:
        tr, va, te = split_rows(y_all if target == "class" else None, len(rows), val_frac, test_frac, seed)
        lab = np.empty(len(rows), dtype=object)
        lab[tr], lab[va], lab[te] = "train", "val", "test"
        out.mkdir(parents=True, exist_ok=True)
        write_catalog(pd.DataFrame({"id": ids, "split": lab}), out / SPLIT_FILE)
        write_catalog(pd.DataFrame({"id": ids[te]}), out / TEST_IDS_FILE)
    log(f"[train] {src.path}: {len(tr)} train / {len(va)} val / {len(te)} test galaxies, {c}×{h}×{w}, "
        f"target {target}, model {model}")
    t0 = time.perf_counter()
    x = torch.from_numpy(read_rows(src, rows[np.concatenate([tr, va])], kind)[1])
    yt = torch.from_numpy(y_all[np.concatenate([tr, va])])
    log(f"[train] images read in {time.perf_counter() - t0:.1f} s")
    train_set = torch.utils.data.TensorDataset(x[:len(tr)], yt[:len(tr)])
    val_set = torch.utils.data.TensorDataset(x[len(tr):], yt[len(tr):]) if len(va) else None
    kw = model_kwargs(model, target=target, n_classes=n_classes, in_chans=c, image_size=h, backbone=backbone,
                      weights=weights, width=width, downsample=downsample, drop_rate=drop_rate)
    torch.manual_seed(seed)
    net = create(model, **kw)
    if target == "votes":  # start every answer positive so normalise_votes' ReLU is not dead at init
        lin = _last_linear(net)
        if lin is not None and lin.bias is not None:
            torch.nn.init.constant_(lin.bias, 0.1)
    aug = None
    if augment:
        aug = AugmentConfig()
        if zoom is not None:
            aug.zoom = zoom
        if translate is not None:
            aug.translate = translate
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                      device=device, patience=patience, progress=progress, stop_after_steps=stop_after_steps,
                      monitor="val_loss", mode="min", ema=ema, precision=precision, channels_last=channels_last)
    sup = {"target": target, "class_names": class_names, "n_classes": n_classes, "kind": kind,
           "source": str(src.path), "val_frac": val_frac, "test_frac": test_frac, "seed": seed,
           "augment": aug.to_dict() if aug else None, "model": model, "shape": [c, h, w]}
    summary = fit(net, train_set, val_set, SupervisedTask(target, aug), cfg, out, model_name=model,
                  model_kwargs=kw, resume=resume, extra_config={"supervised": sup},
                  on_epoch_end=lambda m: log("[train] epoch {epoch}: ".format(**m) + ", ".join(
                      f"{k} {v:.4g}" for k, v in m.items() if k not in ("epoch", "step") and isinstance(v, float))))
    result = {"fit": {k: v for k, v in summary.items() if k != "history"}}
    if evaluate_at_end and len(te):
        del x, train_set, val_set
        result["test"] = evaluate(out, src, split="test", tta=tta, device=device, log=log)
    return result


# ---------------------------------------------------------------------------------------- predict
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
    from galmo.nn.models.rotinv import dihedral, rotate

    if angle % 360:
        x = rotate(x, angle, padding_mode="reflection")
    return dihedral(x, k)


@torch.no_grad()
def predict_arrays(model, images, target: str, tta: int = 1, batch_size: int = 256, device="cpu") -> np.ndarray:
    """Probabilities (N, K) or vote fractions (N, 37), averaged over ``tta`` transforms."""
    model.eval()
    device = torch.device(device)
    outs = []
    tfs = tta_transforms(tta, period=45.0 if type(model).__name__ == "RotInvNet" else 90.0)
    for s in range(0, len(images), batch_size):
        xb = torch.as_tensor(np.asarray(images[s:s + batch_size]), dtype=torch.float32).to(device)
        acc = None
        for k, ang in tfs:
            p = outputs_to_predictions(model(apply_transform(xb, k, ang)), target)
            acc = p if acc is None else acc + p
        outs.append((acc / len(tfs)).cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


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
        for key in ("target", "class_names", "kind", "shape"):
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
            on_error: str = "raise", model=None, sup=None) -> pd.DataFrame:
    """Predictions for every galaxy of ``data`` (or the catalog rows ``rows``), same ``id``.

    ``run_dir`` may be a list of run folders: their probabilities (or vote fractions) are averaged.

    Class target: ``prob_0..prob_{K-1}``, ``pred_label``, ``pred_name``, ``confidence`` (max
    probability), ``entropy`` (nats). Votes target: the 37 ``Class*`` cumulative fractions, and
    ``confidence``/``entropy`` of the Q1 answer (smooth / features / star). ``label``/``label_name``
    are copied when the source has them.
    """
    from galmo.nn.device import resolve_device

    src = as_source(data, on_error)
    if model is None:
        model, _, sup = load_runs(run_dir, device)
    models = model if isinstance(model, (list, tuple)) else [model]
    dev = resolve_device(device)
    if tuple(src.shape) != tuple(sup["shape"]):
        raise GalmoError(f"images are {tuple(src.shape)} but the model was trained on {tuple(sup['shape'])} "
                         "(C, H, W)", path=src.path)
    kind = sup.get("kind", "image")
    rows = np.arange(len(src)) if rows is None else np.asarray(rows)
    target = sup["target"]
    parts = []
    for s in range(0, len(rows), 2048):  # bounded memory on big sources
        x = read_rows(src, rows[s:s + 2048], kind)[1]
        parts.append(sum(predict_arrays(m, x, target, tta, batch_size, dev) for m in models) / len(models))
    p = np.concatenate(parts) if parts else np.zeros((0, len(ANSWER_COLUMNS) if target == "votes" else
                                                     sup["n_classes"]), np.float32)
    cat = src.catalog.iloc[rows]
    df = pd.DataFrame({"id": cat["id"].astype(str).to_numpy()})
    if target == "class":
        names = sup["class_names"]
        for k in range(p.shape[1]):
            df[f"prob_{k}"] = p[:, k]
        df["pred_label"] = p.argmax(1)
        df["pred_name"] = [names[k] for k in df["pred_label"]]
        df["confidence"] = p.max(1)
        df["entropy"] = entropy(p)
    else:
        for k, col in enumerate(ANSWER_COLUMNS):
            df[col] = p[:, k]
        a, b = QUESTION_SLICES[0]
        df["confidence"] = p[:, a:b].max(1)
        df["entropy"] = entropy(p[:, a:b])
    for col in ("label", "label_name"):
        if col in cat.columns:
            df[col] = cat[col].to_numpy()
    return df


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
             batch_size: int = 256, report: bool = True, log=print) -> dict:
    """Evaluate a run on ``data``: on its saved test split when those ids are in ``data`` (``split="test"``),
    else on every galaxy with a known target. Writes ``metrics.json`` (key ``test`` / ``all``), figures,
    the predictions (``predictions_<split>.parquet``) and the report section into ``out`` (default the run)."""
    from galmo.core import metrics as M

    runs = _run_list(run_dir)
    run_dir = runs[0]
    if len(runs) > 1 and not out:
        raise GalmoError("evaluating an ensemble needs --out (a folder for its metrics and figures)")
    out = Path(out) if out else run_dir
    src = as_source(data)
    models, cfgs, sup = load_runs(runs, device)
    target = sup["target"]
    rows = usable_rows(src, target)
    used = "all"
    if split == "test" and (run_dir / TEST_IDS_FILE).exists():
        test_ids = set(pd.read_csv(run_dir / TEST_IDS_FILE, dtype={"id": str})["id"])
        sel = src.catalog["id"].astype(str).to_numpy()[rows]
        in_test = np.array([i in test_ids for i in sel], bool)
        if in_test.any():
            rows, used = rows[in_test], "test"
    if len(runs) > 1:
        check_unseen(runs, set(src.catalog["id"].astype(str).to_numpy()[rows]))
    if not len(rows):
        raise GalmoError(f"no galaxies with a known {target} to evaluate on", path=src.path)
    t0 = time.perf_counter()
    preds = predict(runs, src, rows=rows, tta=tta, batch_size=batch_size, device=device, model=models, sup=sup)
    secs = time.perf_counter() - t0
    y = targets_of(src, target, rows)
    fig_dir = out / "figures"
    name = cfgs[0]["model"]["name"] if len(runs) == 1 else f"ensemble of {len(runs)}"
    res: dict = {"split": used, "n": int(len(rows)), "tta": tta, "model": name,
                 "predict_images_per_s": len(rows) / secs if secs > 0 else None}
    if len(runs) > 1:
        res["members"] = [{"run": str(r), "model": c["model"]["name"], "kwargs": c["model"].get("kwargs", {})}
                          for r, c in zip(runs, cfgs)]
    figures, captions = [], []
    from galmo import plots

    if target == "class":
        names = sup["class_names"]
        k = len(names)
        p = preds[[f"prob_{j}" for j in range(k)]].to_numpy()
        pred, conf = p.argmax(1), p.max(1)
        correct = pred == y
        from sklearn.metrics import balanced_accuracy_score, confusion_matrix

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
        figures += [plots.confusion(cm, fig_dir / "supervised_confusion.png", names, names,
                                    title=f"{res['model']}: test confusion (top-1 {res['top1']:.3f})"),
                    plots.accuracy_coverage_curve({res["model"]: (cov, acc)}, fig_dir / "supervised_coverage.png"),
                    plots.reliability_diagram(bins, fig_dir / "supervised_reliability.png", ece=res["ece"])]
        captions += ["confusion matrix (rows: true class, colour: row fraction)",
                     "accuracy of the most confident galaxies vs the fraction kept (triage)",
                     "calibration: accuracy vs confidence per bin"]
        log(f"[evaluate] {used} ({len(rows)}): top-1 {res['top1']:.4f}, balanced {res['balanced_accuracy']:.4f}, "
            f"50%-most-confident {res['acc_at_50pct_coverage']:.4f}, ECE {res['ece']:.4f}")
    else:
        p = preds[ANSWER_COLUMNS].to_numpy()
        res["rmse"] = M.vote_rmse(p, y)
        res["rmse_per_question"] = {f"Q{qi + 1}": M.vote_rmse(p[:, a:b], y[:, a:b])
                                    for qi, (a, b) in enumerate(QUESTION_SLICES)}
        ha = M.high_agreement_accuracy(p, y, threshold=0.8)
        res.update({f"high_agreement_{k}": v for k, v in ha.items()})
        a, b = QUESTION_SLICES[0]
        yq, pq = y[:, a:b].argmax(1), p[:, a:b].argmax(1)
        conf = p[:, a:b].max(1)
        cov, acc = M.accuracy_coverage(yq, pq, conf)
        res["q1_top1"] = float((yq == pq).mean())
        res["q1_acc_at_50pct_coverage"] = M.accuracy_at_coverage(yq, pq, conf, 0.5)
        figures.append(plots.accuracy_coverage_curve({res["model"]: (cov, acc)}, fig_dir / "supervised_coverage.png",
                                                     title="Q1 (smooth/features/star) accuracy vs coverage"))
        captions.append("Q1 top answer: accuracy of the most confident galaxies vs the fraction kept")
        log(f"[evaluate] {used} ({len(rows)}): vote RMSE {res['rmse']:.4f}, high-agreement accuracy "
            f"{res['high_agreement_all_accuracy']:.4f} (n={res['high_agreement_all_n']})")
    write_catalog(preds, out / f"predictions_{used}.parquet")
    mpath = out / "metrics.json"
    allm = read_json(mpath) if mpath.exists() else {}
    allm[used] = res
    write_json(mpath, allm)
    if report:
        add_report_section(out, res, sup, figures, captions)
    return res


def add_report_section(run_dir, res: dict, sup: dict, figures, captions, key: str = "supervised",
                       extra_html: str = "") -> None:
    from galmo.report import add_section, build_report, metrics_html, table_html

    flat = {k: v for k, v in res.items() if not isinstance(v, (dict, list))}
    body = (f"<p>Supervised morphology after Dieleman, Willett &amp; Dambre (2015): model <b>{res['model']}</b>, "
            f"target <b>{sup['target']}</b>, evaluated on the {res['split']} split ({res['n']} galaxies, "
            f"TTA {res['tta']}).</p>" + extra_html + metrics_html(flat))
    if "per_class" in res:
        body += table_html(pd.DataFrame([{"class": k, **v} for k, v in res["per_class"].items()]))
    if "rmse_per_question" in res:
        body += table_html(pd.DataFrame({"question": list(res["rmse_per_question"]),
                                         "rmse": list(res["rmse_per_question"].values())}))
    add_section(run_dir, key, "Supervised morphology (view-pooling CNN)", body, figures, captions)
    build_report(run_dir)


# ---------------------------------------------------------------------------------------- demo
def demo_section(run_dir, source, quick: bool = False) -> dict:
    """Train the view-pooling network on ``source`` (≤ 5 min on 2 cores for 3000 galaxies; ``quick``:
    seconds) and add the "supervised" section to ``run_dir``'s report."""
    run_dir = Path(run_dir)
    sub = run_dir / "supervised"
    if quick:
        kw = dict(epochs=1, max_images=160, width=4, batch_size=32)
    else:  # ~8 s per epoch for 2100 training galaxies on 2 free cores (×10–30 when they are shared)
        kw = dict(epochs=10, width=16, batch_size=32, lr=3e-3)
    res = train(source, sub, model="rotinv", target="class", progress=not quick, evaluate_at_end=False, **kw)
    test = evaluate(sub, source, split="test", report=False, out=sub)
    figs = sorted((sub / "figures").glob("supervised_*.png"))
    import shutil

    dest = []
    for f in figs:
        d = run_dir / "figures" / f.name
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, d)
        dest.append(d)
    _, cfg, sup = load_run(sub, "cpu")
    caps = {"supervised_confusion.png": "confusion matrix (rows: true class)",
            "supervised_coverage.png": "accuracy of the most confident galaxies vs the fraction kept",
            "supervised_reliability.png": "calibration: accuracy vs confidence"}
    from galmo.report import add_section, metrics_html

    flat = {k: v for k, v in test.items() if not isinstance(v, (dict, list))}
    body = (f"<p>View-pooling rotation-invariant CNN (Dieleman et al. 2015) trained in {res['fit']['epochs_run']} "
            f"epochs{' (quick settings)' if quick else ''}; run folder <code>{sub.name}/</code>.</p>" + metrics_html(flat))
    add_section(run_dir, "supervised", "Supervised morphology (view-pooling CNN)", body, dest,
                [caps.get(f.name, f.name) for f in dest])
    return test
