"""The sample overview section of a run's report: class montage, class counts, truth histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from galmo import plots
from galmo.report import add_section, metrics_html, table_html

# Truth columns worth a histogram, when the source has them (the simulator's truth catalog).
HIST_COLUMNS = ["redshift", "mag_r", "abs_mag_r", "g_minus_r", "r_minus_z", "r50_arcsec", "r50_kpc", "bulge_frac",
                "bulge_n", "axis_ratio", "inclination_deg", "bar_strength", "pitch_deg", "n_arms", "arm_strength",
                "psf_fwhm_r"]


def overview_section(run_dir, src, quick: bool = False, per_class: int = 6) -> dict:
    from galmo.sources.summary import summarise

    run_dir = Path(run_dir)
    fig_dir = run_dir / "figures"
    cat = src.catalog.copy()
    if {"mag_g", "mag_r"} <= set(cat.columns) and "g_minus_r" not in cat.columns:
        cat["g_minus_r"] = cat["mag_g"] - cat["mag_r"]
    if {"mag_r", "mag_z"} <= set(cat.columns) and "r_minus_z" not in cat.columns:
        cat["r_minus_z"] = cat["mag_r"] - cat["mag_z"]
    summary = summarise(src)
    figures, captions = [], []
    rng = np.random.default_rng(0)
    if "label" in cat.columns and (cat["label"] >= 0).any():
        names = src.class_names or sorted(cat["label"].unique())
        by_class = {}
        for k, name in enumerate(names):
            pos = np.flatnonzero(cat["label"].to_numpy() == k)
            if len(pos):
                pick = np.sort(rng.choice(pos, size=min(per_class, len(pos)), replace=False))
                by_class[str(name)] = list(src.read(pick, kind="image"))
        figures.append(plots.class_grid(by_class, fig_dir / "overview_classes.png", per_class=per_class))
        captions.append(f"{per_class} random galaxies of each class")
        counts = cat["label_name"].value_counts().reindex([str(n) for n in names]).fillna(0).astype(int)
        figures.append(plots.bar(counts.to_dict(), fig_dir / "overview_counts.png", title="galaxies per class"))
        captions.append("class counts")
    else:
        pick = np.sort(rng.choice(len(cat), size=min(48, len(cat)), replace=False))
        figures.append(plots.montage(list(src.read(pick, kind="image")), fig_dir / "overview_montage.png",
                                     titles=[str(i) for i in cat["id"].iloc[pick]]))
        captions.append("random galaxies")
    cols = [c for c in HIST_COLUMNS if c in cat.columns]
    if cols:
        by = "label_name" if "label_name" in cat.columns and cat["label_name"].nunique() <= 12 else None
        figures.append(plots.histograms(cat, cols, fig_dir / "overview_truth.png", by=by))
        captions.append("truth parameters" + (" by class" if by else ""))
    body = metrics_html({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
    if "class_counts" in summary and isinstance(summary["class_counts"], dict):
        import pandas as pd

        body += table_html(pd.DataFrame({"class": list(summary["class_counts"]),
                                         "count": list(summary["class_counts"].values())}))
    add_section(run_dir, "overview", "The sample", body, figures, captions)
    return summary
