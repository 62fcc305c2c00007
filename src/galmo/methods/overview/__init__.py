"""The sample overview section of a run's report: class montage, class counts, truth histograms.

:func:`overview_section` draws the figures from a source and records what it showed in
``run_dir/overview.json`` (the source path, the summary, the figures); :func:`section` renders the
section again from that record (``galmo report RUN``), drawing the figures again from the recorded
source only when they are gone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RECORD = "overview.json"
# Truth columns worth a histogram, when the source has them (the simulator's truth catalog).
HIST_COLUMNS = ["redshift", "mag_r", "abs_mag_r", "g_minus_r", "r_minus_z", "r50_arcsec", "r50_kpc", "bulge_frac",
                "bulge_n", "axis_ratio", "inclination_deg", "bar_strength", "pitch_deg", "n_arms", "arm_strength",
                "psf_fwhm_r"]


def overview_section(run_dir, src, quick: bool = False, per_class: int = 6) -> dict:
    """Draw the overview figures of ``src`` into ``run_dir/figures``, record them and write the
    "overview" section; returns the source summary. ``quick`` is accepted for the demo's signature
    (the overview is quick anyway)."""
    from galmo.core.io import write_json
    from galmo.sources.summary import summarise

    run_dir = Path(run_dir)
    summary = summarise(src)
    figures = _figures(run_dir / "figures", src, per_class)
    write_json(run_dir / RECORD, {"source": str(src.path), "per_class": per_class, "summary": summary,
                                  "figures": [[str(Path(f).relative_to(run_dir)), c] for f, c in figures]})
    _write(run_dir, summary, figures)
    return summary


def section(run_dir) -> bool:
    """Render the overview section again from ``run_dir/overview.json``; False when the folder has
    no overview, or its figures are gone and the source it was drawn from is not recorded or
    no longer there."""
    from galmo.core.io import read_json

    run_dir = Path(run_dir)
    if not (run_dir / RECORD).is_file():
        return False
    rec = read_json(run_dir / RECORD)
    figures = [(run_dir / f, c) for f, c in rec.get("figures", [])]
    if all(f.exists() for f, _ in figures) and "summary" in rec:
        _write(run_dir, rec["summary"], figures)
        return True
    source = rec.get("source")
    if not source or not Path(source).exists():
        return False
    from galmo.sources import open_source

    overview_section(run_dir, open_source(source), per_class=int(rec.get("per_class", 6)))
    return True


def _write(run_dir: Path, summary: dict, figures) -> None:
    import pandas as pd

    from galmo.report import add_section, render

    metrics = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    counts = summary.get("class_counts")
    table = (pd.DataFrame({"class": list(counts), "count": list(counts.values())})
             if isinstance(counts, dict) else None)
    body = render("overview.html.j2", metrics=metrics, counts=table)
    add_section(run_dir, "overview", "The sample", body, [f for f, _ in figures], [c for _, c in figures])


def _figures(fig_dir: Path, src, per_class: int) -> list[tuple[Path, str]]:
    """(PNG, caption) of the class grid and counts (or a random montage) and the truth histograms."""
    from galmo import plots

    cat = _with_colours(src.catalog)
    out = []
    rng = np.random.default_rng(0)
    if "label" in cat.columns and (cat["label"] >= 0).any():
        names = src.class_names or sorted(cat["label"].unique())
        by_class = {}
        for k, name in enumerate(names):
            pos = np.flatnonzero(cat["label"].to_numpy() == k)
            if len(pos):
                pick = np.sort(rng.choice(pos, size=min(per_class, len(pos)), replace=False))
                by_class[str(name)] = list(src.read(pick, kind="image"))
        out.append((plots.class_grid(by_class, fig_dir / "overview_classes.png", per_class=per_class),
                    f"{per_class} random galaxies of each class"))
        counts = cat["label_name"].value_counts().reindex([str(n) for n in names]).fillna(0).astype(int)
        out.append((plots.bar(counts.to_dict(), fig_dir / "overview_counts.png", title="galaxies per class"),
                    "class counts"))
    else:
        pick = np.sort(rng.choice(len(cat), size=min(48, len(cat)), replace=False))
        out.append((plots.montage(list(src.read(pick, kind="image")), fig_dir / "overview_montage.png",
                                  titles=[str(i) for i in cat["id"].iloc[pick]]), "random galaxies"))
    cols = [c for c in HIST_COLUMNS if c in cat.columns]
    if cols:
        by = "label_name" if "label_name" in cat.columns and cat["label_name"].nunique() <= 12 else None
        out.append((plots.histograms(cat, cols, fig_dir / "overview_truth.png", by=by),
                    "truth parameters" + (" by class" if by else "")))
    return out


def _with_colours(cat):
    """The catalog with g−r and r−z colours added from the magnitudes, when it has them."""
    cat = cat.copy()
    if {"mag_g", "mag_r"} <= set(cat.columns) and "g_minus_r" not in cat.columns:
        cat["g_minus_r"] = cat["mag_g"] - cat["mag_r"]
    if {"mag_r", "mag_z"} <= set(cat.columns) and "r_minus_z" not in cat.columns:
        cat["r_minus_z"] = cat["mag_r"] - cat["mag_z"]
    return cat
