"""The actors of the Ray engine: callable classes for ``Dataset.map_batches`` that load the model once
per actor and turn each shard of a batch into its output Parquet shard.

Each one calls, on one shard, the library functions that ``--engine local`` calls on the whole source
(:func:`galmo.methods.embeddings.run.run_embed`; :func:`galmo.methods.supervised.run.predict` +
:func:`galmo.core.catalog.write_catalog`; for cluster, the pipeline fitted on the driver and the
functions of :mod:`galmo.methods.unsupervised.run` that assign galaxies and make the catalog's rows), so
the rows and columns are the same. No Ray import here:
Ray instantiates the classes; they also run in a plain process (tests, ``--engine local`` loops).
"""

from __future__ import annotations

import time
from pathlib import Path

from galmo.core.errors import GalmoError
from galmo.distributed.shards import Shard, open_shard
from galmo.methods.embeddings.config import EmbedConfig
from galmo.methods.supervised.config import PredictConfig
from galmo.methods.unsupervised.config import ClusterConfig

RESULT_KEYS = ("name", "ref", "n", "seconds", "error", "fatal")


def _quiet(*_args, **_kw) -> None:
    """The actors' log: the driver reports the shards (and writes rejected.csv) itself."""


def actor_threads() -> int:
    """Torch threads of this actor: the CPUs Ray gave it (1 outside Ray or when it gave none)."""
    from galmo.nn.device import set_threads

    n = 1
    try:
        import ray

        if ray.is_initialized():
            n = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except ImportError:
        pass
    return set_threads(n)


class ShardWorker:
    """Base of the actors: ``__call__(batch)`` (a batch of :class:`Shard` rows) writes each shard's
    output and returns one result row per shard (``error``: the message of a shard that failed;
    ``fatal``: the model could not be loaded, which no shard can be skipped for)."""

    config_class: type  # the verb's config (a galmo.core.config.Config)
    subfolder = ""  # where in --out the shards go ("": --out itself)

    @staticmethod
    def before_run(cfg, shards: list[Shard], log=print) -> None:
        """What the driver does once before the actors start (the shards still to write are ``shards``)."""

    def __init__(self, cfg: dict, out: str):
        from galmo.nn.infer import set_backend

        actor_threads()
        self.cfg = self.config_class.from_dict(cfg).replace(progress=False)
        self.out = Path(out)
        self._sources: dict = {}
        set_backend(self.cfg.backend)
        try:
            self.load()
            self.fatal = ""
        except GalmoError as e:  # said by the driver, as the local path says it (no actor traceback)
            self.fatal = str(e)

    def load(self) -> None:
        """Load the model (once per actor)."""

    def write(self, src, path: Path) -> int:
        """Write the output of one shard's source at ``path``; returns its row count."""
        raise NotImplementedError

    def __call__(self, batch: dict) -> dict:
        rows = [self.run_one(Shard.from_row(dict(zip(batch, values)))) for values in zip(*batch.values())]
        return {k: [r[k] for r in rows] for k in RESULT_KEYS}

    def run_one(self, shard: Shard) -> dict:
        t0 = time.perf_counter()
        if self.fatal:
            return {"name": shard.name, "ref": shard.ref, "n": 0, "seconds": 0.0, "error": self.fatal, "fatal": True}
        try:
            src = open_shard(shard, self.cfg.on_error, self._sources)
            try:
                n = self.write(src, shard.output(self.out))
            finally:
                if shard.whole:  # its own file(s): not kept open for the rest of the actor's life
                    src.close()
            error = ""
        except GalmoError as e:  # a corrupt or unreadable shard: reported by name, the others go on
            n, error = 0, str(e)
        return {"name": shard.name, "ref": shard.ref, "n": int(n), "seconds": time.perf_counter() - t0,
                "error": error, "fatal": False}


class EmbedWorker(ShardWorker):
    """``galmo embed --engine ray``: the encoder loaded once, :func:`run_embed` on each shard."""

    config_class = EmbedConfig

    def load(self) -> None:
        from galmo.methods.embeddings.encoders import load_encoder

        c = self.cfg
        self.encoder = load_encoder(c.encoder, device=c.device, size=c.image_size, weights=c.weights, tokens=c.tokens,
                                    dihedral_mean=c.dihedral_mean)

    def write(self, src, path: Path) -> int:
        from galmo.methods.embeddings.run import run_embed

        return run_embed(self.cfg.replace(out=str(path)), log=_quiet, source=src, encoder=self.encoder)["n"]


class PredictWorker(ShardWorker):
    """``galmo predict --engine ray``: the run(s) loaded once, :func:`predict` on each shard."""

    config_class = PredictConfig

    def load(self) -> None:
        from galmo.methods.supervised.run import load_runs

        self.models, _, self.sup = load_runs(list(self.cfg.run), self.cfg.device)

    def write(self, src, path: Path) -> int:
        from galmo.core.catalog import write_catalog
        from galmo.methods.supervised.run import predict
        from galmo.sources.base import report_rejected

        c = self.cfg
        framing = {k: getattr(c, k) for k in ("framing", "crop_frac") if hasattr(c, k)}  # as cmd_predict passes
        preds = predict(None, src, tta=c.tta, batch_size=c.batch_size, device=c.device, model=self.models,
                        sup=self.sup, **framing)
        report_rejected(src, path, "file", _quiet)  # first: the list of a complete output is never missing
        write_catalog(preds, path)
        return len(preds)


class ClusterWorker(ShardWorker):
    """``galmo cluster --engine ray``: the pipeline the driver fitted (:func:`fit_on_driver`) loaded once
    from the run folder, :func:`galmo.distributed.cluster.write_shard` on each shard."""

    config_class = ClusterConfig
    subfolder = "cluster_catalog"

    @staticmethod
    def before_run(cfg, shards: list[Shard], log=print) -> None:
        from galmo.distributed.cluster import fit_on_driver

        fit_on_driver(cfg, shards, log)

    def load(self) -> None:
        from galmo.distributed.fitted import load_fitted

        self.pipe, self.fit = load_fitted(self.cfg.out)

    def write(self, src, path: Path) -> int:
        from galmo.distributed.cluster import write_shard

        return write_shard(self.pipe, self.fit, self.cfg, src, path, _quiet)


WORKERS = {"embed": EmbedWorker, "predict": PredictWorker, "cluster": ClusterWorker}
