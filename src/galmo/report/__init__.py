"""One HTML report per run, assembled from the sections that each stage leaves in the run folder.

A stage calls :func:`add_section` with a key (which also orders the sections), a title, an HTML
body (use :func:`table_html` for tables) and figure paths. :func:`build_report` turns every
``sections/*.json`` of a run folder into ``report.html`` with the figures embedded, so the report
is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import json
import os
import time
from pathlib import Path
from typing import Iterable

from galmo.core.io import write_json, write_text

# Order of well-known sections; unknown keys sort after these, alphabetically.
ORDER = ["overview", "cluster", "supervised", "embeddings", "augment", "lowdata"]


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


def table_html(df, float_fmt: str = "{:.3g}", index: bool = False, max_rows: int = 200) -> str:
    """A pandas DataFrame as a compact HTML table."""
    return df.head(max_rows).to_html(index=index, float_format=lambda x: float_fmt.format(x),
                                     border=0, classes="tbl", na_rep="–")


def metrics_html(d: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in d.items())
    return f"<table class='tbl'>{rows}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{border-bottom:2px solid #345}h2{margin-top:2em;color:#234;border-bottom:1px solid #ccc}
table.tbl{border-collapse:collapse;margin:.6em 0;font-size:.9em}
.tbl td,.tbl th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}
nav a{margin-right:1em}.meta{color:#666;font-size:.85em}
"""


def _sort_key(key: str):
    return (ORDER.index(key), key) if key in ORDER else (len(ORDER), key)


def build_report(run_dir: str | os.PathLike, title: str | None = None) -> Path:
    run_dir = Path(run_dir)
    sections = []
    for f in (run_dir / "sections").glob("*.json"):
        sections.append(json.loads(f.read_text()))
    sections.sort(key=lambda s: _sort_key(s["key"]))
    title = title or f"galmo report — {run_dir.name}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='meta'>generated {time.strftime('%Y-%m-%d %H:%M:%S')} from {html.escape(str(run_dir))}</p>",
             "<nav>" + "".join(f"<a href='#{s['key']}'>{html.escape(s['title'])}</a>" for s in sections) + "</nav>"]
    for s in sections:
        parts.append(f"<h2 id='{s['key']}'>{html.escape(s['title'])}</h2>{s['body']}")
        for fig, cap in zip(s["figures"], s["captions"]):
            p = next((c for c in (run_dir / fig, Path(fig)) if c.exists()), None)
            if p is None:
                continue
            data = base64.b64encode(p.read_bytes()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(fig)}'>"
                         f"<figcaption>{html.escape(cap or fig)}</figcaption></figure>")
    parts.append("</body></html>")
    return write_text(run_dir / "report.html", "\n".join(parts))
