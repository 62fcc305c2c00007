"""``galmo run CONFIG.json`` (re-run any run from its saved config) and ``galmo report RUN``."""

from __future__ import annotations

import importlib

from galmo.core.errors import GalmoError

# method name in config.json → "module:function" taking (Config, out) and running it.
RUNNERS = {
    "cluster": "galmo.cli.cluster:run_config",
    "train": "galmo.cli.supervised:run_config",
    "pretrain": "galmo.cli.embeddings:run_config",
    "study-data-efficiency": "galmo.cli.supervised:run_study_config",
    "train-generator": "galmo.cli.generative:run_config",
}


def register(sub) -> None:
    p = sub.add_parser("run", help="re-run a run from its config.json (same settings, same seed)")
    p.add_argument("config", help="a config.json written by a galmo run, or its run folder")
    p.add_argument("--out", default=None, help="run folder for the new run (default: the one in the config)")
    p.set_defaults(func=cmd_run, out_kind="dir")

    p = sub.add_parser("report", help="render a run folder's report.html again from its files")
    p.add_argument("run", help="a run folder")
    p.set_defaults(func=cmd_report)


def cmd_run(args) -> int:
    from pathlib import Path

    from galmo.core.config import CONFIG_FILE, read_config_file

    path = Path(args.config)
    if path.is_dir():
        path = path / CONFIG_FILE
    d = read_config_file(path)
    method = d.get("method")
    if method not in RUNNERS:
        raise GalmoError(f"cannot re-run a {method!r} config (runnable: {', '.join(RUNNERS)})", path=path)
    saved_out = (d.get("config") or {}).get("out")
    if args.out is None and isinstance(saved_out, str):  # (a given --out was checked by galmo.cli.main)
        from galmo.core.io import check_output

        check_output(saved_out, "dir")
    mod, fn = RUNNERS[method].split(":")
    return getattr(importlib.import_module(mod), fn)(path, args.out)


def cmd_report(args) -> int:
    from galmo.report import rebuild

    print(f"report: {rebuild(args.run)}")
    return 0
