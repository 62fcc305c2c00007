"""Generative augmentation: train a conditional diffusion model, generate galaxies of a chosen morphology.

Library::

    from galmo.methods.generative.run import train_generator, generate
    train_generator("sims.h5", "runs/gen", condition="class", generator_size="tiny", epochs=50)
    path = generate("runs/gen", "gen.h5", class_name="Cigar Shaped Smooth", n=200, guidance=3, steps=25)

The model is :class:`galmo.nn.models.diffusion.GalaxyUNet` trained by the one loop
(:func:`galmo.nn.train.fit`) with :class:`galmo.nn.tasks.diffusion.DiffusionTask` (EMA weights by
default: what is saved and sampled); sampling is :func:`galmo.methods.generative.sample.sample`.
Generated files follow the Galaxy10 HDF5 schema (:mod:`galmo.sources.galaxy10_h5`): ``images``
(N, H, W, C) uint8, ``ans``, ``id`` (``gen-<condition>-s<seed>``), plus per image ``condition``,
``seed`` and, for a vote-conditioned model, the 37 vote fractions; any galmo verb reads them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from galmo.core.errors import GalmoError
from galmo.core.io import write_json
from galmo.core.schema import ANSWER_COLUMNS, GALAXY10_CLASSES
from galmo.methods.generative.config import GENERATED_PREFIX, GenerateConfig, GeneratorConfig
from galmo.methods.generative.votes import check_votes, read_votes_file
from galmo.nn import checkpoint as ckpt
from galmo.sources import as_source

MODEL_NAME = "diffusion_unet"
GRID_FIGURE = "generative_grid.png"


# ---------------------------------------------------------------------------------------- train
def train_generator(data, out, *, log=print, **options) -> dict:
    """Train the conditional diffusion model on ``data`` into the run folder ``out`` (options: the fields
    of :class:`~galmo.methods.generative.config.GeneratorConfig`). Returns the fit summary."""
    return run_train_generator(GeneratorConfig(data=data, out=out, **options), log=log)


def train_settings(cfg: GeneratorConfig):
    """The one loop's :class:`~galmo.nn.train.TrainConfig` of a generator config."""
    from galmo.nn.train import TrainConfig

    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       seed=cfg.seed, device=cfg.device, progress=cfg.progress, ema=cfg.ema, precision=cfg.precision,
                       stop_after_steps=cfg.stop_after_steps, checkpoint_minutes=cfg.checkpoint_minutes,
                       monitor="val_loss", mode="min")


def model_kwargs(cfg: GeneratorConfig, n_classes: int, in_chans: int) -> dict:
    size = cfg.image_size
    if size is not None and (len(size) > 2 or len(set(size)) != 1):
        raise GalmoError(f"--image-size {' '.join(map(str, size))}: the generator needs square images")
    return dict(size=cfg.generator_size, condition=cfg.condition, n_classes=int(n_classes), in_chans=int(in_chans),
                image_size=int(size[0]) if size else None, num_train_timesteps=cfg.timesteps,
                prediction_type=cfg.prediction)


def resized(images: np.ndarray, px: int) -> torch.Tensor:
    """float32 (N, C, px, px) in [0, 1] (antialiased bilinear when the side changes)."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if x.shape[-1] != px or x.shape[-2] != px:
        x = torch.nn.functional.interpolate(x, size=(px, px), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def _training_data(src, cfg: GeneratorConfig):
    """(rows, conditions, class names) of the galaxies with a known condition (a seeded subset)."""
    from galmo.methods.supervised.run import targets_of, usable_rows

    rows = usable_rows(src, cfg.condition)
    if cfg.max_images and len(rows) > cfg.max_images:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, cfg.max_images, replace=False))
    if len(rows) < 2:
        raise GalmoError(f"only {len(rows)} galaxies with a known {cfg.condition}: too few to train", path=src.path)
    names = list(src.class_names or GALAXY10_CLASSES)
    return rows, targets_of(src, cfg.condition, rows), names


def _datasets(src, rows, cond, cfg: GeneratorConfig, px: int):
    """Train and validation TensorDatasets of (images at px, condition), seeded split."""
    from galmo.methods.supervised.run import read_images

    kept, images = read_images(src, rows, cfg.kind)
    x, c = resized(images, px), torch.from_numpy(np.asarray(cond)[kept])
    order = np.random.default_rng(cfg.seed).permutation(len(x))
    n_val = int(round(cfg.val_frac * len(x)))
    val, tr = torch.as_tensor(order[:n_val]), torch.as_tensor(order[n_val:])
    train_set = torch.utils.data.TensorDataset(x[tr], c[tr])
    val_set = torch.utils.data.TensorDataset(x[val], c[val]) if n_val else None
    return train_set, val_set, kept


def run_train_generator(cfg: GeneratorConfig, log=print, source=None) -> dict:
    """Run one generator training (see :func:`train_generator`); ``source``: an already opened ``cfg.data``."""
    from galmo.nn.device import set_threads
    from galmo.nn.models import create
    from galmo.nn.tasks.diffusion import DiffusionTask
    from galmo.nn.train import fit
    from galmo.sources.base import report_rejected

    set_threads(cfg.threads)
    out = Path(cfg.out)
    src = as_source(source if source is not None else cfg.data, cfg.on_error)
    if cfg.kind not in src.kinds:
        raise GalmoError(f"kind {cfg.kind}: this source has only {', '.join(src.kinds)}", path=src.path)
    rows, cond, names = _training_data(src, cfg)
    kw = model_kwargs(cfg, len(names), src.shape[0])
    torch.manual_seed(cfg.seed)
    net = create(MODEL_NAME, **kw)
    train_set, val_set, kept = _datasets(src, rows, cond, cfg, net.image_size)
    log(f"[train-generator] {src.path}: {len(train_set)} train / {len(val_set or [])} val galaxies at "
        f"{net.image_size} px, condition {cfg.condition}, {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M "
        "parameters")
    block = {"condition": cfg.condition, "class_names": names, "bands": list(src.bands), "source": str(src.path),
             "kind": cfg.kind, "shape": [net.in_chans, net.image_size, net.image_size], "n_train": len(train_set),
             "class_counts": _class_counts(src, rows[kept], names), "p_uncond": cfg.p_uncond}
    saved = cfg.replace(data=str(src.path), out=str(out), resume=False, stop_after_steps=None)
    summary = fit(net, train_set, val_set, DiffusionTask(net.noise_schedule, cfg.p_uncond, cfg.flips),
                  train_settings(cfg), out, model_name=MODEL_NAME, model_kwargs=kw, resume=cfg.resume,
                  extra_config={"generative": block}, config=saved,
                  on_epoch_end=lambda m: log(f"[train-generator] epoch {m['epoch']}: train {m['train_loss']:.4g}"
                                             + (f", val {m['val_loss']:.4g}" if "val_loss" in m else "")))
    _finish(out, net, block, summary, cfg, src, rows[kept])
    report_rejected(src, out, "dir", log)
    return summary


def _class_counts(src, rows, names) -> dict:
    if "label" not in src.catalog.columns:
        return {}
    lab = src.catalog["label"].to_numpy()[rows]
    return {names[k]: int((lab == k).sum()) for k in range(len(names)) if (lab == k).any()}


def _finish(out: Path, net, block: dict, summary: dict, cfg: GeneratorConfig, src, rows) -> None:
    """metrics.json, the sample grid, the training curve, the report section."""
    from galmo import plots
    from galmo.methods.generative.report import LOSS_FIGURE, section
    from galmo.report import build_report

    metrics = {"best": summary["best"], "epochs_run": summary["epochs_run"],
               "train_images_per_s": [h.get("train_images_per_s") for h in summary["history"]]}
    if cfg.grid_per_class:
        metrics["grid"] = sample_grid(out, net.eval(), block, cfg, src, rows)
    write_json(out / "metrics.json", {"generator": metrics})
    plots.training_curve(summary["history"], out / "figures" / LOSS_FIGURE, title="generator training")
    section(out)
    build_report(out)


def sample_grid(out: Path, model, block: dict, cfg: GeneratorConfig, src, rows) -> dict:
    """``figures/generative_grid.png``: ``grid_per_class`` samples per class (vote models: from the votes
    of training galaxies of that class). Returns the settings and the sampling speed."""
    import time

    from galmo import plots
    from galmo.methods.generative.sample import sample

    conds, keys = _grid_conditions(model, block, cfg.grid_per_class, src, rows)
    t0 = time.perf_counter()
    images = sample(model, conds, cfg.seed + np.arange(len(conds)), steps=cfg.grid_steps, guidance=cfg.grid_guidance,
                    device=next(model.parameters()).device)
    secs = time.perf_counter() - t0
    by_class: dict = {}
    for key, img in zip(keys, images):
        by_class.setdefault(key, []).append(img)
    plots.class_grid(by_class, out / "figures" / GRID_FIGURE, per_class=cfg.grid_per_class)
    return {"per_class": cfg.grid_per_class, "steps": cfg.grid_steps, "guidance": cfg.grid_guidance,
            "sampling_images_per_s": len(conds) / secs if secs > 0 else None}


def _grid_conditions(model, block: dict, per: int, src, rows):
    """(conditions, class name of each) for the grid: every class, ``per`` each."""
    names = block["class_names"]
    if model.condition == "class":
        labels = np.repeat(np.arange(len(names)), per)
        return labels, [names[k] for k in labels]
    lab = src.catalog["label"].to_numpy()[rows] if "label" in src.catalog.columns else np.full(len(rows), -1)
    picks = [(names[k] if k >= 0 else "any", r) for k in np.unique(lab) for r in rows[lab == k][:per]]
    votes = src.catalog[ANSWER_COLUMNS].to_numpy(np.float32)[[r for _, r in picks]]
    return votes, [k for k, _ in picks]


# ---------------------------------------------------------------------------------------- generate
def load_generator(run_dir, device="auto"):
    """(model with the saved (EMA) weights, the checkpoint's ``generative`` block) of a generator run."""
    from galmo.nn.device import resolve_device

    run_dir = Path(run_dir)
    cfg = ckpt.read_config(run_dir)
    if "generative" not in cfg:
        raise GalmoError("not a generator run (config.json has no 'generative' block; make one with "
                         "`galmo train-generator`)", path=run_dir)
    model, _ = ckpt.load_checkpoint(run_dir, device=resolve_device(device))
    return model, cfg["generative"]


def class_index(name: str, names: list[str]) -> int:
    """The index of a class name (case and spaces forgiven); GalmoError listing the valid names."""
    want = " ".join(str(name).split()).lower()
    for k, n in enumerate(names):
        if n.lower() == want:
            return k
    raise GalmoError(f"--class {name!r}: unknown class; this generator knows: " + ", ".join(repr(n) for n in names))


def _condition(cfg: GenerateConfig, model, block: dict):
    """(condition vector of one image, label or -1, its text, votes or None) from --class / --votes / --like."""
    given = [f for f, v in (("--class", cfg.class_name), ("--votes", cfg.votes), ("--like", cfg.like)) if v]
    if len(given) != 1:
        raise GalmoError("give exactly one of --class NAME, --votes FILE, --like ID" +
                         (f" (got {', '.join(given)})" if given else ""))
    if model.condition == "class":
        if cfg.class_name is None:
            raise GalmoError(f"this generator is conditioned on the class: give --class NAME, not {given[0]}")
        k = class_index(cfg.class_name, block["class_names"])
        return np.int64(k), k, f"class={block['class_names'][k]}", None
    if cfg.class_name is not None:
        raise GalmoError("this generator is conditioned on the 37 vote fractions: give --votes FILE or --like ID")
    if cfg.votes:
        votes, what = read_votes_file(cfg.votes), f"votes={Path(cfg.votes).name}"
    else:
        votes, what = _votes_like(cfg.like, cfg.data or block["source"]), f"like={cfg.like}"
    check_votes(votes, where=cfg.votes or f"galaxy {cfg.like}")
    return votes.astype(np.float32), -1, what, votes


def _votes_like(galaxy_id: str, data) -> np.ndarray:
    src = as_source(data)
    cat = src.catalog
    hit = np.flatnonzero(cat["id"].astype(str).to_numpy() == str(galaxy_id))
    if not len(hit):
        raise GalmoError(f"--like {galaxy_id!r}: no galaxy with that id", path=src.path)
    missing = [c for c in ANSWER_COLUMNS if c not in cat.columns]
    if missing:
        raise GalmoError(f"--like: this source has no Galaxy Zoo vote fractions (missing {missing[0]}, ...)",
                         path=src.path)
    return cat[ANSWER_COLUMNS].to_numpy(np.float64)[hit[0]]


def generate(run_dir, out, *, log=print, **options) -> Path:
    """Generate galaxies with a trained generator into ``out`` (options: the fields of
    :class:`~galmo.methods.generative.config.GenerateConfig`). Returns the file's path."""
    return run_generate(GenerateConfig(generator=str(run_dir), out=str(out), **options), log=log)


def run_generate(cfg: GenerateConfig, log=print) -> Path:
    from galmo.nn.device import set_threads

    from galmo.methods.generative.sample import sample

    set_threads()
    if cfg.n < 1:
        raise GalmoError(f"--n must be at least 1 (got {cfg.n})")
    model, block = load_generator(cfg.generator, cfg.device)
    cond, label, what, votes = _condition(cfg, model, block)
    seeds = cfg.seed + np.arange(cfg.n, dtype=np.int64)
    images = sample(model, np.repeat(cond[None], cfg.n, 0), seeds, steps=cfg.steps, guidance=cfg.guidance,
                    sampler=cfg.sampler, batch_size=cfg.batch_size, device=next(model.parameters()).device,
                    progress=cfg.progress)
    meta = {"generator": str(cfg.generator), "guidance": cfg.guidance, "steps": cfg.steps, "sampler": cfg.sampler,
            "condition": what}
    write_generated(cfg.out, images, np.full(cfg.n, label), [what] * cfg.n, seeds, block, meta, votes)
    log(f"{cfg.n} galaxies ({what}, guidance {cfg.guidance:g}, {cfg.steps} {cfg.sampler} steps) → {cfg.out}")
    return Path(cfg.out)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_generated(out, images: np.ndarray, labels, conditions, seeds, block: dict, meta: dict,
                    votes: np.ndarray | None = None) -> Path:
    """A Galaxy10-schema HDF5 of generated images (N, C, H, W) in [0, 1], one condition and seed each."""
    from galmo.sources.galaxy10_h5 import write_galaxy10

    n, c = images.shape[:2]
    if c not in (1, 3):
        raise GalmoError(f"the Galaxy10 HDF5 schema stores 1 or 3 bands; this generator makes {c}")
    rgb = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)[:, ::-1].transpose(0, 2, 3, 1)  # bands → RGB
    ids = [f"{GENERATED_PREFIX}-{slug(t)}-s{int(s)}" for t, s in zip(conditions, seeds)]
    columns = {"condition": np.array([str(t).encode() for t in conditions]), "seed": np.asarray(seeds, np.int64)}
    if votes is not None:
        v = np.asarray(votes, np.float64).reshape(-1, len(ANSWER_COLUMNS))
        columns.update({col: np.broadcast_to(v[:, k], (n,)) for k, col in enumerate(ANSWER_COLUMNS)})
    bands = "".join(block["bands"]) if all(len(b) == 1 for b in block["bands"]) else json.dumps(block["bands"])
    return write_galaxy10(out, rgb, np.asarray(labels, np.int16), ids, columns,
                          {"bands": bands, "class_names": json.dumps(block["class_names"]),
                           "generator": "galmo generate", "config": json.dumps(meta)})


# ---------------------------------------------------------------------------------------- demo
# The micro U-Net at 16 px: ~1 min of training for the 3000 galaxies of the default sample, on one thread
# (measured 368 vs 4 images/s with two on shared cores: its tensors are too small to split).
DEMO_SETTINGS = {
    False: dict(generator_size="micro", epochs=10, max_images=3000, batch_size=32, lr=2e-3, grid_per_class=4,
                threads=1),
    True: dict(generator_size="micro", epochs=1, max_images=64, batch_size=32, grid_per_class=1, grid_steps=3,
               threads=1),
}


def demo_section(run_dir, source, quick: bool = False) -> dict:
    """Train a small class-conditional generator on ``source`` into ``run_dir/generator/`` (its sample grid
    per class and its training curve) and add the "generative" section to ``run_dir``'s report
    (:func:`galmo.methods.generative.report.generator_section` finds the run in that sub-folder)."""
    from galmo.methods.generative.report import GENERATOR_RUN, generator_section

    run_dir = Path(run_dir)
    cfg = GeneratorConfig(data=str(source.path), out=str(run_dir / GENERATOR_RUN), progress=not quick,
                          **DEMO_SETTINGS[bool(quick)])
    before = torch.get_num_threads()
    try:
        summary = run_train_generator(cfg, log=lambda *a, **k: None, source=source)
    finally:
        torch.set_num_threads(before)
    generator_section(run_dir)
    return summary
