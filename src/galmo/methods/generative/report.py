"""The "generative" report section of a generator run folder (``galmo report RUN``).

Reads ``metrics.json`` (the ``generator`` block written by
:func:`galmo.methods.generative.run.run_train_generator`), ``config.json`` (the settings and the
checkpoint's ``generative`` block), the training progress (:func:`galmo.nn.train.read_progress`) and
``figures/generative_grid.png``; the body is ``templates/generative.html.j2``.
"""

from __future__ import annotations

import json
from pathlib import Path

KEY = "generative"
TITLE = "Generative model (conditional diffusion)"
GRID_CAPTION = "samples per requested class (columns), guided DDIM from the EMA weights"
LOSS_FIGURE, LOSS_CAPTION = "generative_loss.png", "training curve: the diffusion loss per epoch (v or ε MSE)"
GENERATOR_RUN = "generator"  # the generator of a `galmo augment` folder
SETTINGS = ("condition", "generator_size", "epochs", "batch_size", "lr", "ema", "p_uncond", "flips", "seed")


AUGMENT_KEY = "augment"
AUGMENT_TITLE = "Generative augmentation: the rare-class experiment"
FIDELITY_KEY = "generative_fidelity"
FIDELITY_TITLE = "Generator fidelity: generated vs real galaxies per class"
FIDELITY_CAPTIONS = {"fidelity_grid.png": "real (left) and generated (right) galaxies of each class",
                     "fidelity_morphology.png": "statmorph parameters per class, real vs generated (boxes: "
                                                "quartiles, whiskers: 1.5 IQR)"}


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _generator_run(run_dir: Path):
    """(folder, metrics, config) of the generator run in ``run_dir`` or its ``generator/`` sub-folder."""
    for folder in (run_dir, run_dir / GENERATOR_RUN):
        res, cfg = _read(folder / "metrics.json").get("generator"), _read(folder / "config.json")
        if isinstance(res, dict) and "generative" in cfg:
            return folder, res, cfg
    return None


def section(run_dir) -> bool:
    """Write the sections of a generator run or a ``galmo augment`` folder (what ``galmo report`` calls);
    False when ``run_dir`` holds neither."""
    generator = generator_section(run_dir)
    fidelity = fidelity_section(run_dir)
    return augment_section(run_dir) or generator or fidelity


def generator_section(run_dir) -> bool:
    """Write the section of a generator run (the folder or its ``generator/``, as ``galmo augment`` makes);
    False when there is none."""
    from galmo.nn.train import read_progress
    from galmo.report import add_section, render

    run_dir = Path(run_dir)
    found = _generator_run(run_dir)
    if found is None:
        return False
    folder, res, cfg = found
    settings = cfg.get("config", {})
    block = cfg["generative"]
    speeds = [s for s in res.get("train_images_per_s", []) if s]
    body = render("generative.html.j2", res=res, block=block, progress=read_progress(folder),
                  settings={k: settings[k] for k in SETTINGS if k in settings},
                  model=cfg.get("model", {}), train_speed=max(speeds) if speeds else None)
    figures = {folder / "figures" / "generative_grid.png": GRID_CAPTION, folder / "figures" / LOSS_FIGURE: LOSS_CAPTION}
    figures = {f: c for f, c in figures.items() if f.exists()}
    add_section(run_dir, KEY, TITLE, body, list(figures), list(figures.values()))
    return True


def fidelity_section(run_dir) -> bool:
    """Write the fidelity section from the generator run's ``fidelity.json`` (:mod:`..fidelity`); False without one."""
    import pandas as pd

    from galmo.report import add_section, render

    run_dir = Path(run_dir)
    found = _generator_run(run_dir)
    res = _read(found[0] / "fidelity.json") if found else {}
    if "frechet" not in res:
        return False
    folder = found[0]
    tables = {k: pd.DataFrame(res[k]) for k in ("frechet", "morphology", "conditional") if res.get(k)}
    if "morphology" in tables:  # KS statistic per class (rows, in class order) and parameter (columns)
        m = tables["morphology"]
        tables["ks"] = m.pivot(index="class", columns="parameter", values="ks").reindex(
            index=pd.unique(m["class"]), columns=pd.unique(m["parameter"])).rename_axis(columns=None).reset_index()
    figures = {folder / "figures" / f: c for f, c in FIDELITY_CAPTIONS.items() if (folder / "figures" / f).exists()}
    body = render("fidelity.html.j2", res=res, settings=res["settings"], tables=tables)
    add_section(run_dir, FIDELITY_KEY, FIDELITY_TITLE, body, list(figures), list(figures.values()))
    return True


def augment_section(run_dir) -> bool:
    """Write the section of a ``galmo augment`` folder (``augment.csv`` + metrics.json); False without one."""
    import pandas as pd

    from galmo.report import add_section, render

    run_dir = Path(run_dir)
    res = _read(run_dir / "metrics.json").get("augment")
    if not isinstance(res, dict) or not (run_dir / "augment.csv").is_file():
        return False
    table = pd.read_csv(run_dir / "augment.csv")
    settings = _read(run_dir / "config.json").get("config", {})
    per_class = table.groupby(["class", "arm"])[["recall", "precision"]].agg(["mean", "std"])
    per_class.columns = [f"{a} {b}" for a, b in per_class.columns]
    body = render("augment.html.j2", res=res, summary=pd.DataFrame(res["summary"]), settings=settings,
                  per_class=per_class.reset_index(), n_seeds=int(table["seed"].nunique()))
    add_section(run_dir, AUGMENT_KEY, AUGMENT_TITLE, body)
    return True
