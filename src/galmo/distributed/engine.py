"""``--engine ray``: one verb over the shards of a source, on a Ray cluster, resumable.

:func:`run_sharded` plans the run (:func:`prepare`: the shards, which are already written, the run's
record ``<out>/_galmo.json``), connects to Ray, puts the shards still to do in a Ray Dataset (one block
each) and maps them through an actor pool (``map_batches`` with a callable class of
:mod:`galmo.distributed.workers`, which loads the model once per actor; ``num_gpus=1`` per actor on a
cluster with GPUs). Each actor writes ``<out>/<shard>.parquet`` under a temporary name renamed at the
end, so a killed run leaves only complete shards and a rerun skips them: it loses at most the shards
in flight and never writes an id twice. ``galmo cluster`` writes its shards in ``<out>/cluster_catalog/``
after fitting its pipeline once on the driver (the worker's ``before_run``). Ray is imported here only,
inside the functions.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace

from galmo.core.errors import GalmoError
from galmo.distributed.config import INSTALL_HINT, EngineConfig
from galmo.distributed.shards import Shard, list_shards, written

RUN_FILE = "_galmo.json"  # the run's record ('_': Parquet dataset readers skip it)
# settings that change how a shard is computed, not what is in it
IGNORED = ("out", "batch_size", "device", "progress", "on_error")


def import_ray():
    """The ``ray`` module; GalmoError saying how to install it when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise GalmoError(f"--engine ray needs Ray ({e}); install it with: {INSTALL_HINT}") from None
    return ray


def connect(ray, address: str = "auto") -> None:
    """Join the Ray cluster at ``address`` (auto: the running one, else a new local one); nothing when
    this process already joined one (a test's or a notebook's ``ray.init``)."""
    if not ray.is_initialized():
        try:
            ray.init(address=None if address in (None, "auto") else address, include_dashboard=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise GalmoError(f"cannot join a Ray cluster there ({e}); start one with `ray start --head` or "
                             "use --address auto", path=f"--address {address}") from None
    ray.data.DataContext.get_current().enable_progress_bars = False  # one line per shard instead (--progress)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its warnings (e.g. no resources) still show
    try:
        from ray.util.debug import log_once

        log_once("ray_data_progress_manager_disabled")  # not the warning that says we disabled them
    except ImportError:
        pass


def run_sharded(verb: str, cfg, engine: EngineConfig, log=print) -> dict:
    """Run ``verb`` ("embed", "predict" or "cluster", its config ``cfg``) over the shards of ``cfg.data``
    into the folder ``cfg.out`` (cluster: its ``cluster_catalog/``, after the fit on the driver);
    returns the summary (counts, rejected.csv, images/s). A shard that fails raises GalmoError naming
    it, or with ``cfg.on_error == 'skip'`` is listed in rejected.csv."""
    from galmo.distributed.workers import WORKERS

    ray = import_ray()
    cfg, shards, todo, rejected = prepare(verb, cfg, engine, log)
    t0, done = time.perf_counter(), {"n": 0, "shard_seconds": 0.0, "failed": []}
    if todo:
        WORKERS[verb].before_run(cfg, shards, log)
        connect(ray, engine.address)
        t0 = time.perf_counter()  # images/s: from the actors' start to the last shard
        done = collect(execute(ray, verb, cfg, engine, todo), len(todo), cfg, log)
    seconds, n, out = time.perf_counter() - t0, done["n"], shard_folder(verb, cfg)
    rejected_csv = finish(out, shards, rejected + done["failed"], log)
    return {"out": str(out), "shards": len(shards), "written": len(todo) - len(done["failed"]),
            "finished_before": len(shards) - len(todo), "failed": [ref for ref, _ in done["failed"]], "n": n,
            "seconds": seconds, "images_per_s": n / seconds if n and seconds > 0 else None,
            "shard_seconds": done["shard_seconds"], "rejected": rejected_csv}


def collect(results, total: int, cfg, log=print) -> dict:
    """Go through the actors' result rows as they come: a failed shard raises GalmoError naming it
    (``--on-error raise``) or is kept as (ref, reason); one line per shard with ``cfg.progress``."""
    done = {"n": 0, "shard_seconds": 0.0, "failed": []}
    for k, r in enumerate(results, 1):
        if r["fatal"]:  # the model, not the shard: the message as the local path gives it
            raise GalmoError(r["error"])
        reason = r["error"].removeprefix(r["ref"] + ": ")
        if r["error"] and cfg.on_error != "skip":
            raise GalmoError(reason, path=r["ref"])
        if r["error"]:
            done["failed"].append((r["ref"], reason))
        done["n"] += int(r["n"])
        done["shard_seconds"] += float(r["seconds"])
        if cfg.progress:
            log(f"[{k}/{total}] {r['name']}: " + (f"skipped ({r['error']})" if r["error"] else
                                                  f"{r['n']} galaxies in {r['seconds']:.1f} s"))
    return done


def execute(ray, verb: str, cfg, engine: EngineConfig, todo: list[Shard]):
    """Yield one result row per shard of ``todo`` as the actors finish them."""
    from ray.data import ActorPoolStrategy

    from galmo.distributed.workers import WORKERS

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if cfg.device != "cpu" else 0
    size = max(1, min(engine.concurrency or gpus or int(resources.get("CPU", 1)), len(todo)))
    ds = ray.data.from_items([s.to_row() for s in todo], override_num_blocks=len(todo))
    results = ds.map_batches(WORKERS[verb], fn_constructor_kwargs={"cfg": cfg.to_dict(),
                                                                   "out": str(shard_folder(verb, cfg))},
                             batch_size=1, compute=ActorPoolStrategy(size=size), num_gpus=1 if gpus else 0)
    yield from results.iter_rows()


def prepare(verb: str, cfg, engine: EngineConfig, log=print):
    """(the config with absolute paths, every shard, the shards still to write, the items skipped on
    opening the source). Checks that ``cfg.out`` holds nothing of another run, records this one
    there and removes the temporary files of a killed run."""
    from galmo.core.io import check_output

    if not cfg.data or not cfg.out:
        raise GalmoError(f"{verb} --engine ray: give --data and --out")
    cfg = _absolute(cfg)
    check_output(cfg.out, "dir", log)
    out = shard_folder(verb, cfg)
    out.mkdir(parents=True, exist_ok=True)
    shards, rejected = list_shards(cfg.data, engine.shard_size, cfg.on_error)
    _check_record(out, verb, cfg, engine, shards)
    for tmp in sorted(out.glob(".*.tmp.parquet")) + sorted(out.glob(".*.tmp.csv")):
        tmp.unlink(missing_ok=True)  # a temporary output of a killed run (never a finished shard)
    todo = [s for s in shards if not s.output(out).is_file()]
    if len(todo) < len(shards):
        log(f"{len(shards) - len(todo)} of {len(shards)} shards already in {out}: skipped")
    return cfg, shards, todo, rejected


def shard_folder(verb: str, cfg) -> Path:
    """Where the output shards of ``verb`` go: ``cfg.out``, or its sub-folder of the verb's worker."""
    from galmo.distributed.workers import WORKERS

    return Path(cfg.out) / WORKERS[verb].subfolder


def _absolute(cfg):
    """``cfg`` with its data, out, run, encoder and weights paths absolute (the actors may start elsewhere)."""
    changes = {k: str(Path(getattr(cfg, k)).expanduser().resolve()) for k in ("data", "out")}
    if getattr(cfg, "run", None):
        changes["run"] = tuple(str(Path(r).expanduser().resolve()) for r in cfg.run)
    for k in ("encoder", "weights"):
        if getattr(cfg, k, None) and Path(getattr(cfg, k)).exists():
            changes[k] = str(Path(getattr(cfg, k)).resolve())
    return cfg.replace(**changes)


def _check_record(out: Path, verb: str, cfg, engine: EngineConfig, shards: list[Shard]) -> None:
    """Refuse an ``out`` written by another run (other settings, source or shards); record this one."""
    from galmo.core.config import library_versions
    from galmo.core.io import read_json, write_json

    settings = {k: v for k, v in cfg.to_dict().items() if k not in IGNORED}
    rows = any(s.start >= 0 for s in shards)  # shards of rows: --shard-size decides which ids each holds
    record = {"method": verb, "engine": "ray", "config": settings, "shard_size": engine.shard_size if rows else None}
    path = out / RUN_FILE
    if path.is_file():
        old = read_json(path)
        diff = [k for k in ("method", "shard_size") if old.get(k) != record[k]]
        diff += [k for k in sorted(set(settings) | set(old.get("config", {})))
                 if old.get("config", {}).get(k) != settings.get(k)]
        if diff:
            raise GalmoError(f"holds the shards of another run ({', '.join(diff)} differ: see {RUN_FILE}); give "
                             "another --out, or remove it to start again", path=out)
    names = {s.name for s in shards}
    strays = [p.name for p in written(out) if p.stem not in names]
    if strays:
        raise GalmoError(f"holds {len(strays)} shards that are not shards of --data (e.g. {strays[0]}); give "
                         "another --out", path=out)
    write_json(path, {**record, "versions": library_versions()})


def finish(out: Path, shards: list[Shard], rejected: list, log=print) -> Path | None:
    """``<out>/rejected.csv``: the shards that failed, the items skipped on opening the source and
    every written shard's own list (``<shard>.rejected.csv``), each item once; the one rule of
    :func:`galmo.sources.base.report_rejected` (removed when nothing was skipped)."""
    import pandas as pd

    from galmo.sources.base import rejected_path, report_rejected

    items = dict(rejected)
    for s in shards:
        side = rejected_path(s.output(out), "file")
        if s.output(out).is_file() and side.is_file():
            for ref, reason in pd.read_csv(side, dtype=str, keep_default_na=False).itertuples(index=False):
                items.setdefault(ref, reason)
    return report_rejected(SimpleNamespace(rejected=list(items.items())), out, "dir", log)
