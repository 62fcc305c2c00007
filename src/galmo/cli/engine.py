"""``--engine local|ray`` (+ ``--address``, ``--concurrency``, ``--shard-size``) for the verbs that can run
on a Ray cluster (embed, predict, cluster): the flags, written once (:class:`galmo.distributed.config.EngineConfig`),
and the one library call of ``--engine ray`` (:func:`galmo.distributed.engine.run_sharded`)."""

from __future__ import annotations

import functools

from galmo.distributed.config import EngineConfig


def out_kind(local_kind: str, args) -> str:
    """What ``--out`` names: ``local_kind`` on this machine, a folder (of Parquet shards) with ``--engine ray``."""
    return "dir" if getattr(args, "engine", "local") == "ray" else local_kind


def add_engine(p, local_kind: str = "file") -> None:
    """Add the engine's flags to the verb ``p``; its ``--out`` is checked as :func:`out_kind` says."""
    from galmo.core.config import add_options

    add_options(p, EngineConfig)
    p.set_defaults(out_kind=functools.partial(out_kind, local_kind))


def run_on_ray(verb: str, cfg, args) -> int:
    """``galmo VERB --engine ray``: the run over the shards of ``cfg.data`` into the folder ``cfg.out``."""
    from galmo.core.errors import GalmoError
    from galmo.distributed.engine import run_sharded

    if getattr(args, "triage", None) is not None or getattr(args, "threshold", None) is not None:
        raise GalmoError("--triage and --threshold rank the whole catalog: not with --engine ray (predict the "
                         "shards, then rank their confidence column)")
    s = run_sharded(verb, cfg, EngineConfig.from_args(args))
    speed = f" ({s['images_per_s']:.0f} images/s)" if s["images_per_s"] else ""
    print(f"wrote {s['written']} of {s['shards']} shards in {s['out']}: {s['n']} galaxies{speed}"
          + (f"; {s['finished_before']} were already there" if s["finished_before"] else "")
          + (f"; {len(s['failed'])} failed (see {s['rejected']})" if s["failed"] else ""))
    return 0
