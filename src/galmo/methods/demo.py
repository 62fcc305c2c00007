"""``galmo demo``: every capability on one sample, one report.

:func:`run_demo` runs the sections in report order: the sample overview, then each pipeline's
``demo_section(run_dir, source, quick=...)``. A section that fails does not stop the others: its
traceback goes to ``<key>_error.txt``, the failure is listed in ``demo_timings.json`` (with every
section's seconds) and the report is still written. Bad input (:class:`GalmoError`) stops the demo.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from galmo.core.errors import GalmoError

# Pipelines that contribute a section to the demo report, in report order.
PIPELINES = [
    ("cluster", "galmo.methods.unsupervised.run"),
    ("supervised", "galmo.methods.supervised.run"),
    ("embeddings", "galmo.methods.embeddings.run"),
    ("generative", "galmo.methods.generative.run"),
]
SECTIONS = ("overview",) + tuple(key for key, _ in PIPELINES)
TITLE = "galmo demo — simulated Galaxy10-like sample"


def run_demo(out="runs/demo", data=None, only=None, quick: bool = False, log: Callable = print) -> dict:
    """Run the demo into the run folder ``out`` on ``data`` (a source path; None: the embedded
    default sample); ``only``: these keys of :data:`SECTIONS`; ``quick``: tiny settings.

    Returns {"report": report.html path, "seconds": {key: s}, "failed": [keys]}.
    """
    from galmo.core.io import write_json
    from galmo.report import build_report
    from galmo.sources import open_source

    unknown = sorted(set(only or ()) - set(SECTIONS))
    if unknown:
        raise GalmoError(f"unknown demo section(s) {', '.join(unknown)} (one of {', '.join(SECTIONS)})")
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if data is None:
        from galmo.simulate import default_sample

        data = default_sample()
    src = open_source(data)
    timings, failures = {}, []
    for key, fn in _steps(run_dir, src, quick, only or SECTIONS):
        if fn is None:
            log(f"[demo] {key}: not available in this version, skipped")
            continue
        timings[key], ok = _run_step(key, fn, run_dir, log)
        if not ok:
            failures.append(key)
    write_json(run_dir / "demo_timings.json", {"data": str(data), "seconds": timings, "failed": failures})
    report = build_report(run_dir, title=TITLE)
    return {"report": report, "seconds": timings, "failed": failures}


def _steps(run_dir: Path, src, quick: bool, wanted) -> list[tuple[str, Callable | None]]:
    """(key, callable or None when not available) of the wanted sections, in report order (only
    their modules are imported)."""
    from galmo.methods.overview import overview_section

    steps = [("overview", lambda: overview_section(run_dir, src, quick=quick))] if "overview" in wanted else []
    for key, module in PIPELINES:
        if key not in wanted:
            continue
        fn = _demo_section(module)
        steps.append((key, None if fn is None else (lambda fn=fn: fn(run_dir, src, quick=quick))))
    return steps


def _demo_section(module: str) -> Callable | None:
    """The module's ``demo_section``; None when the module (or the function) does not exist."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise
    return getattr(mod, "demo_section", None)


def _run_step(key: str, fn: Callable, run_dir: Path, log: Callable) -> tuple[float, bool]:
    """Run one section: (seconds, succeeded). Anything but bad input is caught and written to
    ``<key>_error.txt`` so that the other sections still run."""
    t0 = time.perf_counter()
    log(f"[demo] {key} ...", flush=True)
    ok = True
    try:
        fn()
    except GalmoError:
        raise
    except Exception as e:  # keep the other sections; report the failure loudly
        ok = False
        err = run_dir / f"{key}_error.txt"
        err.write_text(traceback.format_exc())
        log(f"[demo] {key} FAILED: {type(e).__name__}: {e} (traceback in {err})")
    seconds = round(time.perf_counter() - t0, 1)
    log(f"[demo] {key} done in {seconds} s", flush=True)
    return seconds, ok
