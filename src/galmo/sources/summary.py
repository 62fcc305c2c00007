"""What ``galmo info`` says about a source (format, size, bands, classes, NaNs, label columns) and
what ``galmo show`` draws of it (a labelled montage)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from galmo.core.errors import GalmoError
from galmo.core.schema import ANSWER_COLUMNS
from galmo.sources.base import Source

LABEL_COLUMNS = ("label", "label_name", "class", "class_name", "anomaly", "is_anomaly")
NAN_SAMPLE = 64


def summarise(src: Source, nan_sample: int = NAN_SAMPLE) -> dict:
    """A JSON-ready description of ``src``.

    Keys: format, path, count, shape, bands, kinds, class_names, class_counts (by name, plus
    'unlabelled'), labelled, nan_frac (mean over the catalog's ``nan_frac`` or over an evenly spaced
    sample of ``nan_sample`` images of the rawest kind), nan_images (how many have any NaN, same
    basis), nan_basis, label_columns, vote_columns (how many of the 37 Galaxy Zoo columns),
    vote_columns_complete, columns, rejected, notes.
    """
    cat = src.catalog
    d: dict = {
        "format": src.format,
        "path": str(src.path),
        "count": len(src),
        "shape": list(src.shape),
        "bands": list(src.bands),
        "kinds": list(src.kinds),
        "class_names": list(src.class_names) if src.class_names else None,
    }
    d.update(_class_counts(src))
    d.update(_nan_stats(src, nan_sample))
    d["label_columns"] = [c for c in LABEL_COLUMNS if c in cat.columns]
    votes = [c for c in ANSWER_COLUMNS if c in cat.columns]
    d["vote_columns"] = len(votes)
    d["vote_columns_complete"] = len(votes) == len(ANSWER_COLUMNS)
    d["columns"] = [str(c) for c in cat.columns]
    d["rejected"] = len(src.rejected)
    d["notes"] = list(src.notes)
    return d


def _class_counts(src: Source) -> dict:
    cat = src.catalog
    label = cat["label"].to_numpy() if "label" in cat.columns else np.zeros(0)
    if not (label >= 0).any() and not src.class_names:
        return {"labelled": 0, "class_counts": None}
    counts = np.bincount(label[label >= 0].astype(np.int64), minlength=len(src.class_names or []))
    names = src.class_names or [str(k) for k in range(len(counts))]
    out = {str(names[k]) if k < len(names) else str(k): int(c) for k, c in enumerate(counts)}
    if (label < 0).any():
        out["unlabelled"] = int((label < 0).sum())
    return {"labelled": int((label >= 0).sum()), "class_counts": out}


def _nan_stats(src: Source, nan_sample: int) -> dict:
    cat = src.catalog
    if "nan_frac" in cat.columns:
        f = cat["nan_frac"].to_numpy(float)
        return {"nan_frac": float(np.nanmean(f)) if len(f) else 0.0, "nan_images": int((f > 0).sum()),
                "nan_basis": "catalog column nan_frac (every image)"}
    if len(src) == 0:
        return {"nan_frac": 0.0, "nan_images": 0, "nan_basis": "no images"}
    kind = "flux" if "flux" in src.kinds else "image"
    pos = np.unique(np.linspace(0, len(src) - 1, min(nan_sample, len(src))).round().astype(int))
    bad = [np.mean(~np.isfinite(im)) for p in pos for im in src.read_ok([p], kind=kind)[1]]
    if not bad:
        return {"nan_frac": float("nan"), "nan_images": 0, "nan_basis": "no readable image in the sample"}
    return {"nan_frac": float(np.mean(bad)), "nan_images": int(np.sum(np.asarray(bad) > 0)),
            "nan_basis": f"{len(bad)} sampled images, kind '{kind}'"}


def summary_text(d: dict) -> str:
    """``summarise`` output as the lines ``galmo info`` prints."""
    c, h, w = d["shape"]
    lines = [
        f"{d['path']}",
        f"  format      {d['format']}",
        f"  images      {d['count']}  ({c} x {h} x {w}: bands {', '.join(d['bands'])})",
        f"  kinds       {', '.join(d['kinds'])}",
    ]
    if d.get("class_counts"):
        lines.append(f"  labelled    {d['labelled']} of {d['count']}")
        width = max(len(k) for k in d["class_counts"])
        lines += [f"    {k:<{width}}  {v}" for k, v in d["class_counts"].items()]
    else:
        lines.append("  labels      none")
    lines.append(f"  NaN pixels  {100 * d['nan_frac']:.3g}% ({d['nan_images']} images with any; {d['nan_basis']})")
    if d["label_columns"]:
        lines.append(f"  label cols  {', '.join(d['label_columns'])}")
    if d["vote_columns"]:
        lines.append(f"  GZ votes    {d['vote_columns']} of 37 vote-fraction columns")
    others = [x for x in d["columns"] if x not in ANSWER_COLUMNS and x not in ("id", "ref")]
    if others:
        shown = ", ".join(others[:20]) + (f" ... ({len(others)} in all)" if len(others) > 20 else "")
        lines.append(f"  columns     {shown}")
    if d["rejected"]:
        lines.append(f"  rejected    {d['rejected']} item{'s' if d['rejected'] != 1 else ''}"
                     + (":" if d.get("rejected_items") else ""))
        lines += [f"    {ref}: {reason}" for ref, reason in d.get("rejected_items") or []]
    lines += [f"  note        {n}" for n in d["notes"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------- the verbs
def describe(path, on_error: str = "raise") -> str:
    """The text ``galmo info`` prints for the source at ``path``. With ``on_error='skip'`` the bad
    items (if any) are counted and listed in the text, one ``ref: reason`` line each (``info`` writes
    no file)."""
    from galmo.sources import open_source

    src = open_source(path, on_error=on_error)
    d = summarise(src)
    d["rejected_items"] = src.rejected
    return summary_text(d)


def show(path, out, n: int = 32, ids=None, ncols: int = 8, seed: int = 0, on_error: str = "raise",
         log=print) -> tuple[Path, int]:
    """A montage PNG ``out`` of ``n`` seeded-random galaxies of the source (or of the galaxies
    ``ids``), titled with id and class; returns (PNG path, how many). With ``on_error='skip'`` the
    bad items (if any) are listed in ``<stem>.rejected.csv`` beside ``out`` (``log`` says so)."""
    from galmo.plots import montage
    from galmo.sources import open_source
    from galmo.sources.base import report_rejected

    src = open_source(path, on_error=on_error)
    cat = src.catalog
    if ids:
        pos = np.flatnonzero(cat["id"].astype(str).isin(ids).to_numpy())
        missing = set(ids) - set(cat["id"].astype(str).iloc[pos])
        if missing:
            raise GalmoError(f"ids not in the source: {', '.join(sorted(missing)[:10])}", path=path)
    else:
        if n < 1:
            raise GalmoError(f"n must be at least 1, got {n}")
        rng = np.random.default_rng(seed)
        pos = np.sort(rng.choice(len(cat), size=min(n, len(cat)), replace=False))
    pos, images = src.read_ok(pos, kind="image")  # with --on-error skip, undecodable ones are left out
    if not len(pos):
        raise GalmoError("none of the chosen galaxies could be read", path=path)
    png = montage(list(images), out, titles=[_title(cat.iloc[i]) for i in pos], ncols=ncols)
    report_rejected(src, out, "file", log)
    return png, len(pos)


def _title(row) -> str:
    name = row.get("label_name") if hasattr(row, "get") else None
    ident = str(row["id"])
    return f"{ident}\n{name}" if isinstance(name, str) and name else ident
