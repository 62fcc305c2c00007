"""The "lowdata" report section of a data-efficiency study folder (``galmo report STUDY``).

Reads ``data_efficiency.csv`` (one row per run, written by :mod:`galmo.methods.supervised.study`; the
rows of several study folders may be concatenated into one) and draws ``figures/lowdata_accuracy.png``
from it; the body is ``templates/lowdata.html.j2``: the mean ± std over seeds per model, recipe and
fraction, the best model at each fraction and the study's settings.
"""

from __future__ import annotations

from pathlib import Path

KEY = "lowdata"
TITLE = "Data efficiency: accuracy vs training-set size"
CAPTION = "test top-1 vs the number of training galaxies (log scale); error bars: ±1 std over seeds; dashed: " \
          "with the Astroformer recipe"


def section(run_dir) -> bool:
    """Write the section of a study folder; False when ``run_dir`` holds no study table."""
    import pandas as pd

    from galmo.core.config import read_config_file
    from galmo.core.errors import GalmoError
    from galmo.methods.supervised.study import FIGURE, RESULTS, best_per_fraction, plot, summarise
    from galmo.report import add_section, render

    run_dir = Path(run_dir)
    if not (run_dir / RESULTS).is_file():
        return False
    table = pd.read_csv(run_dir / RESULTS)
    if table.empty:
        return False
    summary = summarise(table)
    try:
        settings = read_config_file(run_dir / "config.json").get("config", {})
    except GalmoError:  # a report renders even from a folder whose config is damaged
        settings = {}
    shown = summary.rename(columns={"train_frac": "fraction", "balanced_accuracy": "balanced"})
    body = render("lowdata.html.j2", summary=shown, best=best_per_fraction(summary), n_runs=len(table),
                  settings={k: settings[k] for k in ("epochs", "batch_size", "seeds", "fractions", "test_frac")
                            if k in settings},
                  total_hours=float(table["train_seconds"].sum()) / 3600)
    fig = plot(summary, run_dir / "figures" / FIGURE)
    add_section(run_dir, KEY, TITLE, body, [fig], [CAPTION])
    return True
