"""``galmo cluster --engine ray``: the pipeline fitted once on the driver, every galaxy assigned by the actors.

The driver draws the fit sample as :func:`galmo.methods.unsupervised.run.run_cluster` does on one
source — the shards put end to end, in name order (:func:`sample_positions`) — reading only the
sample's images (``read_ok``), fits the Pipeline on it with the same calls (:func:`fit_on_sample`)
and saves it in the run folder without pickle (:mod:`galmo.distributed.fitted`: ``fitted.npz`` +
``fitted.json``, with where each sampled galaxy is and its coordinates). Each actor loads it once
(:class:`galmo.distributed.workers.ClusterWorker`) and writes ``<run>/cluster_catalog/<shard>.parquet``
(:func:`write_shard`): the sampled galaxies keep the groups of the fit, the others are streamed
through the fitted steps and get the members' votes (:func:`assign_rest`), as locally.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from galmo.core.errors import GalmoError
from galmo.distributed.fitted import STATE_FILES, save_fitted, saved_extra
from galmo.distributed.shards import Shard, open_shard

NOT_COMPARED = ("out", "progress")  # settings a rerun may change and still reuse the fitted pipeline


def check_settings(cfg) -> None:
    """Refuse what the sharded run cannot give as the local path gives it."""
    cfg.validate()
    if cfg.denoise:
        raise GalmoError("--denoise is not available with --engine ray yet (the denoiser's network is not saved "
                         "with the fitted pipeline); run without it, or with --engine local")
    if not cfg.invariant and not cfg.pca:
        raise GalmoError("--no-invariant --no-pca shows the features on a PCA of every galaxy, which no shard "
                         "sees: not with --engine ray (keep --pca or the invariant projection)")
    if cfg.weights is None:
        raise GalmoError("--weights none gives every actor its own random encoder: with --engine ray give "
                         "--weights offline or a weights file")


def _shard_sources(shards: list[Shard], on_error: str):
    """Each shard's source in turn (a shard that is a file is closed once the caller is done with it)."""
    cache: dict = {}
    for s in shards:
        src = open_shard(s, on_error, cache)
        yield src
        if s.whole:
            src.close()


def read_sample(shards: list[Shard], cfg) -> tuple[np.ndarray, np.ndarray]:
    """((shard index, row in the shard) of every galaxy of the fit sample, their images brought to the
    pipeline's input): the galaxies ``run_cluster`` fits on, of the shards put end to end."""
    from galmo.methods.unsupervised.run import input_resampler, sample_positions

    sizes = [len(src) for src in _shard_sources(shards, cfg.on_error)]
    starts = np.cumsum([0, *sizes])
    chosen = sample_positions(int(starts[-1]), cfg)
    where, images = [], []
    for i, src in enumerate(_shard_sources(shards, cfg.on_error)):
        local = (np.arange(sizes[i]) if chosen is None else
                 chosen[(chosen >= starts[i]) & (chosen < starts[i + 1])] - starts[i])
        src, fit = input_resampler(src, cfg)
        for a in range(0, len(local), cfg.batch_size):
            pos, X = src.read_ok(local[a:a + cfg.batch_size])
            where.append(np.c_[np.full(len(pos), i), pos].astype(np.int64))
            images.append(fit(np.asarray(X, dtype=np.float32)))
    if not sum(len(w) for w in where):
        raise GalmoError("no readable images in the source", path=cfg.data)
    return np.concatenate(where), np.concatenate(images)


def _settings(cfg) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in NOT_COMPARED}


def fit_on_driver(cfg, shards: list[Shard], log=print) -> None:
    """Fit the pipeline on the sample of ``shards`` and save it in the run folder ``cfg.out`` (with its
    config.json); nothing when a rerun finds it fitted there with the same settings."""
    from galmo.core.io import read_json
    from galmo.methods.unsupervised.run import fit_on_sample
    from galmo.nn.infer import set_backend

    check_settings(cfg)
    run_dir = Path(cfg.out)
    if (run_dir / STATE_FILES[1]).is_file() and (run_dir / "config.json").is_file():
        if _settings(cfg.from_dict(read_json(run_dir / "config.json")["config"])) == _settings(cfg):
            _check_same_shards(run_dir, shards)
            log(f"the fitted pipeline in {run_dir}: reused")
            return
    set_backend(cfg.backend)
    cfg.save(run_dir, source=cfg.data, engine="ray", encoding={**cfg.encoding(), "size": cfg.encoder_size()})
    t0, timings = time.perf_counter(), {}
    where, X = read_sample(shards, cfg)
    timings["read"] = time.perf_counter() - t0
    pipe, P, digest = fit_on_sample(X, cfg, run_dir, timings, where=cfg.data)
    save_fitted(run_dir, pipe, {"shards": [s.name for s in shards], "fit_shard": where[:, 0], "fit_row": where[:, 1],
                                "fit_coords": np.asarray(P, dtype=np.float32), "fit_images_sha1": digest,
                                "timings_s": {k: round(v, 2) for k, v in timings.items()}})
    log(f"fitted on {len(X)} galaxies of {len(shards)} shards in {time.perf_counter() - t0:.1f} s; "
        f"saved in {run_dir / STATE_FILES[1]}")


def _check_same_shards(run_dir: Path, shards: list[Shard]) -> None:
    """Refuse to reuse a pipeline fitted on a sample of other shards (shards added or removed since)."""
    before = saved_extra(run_dir, "shards")
    if before != [s.name for s in shards]:
        raise GalmoError(f"the pipeline here was fitted on a sample of {len(before or [])} other shards than the "
                         f"{len(shards)} of --data now; give another --out", path=run_dir)


def write_shard(pipe, fit: dict, cfg, src, path: Path, log) -> int:
    """Write the catalog rows of the shard ``path.stem`` (its source ``src``) at ``path``: those of
    :func:`galmo.methods.unsupervised.run.catalog_frame`, in the shard's order; returns their count."""
    from galmo.core.catalog import write_catalog
    from galmo.methods.unsupervised.run import assign_rest, catalog_frame, groups_of, input_resampler
    from galmo.sources.base import report_rejected

    pick = np.flatnonzero(fit["fit_shard"] == fit["shards"].index(path.stem))
    rows = fit["fit_row"][pick]
    framed, framing = input_resampler(src, cfg)
    rest = assign_rest(pipe, framed, rows, cfg, framing) if len(rows) < len(src) else None
    res = groups_of(pipe, rows, fit["fit_coords"][pick], rest, pick)
    frame = catalog_frame(res, src.catalog.iloc[res["rows"]].reset_index(drop=True), cfg)
    report_rejected(src, path, "file", log)  # first: the list of a complete output is never missing
    write_catalog(frame, path)
    return len(frame)
