"""The cluster section of a run's report, rendered from the run folder alone (``galmo report RUN``
and the run itself call :func:`section`): metrics.json, config.json, cluster_confusion.csv,
cluster_morphology.parquet and figures/cluster_*.png, through ``templates/cluster.html.j2``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

TITLE = "Unsupervised groups (voting clustering after eUML)"
CATALOG = "cluster_catalog.parquet"
SUBFOLDER = "cluster"  # where the demo puts its cluster run inside its own run folder
HEAD = ("n", "n_fit", "k", "min_agree", "fraction_classified", "n_classified", "purity", "nmi", "ari",
        "invariant_components", "invariant_views", "pca_components", "pca_variance_kept", "psnr_noisy",
        "psnr_denoised", "psnr_gain")


def section(run_dir) -> bool:
    """Write the "cluster" section of ``run_dir`` from the cluster run in it (or in its ``cluster/``
    sub-folder, as the demo makes); False when there is none."""
    from galmo.report import add_section, render

    run_dir = Path(run_dir)
    folder = next((f for f in (run_dir, run_dir / SUBFOLDER) if (f / CATALOG).exists()
                   and (f / "metrics.json").exists()), None)
    if folder is None:
        return False
    metrics = json.loads((folder / "metrics.json").read_text())
    if "members" not in metrics:  # another method's metrics.json
        return False
    config, encoding = _config(folder)
    per_k = metrics.get("by_k", {})
    catalog = CATALOG if folder == run_dir else f"{SUBFOLDER}/{CATALOG}"
    body = render("cluster.html.j2", stages=metrics["stages"], encoding=_encoding_text(config, encoding, metrics),
                  metrics=metrics, catalog=catalog,
                  head={k: metrics[k] for k in HEAD if metrics.get(k) is not None},
                  per_k=_per_k_table(per_k) if len(per_k) > 1 else None,
                  confusion=_read(folder / "cluster_confusion.csv"), medians=_medians(folder))
    figures, captions = _figures(folder, metrics, config)
    add_section(run_dir, "cluster", TITLE, body, figures, captions)
    return True


def _config(run_dir: Path) -> tuple[dict, dict]:
    """(the cluster config's fields, the resolved encoding) from config.json, or empty when the
    folder's config.json belongs to another method (the demo's shared folder)."""
    path = run_dir / "config.json"
    if not path.exists():
        return {}, {}
    d = json.loads(path.read_text())
    if d.get("method") != "cluster":
        return {}, {}
    return d.get("config", {}), d.get("encoding", {})


def _encoding_text(config: dict, enc: dict, metrics: dict) -> str | None:
    """One sentence on how the images became vectors (None without the cluster config)."""
    if not enc:
        return None
    unwrap = f"{'log' if enc.get('radial') == 'log' else 'linear'}-polar unwrap, " if config.get("polar") else ""
    lay = enc.get("layer")
    layer = ("final features" if lay is None else f"intermediate feature map {lay}" if np.isscalar(lay)
             else f"intermediate feature maps {', '.join(str(v) for v in lay)}")
    size = enc.get("size")
    size = "native" if size is None else (size if np.isscalar(size) else "×".join(str(v) for v in size))
    reduced = (f", reduced to {metrics['invariant_components']} invariant components learnt from "
               f"{metrics['invariant_views']}" if metrics.get("invariant_components") else "")
    return (f"{unwrap}backbone {config.get('backbone')} at {size} px, {layer} pooled by "
            f"{enc.get('pool', 'avg')}{reduced}")


def _per_k_table(per_k: dict) -> pd.DataFrame:
    keep = ("fraction_classified", "n_classified", "purity", "nmi", "ari")
    return pd.DataFrame([{"K": int(k), **{c: v for c, v in d.items() if c in keep}} for k, d in per_k.items()])


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def _medians(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / "cluster_morphology.parquet"
    if not path.exists():
        return None
    from galmo.morphology import group_medians

    return group_medians(pd.read_parquet(path))


def _figures(run_dir: Path, metrics: dict, config: dict) -> tuple[list, list]:
    """The section's figures that exist, in report order, with their captions."""
    inv = metrics["stages"].get("invariant")
    fixed = [("cluster_map.png", f"galaxies on the first two {'invariant' if inv else 'principal'} components, "
              "coloured by group (-1: members disagree)"),
             ("cluster_confusion.png", "contingency of groups and true classes; colour = fraction of the group"),
             ("cluster_gini_m20.png", f"up to {config.get('morph_per_group', 'some')} galaxies per group on the "
              "Gini–M20 plane; lines: Lotz et al. (2008)"),
             ("cluster_c_a.png", "concentration–asymmetry plane; dashed: A = 0.35 (Conselice 2003)")]
    fig_dir = run_dir / "figures"
    out = [(fig_dir / name, cap) for name, cap in fixed if (fig_dir / name).exists()]
    montages = sorted(fig_dir.glob("cluster_group_*.png")) + sorted(fig_dir.glob("cluster_unclassified.png"))
    out += [(p, f"montage: {p.stem.replace('cluster_', '')}") for p in montages]
    return [p for p, _ in out], [c for _, c in out]
