"""``galmo serve`` (the explorer of run folders, with the expert queue) and ``galmo finetune`` (retrain a
run with its expert labels). Flags come from :mod:`galmo.web.config`; fastapi, uvicorn and torch are
imported only when a verb runs."""

from __future__ import annotations

import warnings

from galmo.web.config import LOOPBACK, FinetuneConfig, ServeConfig


def register(sub) -> None:
    from galmo.cli import add_verb

    p = add_verb(sub, "serve", "the web explorer of run folders: groups, galaxies, neighbours, outliers and the "
                 "expert-labelling queue", ServeConfig, cmd_serve)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders to explore (a demo folder: its sub-runs)")
    p = add_verb(sub, "finetune", "retrain a run with the expert labels and measure the change on its test split",
                 FinetuneConfig, cmd_finetune, out_kind="dir", required=("expert_labels", "out"))
    p.add_argument("run", metavar="RUN", help="the run folder made by `galmo train` to fine-tune")


def cmd_serve(args) -> int:
    cfg = ServeConfig.from_args(args, runs=tuple(args.runs))
    try:
        import uvicorn

        from galmo.web.app import create_app
    except ImportError as e:
        from galmo.core.errors import GalmoError

        raise GalmoError(f"galmo serve needs the web extra ({e.name} is missing): pip install 'galmo[web]'") from None
    if cfg.host not in LOOPBACK:
        warnings.warn(f"--host {cfg.host}: the explorer and its labelling are open to every machine that can reach "
                      "this address (no login)", stacklevel=1)
    app = create_app(cfg.runs, data=cfg.data, who=cfg.who, thumb_cache=cfg.thumb_cache)
    print(f"galmo explorer: {len(app.state.explorer.runs)} runs on http://{cfg.host}:{cfg.port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return 0


def cmd_finetune(args) -> int:
    from galmo.web.finetune import finetune

    cfg = FinetuneConfig.from_args(args, run=args.run)
    res = finetune(cfg)
    print(f"fine-tuned run: {cfg.out} (test top-1 {res['before']['top1']:.4f} → {res['after']['top1']:.4f}; "
          f"{cfg.out}/finetune.json)")
    return 0
