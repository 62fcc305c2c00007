"""The data-efficiency study (``galmo study data-efficiency``): which model learns most from few labels?

Astroformer's claim (Dagli 2023) is that a hybrid conv-transformer with strong regularisation beats
CNNs when labelled galaxies are few. Here every model of :data:`MODELS` is trained through the one
supervised path (:func:`galmo.methods.supervised.run.train`) on fractions of the training split, with and
without the Astroformer recipe (mixup, CutMix, label smoothing, dropout, stochastic depth, the
augmentation policy), for several seeds. Per seed every run shares the train/val/test split and, per
fraction, the training subset, so the models are compared on the same galaxies. A fraction f trains
⌈epochs / √f⌉ epochs.

Each setting is one run folder ``runs/<model>_<recipe>_f<frac>_s<seed>/`` (a complete training run:
weights, metrics, report); a study stopped at any point goes on from where it was when started again
(finished runs are read back, a run killed mid-training resumes from its checkpoint). The table
``data_efficiency.csv`` is rewritten after every run; ``figures/lowdata_accuracy.png`` plots accuracy
vs training-set size; the report section is :mod:`galmo.methods.supervised.study_report`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd

from galmo.core.catalog import write_catalog
from galmo.core.errors import GalmoError
from galmo.core.io import write_json
from galmo.methods.supervised.config import DataEfficiencyConfig

# The models, as options of galmo train: the demo's rotinv settings; timm models at the loop's defaults.
MODELS = {
    "rotinv": dict(model="rotinv", width=16, batch_size=32, lr=3e-3),
    "convnext-atto": dict(model="timm_classifier", backbone="convnext_atto", weights="none"),
    "lite0": dict(model="timm_classifier"),  # the offline ImageNet weights, fine-tuned
    "astroformer-tiny": dict(model="astroformer-tiny"),
    "astroformer-small": dict(model="astroformer-small"),
}
RESULTS = "data_efficiency.csv"
SUMMARY = "data_efficiency.json"
FIGURE = "lowdata_accuracy.png"


def run_name(model: str, recipe: str, frac: float, seed: int) -> str:
    return f"{model}_{recipe}_f{frac:g}_s{seed}"


def epochs_for(epochs: int, frac: float) -> int:
    return int(math.ceil(epochs / math.sqrt(frac)))


def train_options(cfg: DataEfficiencyConfig, model: str, recipe: str, frac: float, seed: int) -> dict:
    """The ``galmo train`` options of one setting of the study."""
    if model not in MODELS:
        raise GalmoError(f"unknown study model {model!r}; known: {', '.join(MODELS)}")
    opts = {"batch_size": cfg.batch_size, **MODELS[model], "epochs": epochs_for(cfg.epochs, frac),
            "train_frac": frac, "seed": seed, "val_frac": cfg.val_frac, "test_frac": cfg.test_frac,
            "max_images": cfg.max_images, "device": cfg.device, "progress": cfg.progress}
    if recipe != "none":
        opts["recipe"] = recipe
        if MODELS[model]["model"] == "rotinv":
            opts["drop_path"] = 0.0  # it has no residual blocks to drop
    return opts


def run_study(cfg: DataEfficiencyConfig, log=print) -> pd.DataFrame:
    """Run (or finish) every setting; returns the results table (one row per run)."""
    from galmo.simulate import default_sample
    from galmo.sources import open_source

    from galmo.methods.supervised.config import RECIPES

    unknown = sorted(set(cfg.recipes) - {"none", *RECIPES})
    if unknown:
        raise GalmoError(f"unknown recipe {', '.join(unknown)}; known: none, {', '.join(RECIPES)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    src = open_source(cfg.data if cfg.data else default_sample())
    cfg.save(out, data_resolved=str(src.path))
    rows = []
    settings = [(s, f, m, r) for s in cfg.seeds for f in cfg.fractions for m in cfg.models for r in cfg.recipes]
    for k, (seed, frac, model, recipe) in enumerate(settings):
        log(f"[study] {k + 1}/{len(settings)}: {model}, recipe {recipe}, {frac:.0%} of the training set, seed {seed}")
        name = run_name(model, recipe, frac, seed)
        res = _one_run(cfg, src, out / "runs" / name, train_options(cfg, model, recipe, frac, seed), log)
        rows.append({"run": name, "model": model, "recipe": recipe, "train_frac": frac, "seed": seed, **res})
        write_catalog(pd.DataFrame(rows), out / RESULTS, require_id=False)
    table = pd.DataFrame(rows)
    finish(out, table)
    return table


def _one_run(cfg: DataEfficiencyConfig, src, folder: Path, opts: dict, log) -> dict:
    """Train and test one setting (or read back its finished result)."""
    from galmo.methods.supervised.run import evaluate, train
    from galmo.nn.train import read_progress

    done = folder / "study_result.json"
    if done.exists():
        return json.loads(done.read_text())
    resume = folder.is_dir() and read_progress(folder)["global_step"] > 0
    t0 = time.perf_counter()
    summary = train(src, folder, evaluate_at_end=False, resume=resume, log=lambda *a: None, **opts)
    seconds = time.perf_counter() - t0
    test = evaluate(folder, src, split="test", device=cfg.device, log=lambda *a: None)
    split = pd.read_csv(folder / "split.csv")["split"]
    hist = read_progress(folder)["history"]
    res = {"top1": test["top1"], "balanced_accuracy": test["balanced_accuracy"], "n_train": int((split == "train").sum()),
           "n_test": int(test["n"]), "epochs": len(hist), "best_epoch": int(summary["fit"]["best"]["epoch"]),
           "train_seconds": round(seconds, 1), "resumed": resume,
           "train_images_per_s": round(sum(h["train_images_per_s"] or 0 for h in hist) / max(1, len(hist)), 1)}
    log(f"[study]   top-1 {res['top1']:.4f}, balanced {res['balanced_accuracy']:.4f}, {res['n_train']} training "
        f"galaxies, {res['train_seconds']:.0f} s")
    write_json(done, res)
    return res


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (model, recipe, fraction)."""
    g = table.groupby(["model", "recipe", "train_frac"], sort=False)
    s = g.agg(n_train=("n_train", "mean"), top1=("top1", "mean"), top1_std=("top1", "std"),
              balanced_accuracy=("balanced_accuracy", "mean"), balanced_std=("balanced_accuracy", "std"),
              train_seconds=("train_seconds", "mean"), seeds=("seed", "nunique")).reset_index()
    return s


def best_per_fraction(summary: pd.DataFrame) -> dict:
    """{fraction: (model, recipe, top-1)} of the best mean top-1 at each fraction."""
    out = {}
    for frac, grp in summary.groupby("train_frac"):
        row = grp.loc[grp["top1"].idxmax()]
        out[float(frac)] = (row["model"], row["recipe"], float(row["top1"]))
    return out


def finish(out: Path, table: pd.DataFrame) -> None:
    """The summary JSON, the report section (with its figure) and the report of a study folder."""
    from galmo.methods.supervised import study_report

    summary = summarise(table)
    records = summary.astype(object).where(summary.notna(), None).to_dict(orient="records")  # NaN std: 1 seed
    write_json(out / SUMMARY, {"summary": records,
                               "best": {str(k): v for k, v in best_per_fraction(summary).items()}})
    study_report.section(out)
    from galmo.report import build_report

    build_report(out, title="galmo study: data efficiency")


def plot(summary: pd.DataFrame, path: Path) -> Path:
    """Top-1 vs training-set size, one line per model and recipe (dashed: with the recipe), ±1 std over seeds."""
    from galmo import plots

    curves = {}
    for (model, recipe), grp in summary.groupby(["model", "recipe"], sort=False):
        grp = grp.sort_values("n_train")
        label = f"{model} ({'recipe' if recipe != 'none' else 'plain'})"
        curves[label] = (grp["n_train"].to_numpy(), grp["top1"].to_numpy(), grp["top1_std"].fillna(0).to_numpy(),
                         recipe != "none", model)
    return plots.curves_with_errors(curves, path, xlabel="training galaxies", ylabel="test top-1",
                                    title="accuracy vs training-set size", logx=True)
