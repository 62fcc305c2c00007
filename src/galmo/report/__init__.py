"""One HTML report per run, rendered from the run folder through Jinja2 templates.

A method writes its section with :func:`add_section`: a key (which also orders the sections), a
title, a body rendered from a template (:func:`render`; templates live in ``galmo/report/templates``
and in each method's ``templates/`` folder, and share the macros of ``macros.html.j2``) and figure
paths. :func:`build_report` renders every ``sections/*.json`` of a run folder into ``report.html``
with the figures embedded, so the report is one self-contained file. ``galmo report RUN``
(:func:`rebuild`) first asks each method to render its section again from the files of the run.
"""

from __future__ import annotations

import base64
import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from galmo.core.io import write_json, write_text

# Order of well-known sections; unknown keys sort after these, alphabetically.
ORDER = ["overview", "cluster", "supervised", "embeddings", "augment", "lowdata"]
# Methods whose report.py can render their section again from a run folder (``galmo report``).
SECTION_BUILDERS = ["galmo.methods.overview", "galmo.methods.unsupervised.report",
                    "galmo.methods.supervised.report", "galmo.methods.supervised.study_report",
                    "galmo.methods.embeddings.report", "galmo.methods.generative.report"]


@lru_cache(maxsize=1)
def environment():
    """The Jinja2 environment of every report template (HTML autoescaped; filters ``fmt`` and ``table``)."""
    import jinja2

    root = Path(__file__).resolve().parents[1]
    folders = [Path(__file__).parent / "templates"] + sorted(root.glob("methods/*/templates"))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(f) for f in folders]),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    env.filters["table"] = lambda df, float_fmt="{:.3g}": jinja2.utils.markupsafe.Markup(table_html(df, float_fmt))
    return env


def render(template: str, **context) -> str:
    """The named template rendered with ``context``."""
    return environment().get_template(template).render(**context)


def fmt(v) -> str:
    """A metric value as shown in reports: floats to 4 significant digits."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table_html(df, float_fmt: str = "{:.3g}", index: bool = False, max_rows: int = 200) -> str:
    """A pandas DataFrame as a compact HTML table (pandas escapes the cells)."""
    return df.head(max_rows).to_html(index=index, float_format=lambda x: float_fmt.format(x),
                                     border=0, classes="tbl", na_rep="–")


def add_section(run_dir: str | os.PathLike, key: str, title: str, body_html: str = "",
                figures: Iterable[str | os.PathLike] = (), captions: Iterable[str] | None = None) -> Path:
    run_dir = Path(run_dir)
    figures = [_relative(f, run_dir) for f in figures]
    captions = list(captions) if captions is not None else [""] * len(figures)
    return write_json(run_dir / "sections" / f"{key}.json",
                      {"key": key, "title": title, "body": body_html, "figures": figures, "captions": captions})


def _relative(fig, run_dir: Path) -> str:
    """A figure path as stored in a section: relative to the run folder (given absolute, relative to
    the working directory, or already relative to the run folder)."""
    fig, root = Path(fig), run_dir.resolve()
    for cand in (fig.resolve(), (run_dir / fig).resolve()):
        if cand.exists() and cand.is_relative_to(root):
            return str(cand.relative_to(root))
    return str(fig)


def _sort_key(key: str):
    return (ORDER.index(key), key) if key in ORDER else (len(ORDER), key)


def build_report(run_dir: str | os.PathLike, title: str | None = None) -> Path:
    """``run_dir/report.html`` from the sections of the run folder (figures embedded)."""
    run_dir = Path(run_dir)
    sections = [json.loads(f.read_text()) for f in (run_dir / "sections").glob("*.json")]
    sections.sort(key=lambda s: _sort_key(s["key"]))
    meta_path = run_dir / "sections" / "_title.txt"
    if title:
        write_text(meta_path, title)
    elif meta_path.exists():
        title = meta_path.read_text()
    for s in sections:
        figs = []
        for fig, cap in zip(s["figures"], s["captions"]):
            p = next((c for c in (run_dir / fig, Path(fig)) if c.exists()), None)
            if p is not None:
                figs.append({"path": fig, "caption": cap, "data": base64.b64encode(p.read_bytes()).decode()})
        s["figures"] = figs
    html = render("report.html.j2", title=title or f"galmo report — {run_dir.name}", sections=sections,
                  generated=time.strftime("%Y-%m-%d %H:%M:%S"), run_dir=str(run_dir))
    return write_text(run_dir / "report.html", html)


def rebuild(run_dir: str | os.PathLike) -> Path:
    """Render every section again from the run folder's files, then the report (``galmo report RUN``).
    Each module of :data:`SECTION_BUILDERS` that exists offers ``section(run_dir) -> bool`` (False:
    nothing of that method in this folder)."""
    import importlib

    from galmo.core.errors import GalmoError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GalmoError("not a run folder", path=run_dir)
    for name in SECTION_BUILDERS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        if hasattr(mod, "section"):
            mod.section(run_dir)
    if not list((run_dir / "sections").glob("*.json")):
        raise GalmoError("nothing to report: no method's outputs in this folder", path=run_dir)
    return build_report(run_dir)
