"""The settings of the engine a verb runs on (no Ray, no torch: the CLI builds its flags from them)."""

from __future__ import annotations

from dataclasses import dataclass

from galmo.core.config import Config, option

ENGINES = ("local", "ray")
INSTALL_HINT = 'pip install "galmo[ray]"'


@dataclass
class EngineConfig(Config):
    """``--engine``, ``--address``, ``--concurrency``, ``--shard-size``: the same flags, with the same
    help, on every verb that can run on Ray (embed, predict, cluster)."""

    method = "engine"
    engine: str = option("local", "where the model runs: local (this process) or ray (a Ray cluster, one actor "
                                  "pool over the shards of --data, writing one Parquet shard per input shard — "
                                  "embed, predict: --out is then a folder of them; cluster: the run folder's "
                                  "cluster_catalog/, after the fit on a sample here — and a rerun skips the "
                                  f"finished ones; needs {INSTALL_HINT})", choices=ENGINES)
    address: str = option("auto", "the Ray cluster of --engine ray: auto (the running one, as `ray start` left it, "
                                  "else a new one on this machine) or HOST:PORT of its head node",
                          metavar="auto|HOST:PORT")
    concurrency: int | None = option(None, "actors of --engine ray, each with its own copy of the model (none: "
                                           "one per GPU of the cluster, else one per CPU)", metavar="N")
    shard_size: int = option(10000, "galaxies per shard with --engine ray when --data is one source rather than "
                                    "a folder of shards (HDF5 files, catalog files or FITS sub-folders); a "
                                    "'shard' column in its catalog decides instead", metavar="N")
