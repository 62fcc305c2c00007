"""``galmo cluster``: the unsupervised method's verb. Flags come from
:class:`galmo.methods.unsupervised.config.ClusterConfig`; the verb makes the config and runs it."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    from galmo.cli import add_verb
    from galmo.methods.unsupervised.config import ClusterConfig

    from galmo.cli.engine import add_engine

    p = add_verb(sub, "cluster", "unsupervised morphology groups (eUML voting clustering)", ClusterConfig,
                 cmd_cluster, out_kind="dir", required=("data", "out"))
    add_engine(p, "dir")  # --engine ray: the catalog as Parquet shards in the run folder's cluster_catalog/


def cmd_cluster(args) -> int:
    from galmo.methods.unsupervised.config import ClusterConfig

    if args.engine == "ray":
        from galmo.cli.engine import run_on_ray

        return run_on_ray("cluster", ClusterConfig.from_args(args), args)
    return _run(ClusterConfig.from_args(args))


def run_config(path, out=None) -> int:
    """``galmo run CONFIG.json [--out DIR]``: the saved cluster run again (same settings, same seed)."""
    from galmo.methods.unsupervised.config import ClusterConfig

    cfg = ClusterConfig.load(path)
    return _run(cfg.replace(out=str(out)) if out else cfg)


def _run(cfg) -> int:
    from galmo.methods.unsupervised.run import run_cluster

    metrics = run_cluster(cfg.validate())
    print(f"wrote {Path(cfg.out) / 'cluster_catalog.parquet'}, metrics.json and report.html in {cfg.out}")
    return 0 if metrics else 1
