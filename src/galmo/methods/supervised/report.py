"""The "supervised" report section, rendered from a run folder's files (``galmo report RUN``).

Reads ``metrics.json`` (the ``test`` or ``all`` evaluation written by
:func:`galmo.methods.supervised.run.evaluate`), ``config.json`` (the method's settings and the
checkpoint's ``supervised`` block, when the folder is a training run), the training progress
(:func:`galmo.nn.train.read_progress`) and ``figures/supervised_*.png``; the body is
``templates/supervised.html.j2``. The run may be the folder itself or its ``supervised/`` sub-folder
(what ``galmo demo`` writes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

KEY = "supervised"
TITLE = "Supervised morphology (view-pooling CNN)"
DEMO_RUN = "supervised"  # the demo's training run, inside the demo folder
CAPTIONS = {
    "class": {"supervised_confusion.png": "confusion matrix (rows: true class, colour: row fraction)",
              "supervised_coverage.png": "accuracy of the most confident galaxies vs the fraction kept (triage)",
              "supervised_reliability.png": "calibration: accuracy vs confidence per bin"},
    "votes": {"supervised_coverage.png": "Q1 top answer: accuracy of the most confident galaxies vs the fraction "
                                         "kept"},
}


def find_evaluation(run_dir: Path) -> tuple[Path, dict] | None:
    """(folder, evaluation) of the supervised evaluation in ``run_dir`` or its ``supervised/``
    sub-folder (the ``test`` split preferred); None when there is none."""
    for folder in (run_dir, run_dir / DEMO_RUN):
        path = folder / "metrics.json"
        if not path.is_file():
            continue
        try:
            allm = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        for split in ("test", "all"):
            res = allm.get(split) if isinstance(allm, dict) else None
            if isinstance(res, dict) and "tta" in res and ("top1" in res or "rmse" in res):
                return folder, res
    return None


def _training(folder: Path) -> dict:
    """What the training run in ``folder`` says about itself (empty for an evaluation-only folder)."""
    from galmo.nn.train import read_progress

    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return {}
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError:
        return {}
    progress = read_progress(folder)
    settings = cfg.get("config", {})
    return {"epochs": progress["epoch"], "stopped_early": progress["stopped_early"],
            "settings": {k: settings[k] for k in ("model", "target", "epochs", "batch_size", "lr", "seed",
                                                  "augment", "ema", "precision") if k in settings}}


def section(run_dir) -> bool:
    """Write the supervised section of ``run_dir``'s report; False when it holds no supervised evaluation."""
    from galmo.report import add_section, render

    run_dir = Path(run_dir)
    found = find_evaluation(run_dir)
    if found is None:
        return False
    folder, res = found
    target = "class" if "top1" in res else "votes"
    captions = CAPTIONS[target]
    figures = [folder / "figures" / name for name in captions if (folder / "figures" / name).exists()]
    per_class = per_question = None
    if "per_class" in res:
        per_class = pd.DataFrame([{"class": k, **v} for k, v in res["per_class"].items()])
    if "rmse_per_question" in res:
        per_question = pd.DataFrame({"question": list(res["rmse_per_question"]),
                                     "rmse": list(res["rmse_per_question"].values())})
    body = render("supervised.html.j2", res=res, target=target, training=_training(folder),
                  metrics={k: v for k, v in res.items() if not isinstance(v, (dict, list))},
                  per_class=per_class, per_question=per_question,
                  sub=folder.name if folder != run_dir else None)
    add_section(run_dir, KEY, TITLE, body, figures, [captions[f.name] for f in figures])
    return True
