"""Photometry tokens: magnitudes and colours from a catalog's ``flux_<band>`` / ``mag_<band>`` columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from galmo.core.errors import GalmoError


def default_photometry_names(catalog: pd.DataFrame, bands=None) -> list[str]:
    """Photometry tokens the catalog supports: one magnitude per band and the colours of adjacent
    bands (``mag:g``, ``mag:r``, ``color:g-r``, ...), from ``flux_<b>`` (nanomaggies) or ``mag_<b>``."""
    bands = list(bands) if bands else [c[5:] for c in catalog.columns if c.startswith("flux_")] or \
        [c[4:] for c in catalog.columns if c.startswith("mag_")]
    have = [b for b in bands if f"flux_{b}" in catalog.columns or f"mag_{b}" in catalog.columns]
    return [f"mag:{b}" for b in have] + [f"color:{a}-{b}" for a, b in zip(have[:-1], have[1:])]


def _mag(catalog: pd.DataFrame, band: str) -> np.ndarray:
    if f"mag_{band}" in catalog.columns:
        return catalog[f"mag_{band}"].to_numpy(np.float64)
    if f"flux_{band}" in catalog.columns:
        f = catalog[f"flux_{band}"].to_numpy(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(f > 0, 22.5 - 2.5 * np.log10(np.maximum(f, 1e-12)), np.nan)
    raise GalmoError(f"the catalog has no flux_{band} or mag_{band} column for photometry token mag:{band}")


def photometry_table(catalog: pd.DataFrame, names: list[str]) -> np.ndarray:
    """(N, K) float32 photometry values for token ``names`` (see :func:`default_photometry_names`)."""
    cols = []
    for name in names:
        kind, _, what = name.partition(":")
        if kind == "mag":
            cols.append(_mag(catalog, what))
        elif kind == "color":
            a, b = what.split("-", 1)
            cols.append(_mag(catalog, a) - _mag(catalog, b))
        elif name in catalog.columns:
            cols.append(catalog[name].to_numpy(np.float64))
        else:
            raise GalmoError(f"photometry token {name!r}: no such catalog column")
    return np.stack(cols, 1).astype(np.float32) if cols else np.zeros((len(catalog), 0), np.float32)
