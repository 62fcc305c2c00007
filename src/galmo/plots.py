"""Every figure of galmo, in one style (matplotlib, drawn on Agg canvases). Each function writes a
PNG atomically and returns its path.

Figures are :class:`matplotlib.figure.Figure` objects with their own Agg canvas, never pyplot's:
importing this module or drawing a figure leaves the user's backend, open figures and rcParams
as they were (the style applies only inside each function, through :func:`matplotlib.rc_context`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from galmo.core.io import atomic_path

STYLE = {"figure.dpi": 100, "savefig.dpi": 110, "font.size": 9, "axes.titlesize": 9, "axes.grid": False,
         "image.origin": "lower"}


def styled(fn):
    """Draw ``fn``'s figure in galmo's :data:`STYLE` (restored afterwards)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
    """``(figure, axes)`` like :func:`matplotlib.pyplot.subplots`, on a private Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def savefig(fig, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight", format="png")
    return Path(path)


def _as_rgb(img: np.ndarray) -> np.ndarray:
    """Accept (H, W, 3) uint8/float composites or (C, H, W) float images."""
    from galmo.core.transforms import display_rgb

    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 3 and img.shape[0] != 3:
        return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img
    if img.ndim == 2:
        img = img[None]
    return display_rgb(img)


@styled
def montage(images: Sequence[np.ndarray], path, titles: Sequence[str] | None = None, ncols: int = 8,
            suptitle: str | None = None, cell: float = 1.25) -> Path:
    """A grid of galaxies with optional titles (images as composites or (C, H, W) fluxes).

    Images of one shape are drawn as one mosaic in one axes (a 24-galaxy montage: 0.15 s instead of
    0.7 s with an axes per galaxy, which is what mixed shapes still get)."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    rgbs = [_as_rgb(im) for im in images]
    if n and len({r.shape for r in rgbs}) == 1:
        return _mosaic(rgbs, path, titles, ncols, nrows, suptitle, cell)
    fig, axes = subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + (0.3 if suptitle else 0)),
                         squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < n:
            ax.imshow(rgbs[k], interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=6.5, pad=2)
    if suptitle:
        fig.suptitle(suptitle)
    fig.subplots_adjust(wspace=0.05, hspace=0.25)
    return savefig(fig, path)


def _mosaic(rgbs, path, titles, ncols: int, nrows: int, suptitle, cell: float) -> Path:
    """:func:`montage` of same-shape composites: one image with white gaps (room for the titles), one axes."""
    h, w = rgbs[0].shape[:2]
    gx, gy = max(1, round(0.05 * w)), max(1, round((0.3 if titles is not None else 0.05) * h))
    out = np.ones((nrows * (h + gy), ncols * (w + gx) - gx, 3), np.float32)
    for k, rgb in enumerate(rgbs):
        r, c = divmod(k, ncols)
        out[r * (h + gy) + gy:(r + 1) * (h + gy), c * (w + gx):c * (w + gx) + w] = rgb[::-1]  # as origin "lower"
    fig, ax = subplots(figsize=(cell * ncols, cell * nrows * (h + gy) / h + (0.3 if suptitle else 0)))
    ax.imshow(out, interpolation="nearest", origin="upper")
    ax.set_axis_off()
    for k, title in enumerate(titles if titles is not None else ()):
        r, c = divmod(k, ncols)
        ax.text(c * (w + gx) + w / 2, r * (h + gy) + gy * 0.9, str(title), fontsize=6.5, ha="center", va="bottom")
    if suptitle:
        fig.suptitle(suptitle)
    return savefig(fig, path)


@styled
def class_grid(images_by_class: dict[str, Sequence[np.ndarray]], path, per_class: int = 6, cell: float = 1.1) -> Path:
    """One column per class, ``per_class`` examples each, class names on top."""
    names = list(images_by_class)
    fig, axes = subplots(per_class, len(names), figsize=(cell * len(names), cell * per_class + 0.6), squeeze=False)
    for j, name in enumerate(names):
        ims = list(images_by_class[name])
        for i in range(per_class):
            ax = axes[i, j]
            ax.set_axis_off()
            if i < len(ims):
                ax.imshow(_as_rgb(ims[i]), interpolation="nearest")
        axes[0, j].set_title(name.replace(" ", "\n", 2), fontsize=6.5)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    return savefig(fig, path)


@styled
def bar(counts: dict, path, title: str = "", xlabel: str = "", ylabel: str = "count") -> Path:
    fig, ax = subplots(figsize=(6, 3))
    keys = [str(k) for k in counts]
    ax.bar(range(len(keys)), list(counts.values()), color="#3a6ea5")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=40, ha="right", fontsize=7)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return savefig(fig, path)


@styled
def histograms(df, columns: Sequence[str], path, by: str | None = None, bins: int = 30, ncols: int = 4) -> Path:
    """Histograms of catalog columns, optionally one step-curve per value of ``by``."""
    columns = [c for c in columns if c in df.columns]
    nrows = max(1, int(np.ceil(len(columns) / ncols)))
    fig, axes = subplots(nrows, ncols, figsize=(3 * ncols, 2.3 * nrows), squeeze=False)
    for ax, col in zip(axes.flat, columns):
        vals = df[col].to_numpy(dtype=float)
        finite = np.isfinite(vals)
        edges = np.histogram_bin_edges(vals[finite], bins=bins) if finite.any() else bins
        if by is None:
            ax.hist(vals[finite], bins=edges, color="#3a6ea5")
        else:
            for key, sub in df.groupby(by):
                v = sub[col].to_numpy(dtype=float)
                ax.hist(v[np.isfinite(v)], bins=edges, histtype="step", label=str(key))
        ax.set_title(col)
    for ax in list(axes.flat)[len(columns):]:
        ax.set_axis_off()
    if by is not None and columns:
        axes.flat[0].legend(fontsize=5, ncol=1)
    fig.tight_layout()
    return savefig(fig, path)


@styled
def confusion(matrix: np.ndarray, path, row_labels: Sequence[str], col_labels: Sequence[str],
              title: str = "", normalize: str | None = "row", xlabel: str = "predicted", ylabel: str = "true") -> Path:
    """A confusion (or contingency) matrix with counts annotated; colour by row fraction."""
    m = np.asarray(matrix, dtype=float)
    shown = m / np.maximum(m.sum(axis=1, keepdims=True), 1) if normalize == "row" else m
    fig, ax = subplots(figsize=(0.45 * len(col_labels) + 2.5, 0.4 * len(row_labels) + 1.8))
    ax.imshow(shown, cmap="Blues", origin="upper", aspect="auto")
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels([str(c) for c in col_labels], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels([str(r) for r in row_labels], fontsize=7)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=5.5,
                        color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return savefig(fig, path)


@styled
def scatter_labels(xy: np.ndarray, labels, path, title: str = "", xlabel: str = "", ylabel: str = "",
                   s: float = 4.0, names: dict | None = None) -> Path:
    """A 2-D map coloured by label (categorical)."""
    xy = np.asarray(xy)
    labels = np.asarray(labels)
    fig, ax = subplots(figsize=(6, 5))
    uniq = [u for u in np.unique(labels)]
    cmap = colormap("tab20" if len(uniq) > 10 else "tab10")
    for k, u in enumerate(uniq):
        sel = labels == u
        ax.scatter(xy[sel, 0], xy[sel, 1], s=s, color=cmap(k % cmap.N), label=str(names.get(u, u) if names else u),
                   alpha=0.7, linewidths=0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2 if len(uniq) > 10 else 1)
    return savefig(fig, path)


# ---------------------------------------------------------------- supervised (issue 4)
@styled
def accuracy_coverage_curve(curves: dict, path, title: str = "accuracy vs coverage",
                            marks: Sequence[float] = (0.5,)) -> Path:
    """Accuracy of the most confident fraction vs that fraction; ``curves`` maps label → (coverage, accuracy)."""
    fig, ax = subplots(figsize=(4.5, 3.4))
    for label, (cov, acc) in curves.items():
        ax.plot(np.asarray(cov) * 100, np.asarray(acc) * 100, label=str(label))
    for m in marks:
        ax.axvline(m * 100, color="#999", lw=0.8, ls="--")
    ax.set_xlabel("coverage: most confident galaxies kept (%)")
    ax.set_ylabel("accuracy on them (%)")
    ax.set_xlim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=7)
    return savefig(fig, path)


@styled
def curves_with_errors(curves: dict, path, xlabel: str, ylabel: str, title: str = "", logx: bool = False) -> Path:
    """Lines with error bars; ``curves`` maps label → (x, y, yerr, dashed, group): one colour per group."""
    fig, ax = subplots(figsize=(6.4, 4.2))
    colours = {}
    for label, (x, y, err, dashed, group) in curves.items():
        c = colours.setdefault(group, f"C{len(colours)}")
        ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, ls="--" if dashed else "-", color=c,
                    label=str(label))
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return savefig(fig, path)


@styled
def reliability_diagram(bins: dict, path, ece: float | None = None, title: str = "reliability") -> Path:
    """Accuracy vs confidence per bin (``galmo.core.metrics.reliability_bins``) with the diagonal and counts."""
    edges = np.asarray(bins["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    ok = np.asarray(bins["count"]) > 0
    fig, (ax, axc) = subplots(2, 1, figsize=(4.2, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centers[ok], np.asarray(bins["accuracy"])[ok], width=np.diff(edges)[ok], edgecolor="#234",
           color="#3a6ea5", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], color="#c33", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title + (f" (ECE = {ece:.3f})" if ece is not None else ""))
    axc.bar(centers, bins["count"], width=np.diff(edges), color="#777")
    axc.set_yscale("log")
    axc.set_xlabel("confidence (max probability)")
    axc.set_ylabel("galaxies")
    return savefig(fig, path)


# ---------------------------------------------------------------- morphology planes (unsupervised, issue 3)
def _by_group_scatter(ax, df, x: str, y: str, by: str | None):
    keys = sorted(df[by].unique()) if by else [None]
    cmap = colormap("tab20" if len(keys) > 10 else "tab10")
    for k, key in enumerate(keys):
        sub = df if key is None else df[df[by] == key]
        ok = np.isfinite(sub[x].to_numpy(float)) & np.isfinite(sub[y].to_numpy(float))
        ax.scatter(sub[x][ok], sub[y][ok], s=10, color=cmap(k % cmap.N), alpha=0.8, linewidths=0,
                   label=None if key is None else str(key))
    if by and len(keys) > 1:
        ax.legend(fontsize=5.5, ncol=2, markerscale=1.5, loc="best", title=by, title_fontsize=6)


@styled
def gini_m20(df, path, by: str | None = "group", title: str = "Gini–M20") -> Path:
    """Galaxies on the Gini–M20 plane with the Lotz, Primack & Madau (2008) dividing lines
    (mergers above G = −0.14 M20 + 0.33; E/S0/Sa above G = 0.14 M20 + 0.80, Sb–Ir below)."""
    fig, ax = subplots(figsize=(5, 4.2))
    _by_group_scatter(ax, df, "m20", "gini", by)
    m = np.linspace(-3.0, 0.0, 50)
    ax.plot(m, -0.14 * m + 0.33, "k--", lw=1)
    mm = m[m <= -1.68]  # the E/S0/Sa–Sb/Ir line ends where it meets the merger line
    ax.plot(mm, 0.14 * mm + 0.80, "k:", lw=1)
    ax.text(-0.6, 0.70, "mergers", fontsize=7)
    ax.text(-2.9, 0.61, "E/S0/Sa", fontsize=7)
    ax.text(-2.9, 0.38, "Sb–Ir", fontsize=7)
    ax.set_xlim(0.0, -3.0)  # M20 axis reversed, as in Lotz et al.
    ax.set_ylim(0.3, 0.75)
    ax.set_xlabel("M20")
    ax.set_ylabel("Gini")
    ax.set_title(title)
    return savefig(fig, path)


@styled
def concentration_asymmetry(df, path, by: str | None = "group", title: str = "C–A") -> Path:
    """Galaxies on the concentration–asymmetry plane; the dashed line A = 0.35 is Conselice (2003)'s
    merger limit."""
    fig, ax = subplots(figsize=(5, 4.2))
    _by_group_scatter(ax, df, "asymmetry", "concentration", by)
    ax.axvline(0.35, color="k", ls="--", lw=1)
    ax.text(0.36, ax.get_ylim()[1] * 0.97 if np.isfinite(ax.get_ylim()[1]) else 5, "mergers", fontsize=7, va="top")
    ax.set_xlabel("asymmetry A")
    ax.set_ylabel("concentration C")
    ax.set_title(title)
    return savefig(fig, path)


# ---------------------------------------------------------------- generative fidelity (issue 14)
@styled
def paired_boxes(df, columns: Sequence[str], path, group: str = "class", split: str = "set",
                 title: str = "") -> Path:
    """One panel per column: for each value of ``group``, side-by-side boxes of each value of ``split``
    (e.g. real vs generated statmorph parameters per class)."""
    columns = [c for c in columns if c in df.columns]
    groups, splits = list(dict.fromkeys(df[group])), list(dict.fromkeys(df[split]))
    colours = colormap("tab10")
    width = 0.8 / max(1, len(splits))
    fig, axes = subplots(len(columns), 1, figsize=(max(5.0, 0.7 * len(groups) + 1.5), 1.7 * len(columns)),
                         squeeze=False, sharex=True)
    for ax, col in zip(axes[:, 0], columns):
        for j, s in enumerate(splits):
            sub = df[df[split] == s]
            vals = [sub.loc[sub[group] == g, col].to_numpy(float) for g in groups]
            vals = [v[np.isfinite(v)] for v in vals]
            pos = np.arange(len(groups)) + (j - (len(splits) - 1) / 2) * width
            keep = [k for k, v in enumerate(vals) if len(v)]
            if keep:
                box = ax.boxplot([vals[k] for k in keep], positions=pos[keep], widths=width * 0.9,
                                 patch_artist=True, showfliers=False)
                for patch in box["boxes"]:
                    patch.set(facecolor=colours(j), alpha=0.6)
            ax.plot([], [], color=colours(j), lw=6, alpha=0.6, label=str(s))
        ax.set_ylabel(col)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].legend(fontsize=7, ncol=len(splits), loc="upper right")
    axes[-1, 0].set_xticks(range(len(groups)))
    axes[-1, 0].set_xticklabels([str(g) for g in groups], rotation=35, ha="right", fontsize=7)
    if title:
        axes[0, 0].set_title(title)
    return savefig(fig, path)


@styled
def training_curve(history: Sequence[dict], path, keys: Sequence[str] = ("train_loss", "val_loss"),
                   title: str = "training") -> Path:
    """The per-epoch losses of a training history (:func:`galmo.nn.train.read_progress`), log scale."""
    fig, ax = subplots(figsize=(4.6, 3.0))
    for key in keys:
        pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, marker="o", ms=3, label=key)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return savefig(fig, path)
