"""Foundation verbs: ``simulate``, ``info``, ``show`` and ``demo`` (thin wrappers over the library)."""

from __future__ import annotations

import importlib
import time
import traceback
from pathlib import Path

from galmo.core.errors import GalmoError

# Pipelines that contribute a section to the demo report, in report order.
DEMO_PIPELINES = [
    ("cluster", "galmo.methods.unsupervised.run"),
    ("supervised", "galmo.methods.supervised.run"),
    ("embeddings", "galmo.methods.embeddings.run"),
]


def register(sub) -> None:
    from galmo.cli import add_common

    p = sub.add_parser("simulate", help="render Galaxy10-like galaxies with GalSim into a Galaxy10-schema HDF5")
    p.add_argument("--n", type=int, required=True, help="number of galaxies")
    p.add_argument("--size", type=int, default=64, help="cutout size in pixels (default 64); the field of view follows the galaxy "
                   "size as in Galaxy10 DECaLS, so the pixel scale is per galaxy (dataset pxscale)")
    p.add_argument("--out", required=True, help="output .h5 (a .truth.parquet is written beside it)")
    p.add_argument("--class-weights", default=None,
                   help="class balance: omit for balanced, 'rare:Merging=0.02', or 'Merging=2,Round Smooth=1'")
    p.add_argument("--anomalies", type=float, default=0.0, help="fraction with injected anomalies (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--no-noiseless", action="store_true", help="do not store the noiseless images")
    add_common(p, seed=True)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("info", help="summarise a source: count, shape, bands, classes, NaN fraction")
    p.add_argument("path")
    add_common(p, on_error=True)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("show", help="write a labelled montage of a source")
    p.add_argument("path")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--n", type=int, default=32, help="how many galaxies (default 32)")
    p.add_argument("--ids", nargs="*", default=None, help="show these ids instead")
    p.add_argument("--ncols", type=int, default=8)
    add_common(p, on_error=True, seed=True)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("demo", help="run every capability on the embedded default sample and write a report")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--data", default=None, help="use this source instead of the default simulated sample")
    p.add_argument("--only", nargs="*", default=None, help=f"only these sections: overview "
                   f"{' '.join(k for k, _ in DEMO_PIPELINES)}")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds, for smoke tests)")
    p.set_defaults(func=cmd_demo)


def _parse_class_weights(s: str | None):
    if not s or s.startswith("rare:"):
        return s
    out = {}
    for part in s.split(","):
        if "=" not in part:
            raise GalmoError(f"--class-weights: expected NAME=WEIGHT pairs, got {part!r}")
        k, v = part.split("=", 1)
        out[int(k) if k.strip().isdigit() else k.strip()] = float(v)
    return out


def cmd_simulate(args) -> int:
    from galmo.simulate import simulate, truth_path

    if args.n <= 0:
        raise GalmoError(f"--n must be positive, got {args.n}")
    out = simulate(n=args.n, size=args.size, seed=args.seed, out=args.out,
                   class_weights=_parse_class_weights(args.class_weights), anomalies=args.anomalies,
                   noiseless=not args.no_noiseless, workers=args.workers, progress=True)
    print(f"wrote {out} and {truth_path(out)}")
    return 0


def cmd_info(args) -> int:
    from galmo.sources import open_source
    from galmo.sources.summary import summarise, summary_text

    src = open_source(args.path, on_error=args.on_error)
    print(summary_text(summarise(src)))
    return 0


def cmd_show(args) -> int:
    import numpy as np

    from galmo.plots import montage
    from galmo.sources import open_source

    src = open_source(args.path, on_error=args.on_error)
    cat = src.catalog
    if args.ids:
        pos = np.flatnonzero(cat["id"].astype(str).isin(args.ids).to_numpy())
        missing = set(args.ids) - set(cat["id"].astype(str).iloc[pos])
        if missing:
            raise GalmoError(f"ids not in the source: {', '.join(sorted(missing)[:10])}", path=args.path)
    else:
        rng = np.random.default_rng(args.seed)
        pos = np.sort(rng.choice(len(cat), size=min(args.n, len(cat)), replace=False))
    images = src.read(pos, kind="image")
    titles = [_title(cat.iloc[i]) for i in pos]
    out = montage(list(images), args.out, titles=titles, ncols=args.ncols)
    print(f"wrote {out} ({len(pos)} galaxies)")
    return 0


def _title(row) -> str:
    name = row.get("label_name") if hasattr(row, "get") else None
    ident = str(row["id"])
    return f"{ident}\n{name}" if isinstance(name, str) and name else ident


def cmd_demo(args) -> int:
    from galmo.methods.overview import overview_section
    from galmo.report import build_report
    from galmo.sources import open_source

    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.data:
        data = Path(args.data)
    else:
        from galmo.simulate import default_sample

        data = default_sample()
    src = open_source(data)
    wanted = set(args.only) if args.only else None
    timings, failures = {}, []
    steps = [("overview", lambda: overview_section(run_dir, src, quick=args.quick))]
    for key, module in DEMO_PIPELINES:
        steps.append((key, _demo_step(module, run_dir, src, args.quick)))
    for key, fn in steps:
        if wanted is not None and key not in wanted:
            continue
        if fn is None:
            print(f"[demo] {key}: not available in this version, skipped")
            continue
        t0 = time.perf_counter()
        print(f"[demo] {key} ...", flush=True)
        try:
            fn()
        except GalmoError:
            raise
        except Exception as e:  # keep the other sections; report the failure loudly
            failures.append(key)
            (run_dir / f"{key}_error.txt").write_text(traceback.format_exc())
            print(f"[demo] {key} FAILED: {type(e).__name__}: {e} (traceback in {run_dir / (key + '_error.txt')})")
        timings[key] = round(time.perf_counter() - t0, 1)
        print(f"[demo] {key} done in {timings[key]} s", flush=True)
    from galmo.core.io import write_json

    write_json(run_dir / "demo_timings.json", {"data": str(data), "seconds": timings, "failed": failures})
    report = build_report(run_dir, title="galmo demo — simulated Galaxy10-like sample")
    print(f"report: {report}")
    return 1 if failures else 0


def _demo_step(module: str, run_dir: Path, src, quick: bool):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise
    fn = getattr(mod, "demo_section", None)
    return None if fn is None else (lambda: fn(run_dir, src, quick=quick))
