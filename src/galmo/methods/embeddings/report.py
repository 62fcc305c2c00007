"""The embeddings section of a run's report, rendered from the run folder's files.

Two kinds of folder hold embeddings results: a demo run (``foundation/results.json`` of
:func:`galmo.methods.embeddings.study.compare_encoders`, figures in ``figures/``) and a
``galmo pretrain`` run (its config.json with method "pretrain", the loop's progress and
``pretrain_summary.json``). :func:`section` writes the "embeddings" section of either.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

KEY = "embeddings"
CAPTIONS = {"embeddings_map.png": "2-D map of the patch-transformer embeddings, coloured by class",
            "embeddings_neighbours.png": "each row: a query galaxy (left) and its nearest neighbours by cosine "
                                         "similarity",
            "embeddings_outliers.png": "top anomalies by the combined IsolationForest + LOF score"}
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_img_loss", "val_phot_loss", "lr"]


def section(run_dir) -> bool:
    """Write the "embeddings" section of ``run_dir``; False when the folder holds no embeddings results."""
    run_dir = Path(run_dir)
    if (run_dir / "foundation" / "results.json").is_file():
        _study_section(run_dir)
        return True
    if _is_pretrain_run(run_dir):
        _pretrain_section(run_dir)
        return True
    return False


def _study_section(run_dir: Path) -> None:
    from galmo.core.io import read_json
    from galmo.methods.embeddings.study import FIGURES, results_table
    from galmo.report import add_section, render

    res = read_json(run_dir / "foundation" / "results.json")
    body = render("embeddings.html.j2", wide=results_table(res.get("table", [])), n=res.get("n", "?"),
                  images_per_s=res.get("images_per_s", {}), timings=res.get("timings_s", {}))
    keep = [f for f in FIGURES if (run_dir / "figures" / f).exists()]
    add_section(run_dir, KEY, "Foundation-model embeddings (AstroPT-like)", body,
                [run_dir / "figures" / f for f in keep], [CAPTIONS[f] for f in keep])


def _is_pretrain_run(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "config.json").read_text()).get("method") == "pretrain"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def _pretrain_section(run_dir: Path) -> None:
    from galmo.core.io import read_json
    from galmo.nn.checkpoint import read_config
    from galmo.nn.train import read_progress
    from galmo.report import add_section, render

    cfg = read_config(run_dir)
    progress = read_progress(run_dir)
    summary = read_json(run_dir / "pretrain_summary.json") if (run_dir / "pretrain_summary.json").exists() else {}
    best = progress.get("best") or {}
    metrics = {"epochs run": progress["epoch"], "finished": progress["done"],
               "first train loss": summary.get("history_first_loss"),
               "best val loss": best.get("val_loss", best.get("train_loss")),
               "images": cfg.get("n_images"), "seconds": summary.get("seconds")}
    hist = pd.DataFrame(progress["history"])
    hist = hist[[c for c in HISTORY_COLUMNS if c in hist.columns]] if len(hist) else None
    body = render("pretrain.html.j2", cfg=cfg.get("config", {}), model=cfg["model"]["kwargs"],
                  metrics={k: v for k, v in metrics.items() if v is not None}, history=hist)
    title = "contrastive backbone" if cfg.get("objective") == "contrastive" else "AstroPT-like patch transformer"
    add_section(run_dir, KEY, f"Pretraining ({title})", body)
