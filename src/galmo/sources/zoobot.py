"""Catalogs in the zoobot / galaxy-datasets layout: ``id_str``, ``file_loc`` and vote counts per answer.

galaxy-datasets publishes each Galaxy Zoo campaign as a table with one row per galaxy: ``id_str``
(the galaxy's name), ``file_loc`` (its JPEG/PNG, or FITS, cutout), and one column per answer holding
how many volunteers gave it (``smooth-or-featured-dr5_smooth``, ... the "ortho" columns of
:mod:`galmo.core.schemas`), often with ``<question>_total-votes`` and ``<answer>_fraction``. Such a
catalog is read by :func:`galmo.sources.open_catalog_source` like galmo's own (``id`` + ``path``):
this module only maps the names (:func:`as_galmo_catalog`: ``id`` from ``id_str``, the files from
``file_loc``) and adds the per-question totals the catalog lacks (:func:`add_vote_totals`). Which
campaign's votes a catalog holds is :func:`galmo.core.schema.detect_schema` (``--schema auto``).
"""

from __future__ import annotations

import pandas as pd

from galmo.core.catalog import validate_catalog
from galmo.core.schema import detect_schema, get_schema

ID_COLUMN = "id_str"  # the files: 'file_loc', one of galmo.sources.PATH_COLUMNS


def as_galmo_catalog(df: pd.DataFrame, path) -> pd.DataFrame:
    """The catalog with galmo's unique string ``id``: its own, else a copy of zoobot's ``id_str``
    (which stays, so predictions can be joined back on it). GalmoError naming ``path`` when neither."""
    if "id" not in df.columns and ID_COLUMN in df.columns:
        df = df.copy()
        df.insert(0, "id", df[ID_COLUMN])
    return validate_catalog(df, path)


def add_vote_totals(df: pd.DataFrame) -> pd.DataFrame:
    """``<question>_total-votes`` (volunteers who answered it) for every question of the catalog's counts
    schema whose answer columns are all present and whose total is not already there."""
    name = detect_schema(df.columns)
    schema = None if name is None else get_schema(name)
    if schema is None or schema.votes != "counts":
        return df
    totals = {}
    for q, col in zip(schema.questions, schema.total_columns):
        if col not in df.columns and all(c in df.columns for c in q.columns):
            totals[col] = df[list(q.columns)].apply(pd.to_numeric, errors="coerce").sum(axis=1, min_count=1)
    return pd.concat([df, pd.DataFrame(totals, index=df.index)], axis=1) if totals else df
