"""The simulator's driver: class/anomaly assignment, parallel rendering, the Galaxy10-schema HDF5 and
the truth Parquet table, and the cached default sample."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from galmo.core.errors import GalmoError
from galmo.core.io import atomic_path, cache_dir
from galmo.core.schema import ANSWER_COLUMNS, GALAXY10_CLASSES
from galmo.simulate.surveys import Survey, get_survey

RECIPE_VERSION = "1.5"
DEFAULT_N = 3000
DEFAULT_SIZE = 64
ANOMALY_TYPES = ("satellite_trail", "cosmic_rays", "ring", "lensed_arc")
GENERATOR = "galmo.simulate"


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------
def _class_index(key) -> int:
    if isinstance(key, (int, np.integer)) and 0 <= int(key) < len(GALAXY10_CLASSES):
        return int(key)
    if isinstance(key, str):
        k = key.strip()
        if k.isdigit() and int(k) < len(GALAXY10_CLASSES):
            return int(k)
        norm = {c.lower().replace("-", " ").replace("_", " "): i for i, c in enumerate(GALAXY10_CLASSES)}
        i = norm.get(k.lower().replace("-", " ").replace("_", " "))
        if i is not None:
            return i
    raise GalmoError(f"class_weights: unknown class {key!r}; use an index 0–9 or one of {GALAXY10_CLASSES}")


def weights_arg(class_weights):
    """``class_weights`` as :func:`simulate` records it: a ``"Merging=2,Round Smooth=1"`` string
    becomes the dict {class index or name: weight}; anything else is returned as it is."""
    if not isinstance(class_weights, str) or "=" not in class_weights \
            or class_weights.strip().lower().startswith("rare:"):
        return class_weights
    out = {}
    for part in class_weights.split(","):
        if "=" not in part:
            raise GalmoError(f"class_weights: expected NAME=WEIGHT pairs, got {part!r}")
        key, val = part.split("=", 1)
        try:
            out[int(key) if key.strip().isdigit() else key.strip()] = float(val)
        except ValueError:
            raise GalmoError(f"class_weights: {part!r} should be NAME=WEIGHT with a number") from None
    return out


def parse_class_weights(class_weights) -> np.ndarray:
    """Normalised class fractions (10,) from None (balanced), a dict {class index or name: weight}
    (classes not named get 0) or the same as a string ``"Merging=2,Round Smooth=1"``, or a string
    ``"rare:Merging=0.02[,Disturbed=0.05]"`` (the named classes at those fractions, the others
    sharing the rest equally)."""
    class_weights = weights_arg(class_weights)
    k = len(GALAXY10_CLASSES)
    if class_weights is None or (isinstance(class_weights, str) and class_weights.strip() in ("", "balanced")):
        return np.full(k, 1.0 / k)
    if isinstance(class_weights, dict):
        w = np.zeros(k)
        for key, val in class_weights.items():
            w[_class_index(key)] += float(val)
    elif isinstance(class_weights, str) and class_weights.strip().lower().startswith("rare:"):
        w = _parse_rare(class_weights.strip()[5:])
    else:
        raise GalmoError(f"class_weights: {class_weights!r} is not None, a dict or 'rare:<class>=<fraction>'")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise GalmoError(f"class_weights: {class_weights!r} must give non-negative weights, not all zero")
    return w / w.sum()


def _parse_rare(spec: str) -> np.ndarray:
    k = len(GALAXY10_CLASSES)
    fixed: dict[int, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, val = part.rpartition("=")
        try:
            frac = float(val)
        except ValueError:
            frac = math.nan
        if not sep or not (0 <= frac <= 1):
            raise GalmoError(f"class_weights: {part!r} should be <class>=<fraction in [0, 1]>, e.g. rare:Merging=0.02")
        fixed[_class_index(name)] = frac
    rest = 1.0 - sum(fixed.values())
    if rest < -1e-9 or (rest <= 1e-12 and len(fixed) < k and sum(fixed.values()) == 0):
        raise GalmoError(f"class_weights: the rare fractions in {spec!r} add up to more than 1")
    w = np.full(k, max(rest, 0.0) / max(k - len(fixed), 1))
    for i, f in fixed.items():
        w[i] = f
    return w


def assign_classes(n: int, fractions: np.ndarray, seed: int) -> np.ndarray:
    """Exactly round(n × fraction) galaxies per class (largest remainder), in a seeded random order."""
    raw = fractions * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    labels = np.repeat(np.arange(len(fractions)), counts)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed)]))).permutation(labels)


def assign_anomalies(n: int, fraction: float, seed: int) -> list[str]:
    """round(n × fraction) galaxies get an anomaly, the four types in turn, at seeded random indices."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 2**32 - 1])))
    k = int(round(n * fraction))
    out = [""] * n
    types = [ANOMALY_TYPES[j % len(ANOMALY_TYPES)] for j in rng.permutation(k)]
    for i, t in zip(rng.permutation(n)[:k], types):
        out[int(i)] = t
    return out


def _check(n, size, seed, anomalies, workers):
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise GalmoError(f"simulate: n must be a positive integer, got {n!r}")
    if not isinstance(size, (int, np.integer)) or not 16 <= size <= 1024:
        raise GalmoError(f"simulate: size must be an integer between 16 and 1024 pixels, got {size!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GalmoError(f"simulate: seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= float(anomalies) <= 1.0:
        raise GalmoError(f"simulate: anomalies is a fraction in [0, 1], got {anomalies!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise GalmoError(f"simulate: workers must be a positive integer or None, got {workers!r}")


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------
def plane_attribute(preset) -> str:
    """The file's ``bands`` attribute: the display planes, blue first ("grz" for DECaLS; a mixture's
    planes are the blue, green and red of each galaxy's own survey, named in its ``survey_bands``)."""
    if not isinstance(preset, Survey):
        return "blue,green,red"
    names = preset.plane_names()
    return "".join(names) if all(len(b) == 1 for b in names) else ",".join(names)


def truth_path(out: str | os.PathLike) -> Path:
    """``sims.h5`` → ``sims.truth.parquet`` (beside it)."""
    out = Path(out)
    return out.with_name(out.stem + ".truth.parquet")


def simulate(n: int, size: int = 64, seed: int = 0, out: str | os.PathLike = "sims.h5", class_weights=None,
             anomalies: float = 0.0, noiseless: bool = True, workers: int | None = None,
             progress: bool = True, survey: str = "decals", vote_schema: str | None = None) -> Path:
    """Simulate ``n`` galaxies of the ten Galaxy10 classes as ``survey`` sees them into a Galaxy10 HDF5.

    Parameters
    ----------
    n, size : number of galaxies and image side in pixels (images are size × size, bands g, r, z).
    seed : the same seed gives identical files for any number of workers.
    out : the HDF5 path; the truth table is written beside it as ``<stem>.truth.parquet``.
    class_weights : None (balanced), a dict {class index or name: weight} (or ``"Merging=2,Round Smooth=1"``),
        or ``"rare:Merging=0.02"``.
    anomalies : fraction of galaxies given a satellite trail, cosmic rays, a ring or a lensed arc.
    noiseless : also store the noise-free model images (``noiseless``).
    workers : processes (None → ``os.cpu_count()``).
    progress : show a tqdm progress bar with the rate.
    survey : ``decals`` (the default data), ``sdss``, ``hst`` or ``random`` (a survey drawn per galaxy
        from broad ranges: domain randomisation); see :mod:`galmo.simulate.surveys`.
    vote_schema : also write simulated vote counts of that Galaxy Zoo campaign into the truth table
        (:func:`galmo.simulate.votes.campaign_counts`; e.g. ``"decals-dr5"``), so ``galmo train
        --target votes --schema decals-dr5`` trains on counts.

    Returns the HDF5 path. Datasets: ``images`` (N, H, W, 3) uint8 Legacy Survey composite, ``ans``
    class, ``ra``, ``dec``, ``redshift``, ``pxscale`` (arcsec/pixel), ``id`` (bytes), ``flux`` and
    ``noiseless`` (N, 3, H, W) float32 nanomaggies per pixel.
    """
    _check(n, size, seed, anomalies, workers)
    preset = get_survey(survey)
    class_weights = weights_arg(class_weights)
    fractions = parse_class_weights(class_weights)
    n, size, seed = int(n), int(size), int(seed)
    out = Path(out)
    classes = assign_classes(n, fractions, seed)
    anom = assign_anomalies(n, float(anomalies), seed)
    workers = min(int(workers or os.cpu_count() or 1), n)
    chunk = max(1, min(32, math.ceil(n / (4 * workers))))
    jobs = [(seed, size, list(range(a, min(a + chunk, n))), classes[a:a + chunk].tolist(), anom[a:a + chunk],
             preset.name) for a in range(0, n, chunk)]
    config = {"n": n, "size": size, "seed": seed, "class_weights": fractions.round(6).tolist(),
              "class_weights_arg": class_weights if not isinstance(class_weights, dict) else
              {str(k): v for k, v in class_weights.items()}, "anomalies": float(anomalies),
              "noiseless": bool(noiseless), "recipe_version": RECIPE_VERSION, "bands": plane_attribute(preset),
              "survey": preset.name, "vote_schema": vote_schema}
    try:
        with atomic_path(out) as tmp:
            rows = _write_h5(tmp, jobs, n, size, noiseless, workers, progress, config)
            _write_truth(truth_path(out), rows, vote_schema, seed)
    except OSError as e:
        raise GalmoError(f"cannot write the simulation: {e}", out) from e
    return out


def _results(jobs, workers):
    from galmo.simulate.render import render_chunk

    if workers <= 1:
        yield from map(render_chunk, jobs)
        return
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(workers) as pool:
        yield from pool.imap(render_chunk, jobs)


def _write_h5(path: Path, jobs, n, size, noiseless, workers, progress, config) -> list[dict]:
    import h5py
    from tqdm import tqdm

    from galmo.simulate.votes import to_cumulative

    rows: list[dict] = []
    votes = []
    with h5py.File(path, "w") as f:
        per = max(1, min(16, n))
        # no compression: noisy floats and noise-textured composites gain < 15 % and cost write time
        f.create_dataset("images", (n, size, size, 3), np.uint8, chunks=(per, size, size, 3))
        f.create_dataset("flux", (n, 3, size, size), np.float32, chunks=(per, 3, size, size))
        if noiseless:
            f.create_dataset("noiseless", (n, 3, size, size), np.float32, chunks=(per, 3, size, size))
        with tqdm(total=n, unit="img", desc="simulate", disable=not progress, smoothing=0.1) as bar:
            for res in _results(jobs, workers):
                a, b = res["start"], res["start"] + len(res["truth"])
                f["images"][a:b] = res["image"]
                f["flux"][a:b] = res["flux"]
                if noiseless:
                    f["noiseless"][a:b] = res["noiseless"]
                rows.extend(res["truth"])
                votes.append(res["votes"])
                bar.update(b - a)
        ids = [r["id"].encode() for r in rows]
        f.create_dataset("id", data=np.array(ids, dtype=f"S{max(len(i) for i in ids)}"))
        f.create_dataset("ans", data=np.array([r["class"] for r in rows], dtype=np.uint8))
        for key in ("ra", "dec", "redshift", "pxscale"):
            f.create_dataset(key, data=np.array([r[key] for r in rows], dtype=np.float64))
        f.attrs["bands"] = config["bands"]
        f.attrs["survey"] = config["survey"]
        f.attrs["class_names"] = json.dumps(GALAXY10_CLASSES)
        f.attrs["generator"] = GENERATOR
        f.attrs["config"] = json.dumps(config)
        f.attrs["flux_units"] = "nanomaggies per pixel (mag = 22.5 - 2.5 log10 flux)"
    cumulative = to_cumulative(np.concatenate(votes))
    for row, cum in zip(rows, cumulative):
        row.update(zip(ANSWER_COLUMNS, cum.tolist()))
    return rows


_FIRST = ["id", "class", "class_name", "ra", "dec", "redshift", "pxscale", "flux_g", "flux_r", "flux_z",
          "mag_g", "mag_r", "mag_z", "is_anomaly", "anomaly_type"]


def _write_truth(path: Path, rows: list[dict], vote_schema: str | None = None, seed: int = 0) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    rest = [c for c in df.columns if c not in _FIRST and c not in ANSWER_COLUMNS]
    df = df[_FIRST + rest + ANSWER_COLUMNS]
    if vote_schema:
        from galmo.simulate.votes import campaign_counts

        counts = campaign_counts(df, vote_schema, seed).drop(columns=["id", "n_volunteers"])
        df = pd.concat([df, counts[[c for c in counts.columns if c not in df.columns]]], axis=1)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def default_sample() -> Path:
    """The embedded default data set: DEFAULT_N galaxies at DEFAULT_SIZE px, seed 0, generated on
    first use into ``galmo.core.io.cache_dir()`` (keyed by the parameters and the recipe version)."""
    stem = f"galmo-sims-v{RECIPE_VERSION}-n{DEFAULT_N}-s{DEFAULT_SIZE}-seed0"
    path = cache_dir() / f"{stem}.h5"
    if path.exists() and truth_path(path).exists():
        return path
    return simulate(DEFAULT_N, DEFAULT_SIZE, seed=0, out=path)


def class_montage(png: str | os.PathLike, per_class: int = 6, size: int = DEFAULT_SIZE, seed: int = 0,
                  workers: int | None = None) -> Path:
    """Simulate ``per_class`` galaxies of every class and write them side by side (one column per
    class) with :func:`galmo.plots.class_grid`; this makes ``docs/classes.png``."""
    import tempfile

    import h5py

    from galmo.plots import class_grid

    with tempfile.TemporaryDirectory() as tmp:
        path = simulate(per_class * len(GALAXY10_CLASSES), size=size, seed=seed, out=Path(tmp) / "montage.h5",
                        workers=workers, progress=False)
        with h5py.File(path, "r") as f:
            images, ans = f["images"][()], f["ans"][()]
    by_class = {name: list(images[ans == k]) for k, name in enumerate(GALAXY10_CLASSES)}
    return class_grid(by_class, png, per_class=per_class)


def survey_montage(png: str | os.PathLike, n: int = 8, size: int = DEFAULT_SIZE, seed: int = 0,
                   surveys=("decals", "sdss", "hst", "random"), workers: int | None = None) -> Path:
    """The same ``n`` galaxies (one of each of the first ``n`` classes) rendered by each survey, one
    column per survey (:func:`galmo.plots.class_grid`); this makes ``docs/surveys.png``."""
    import tempfile

    import h5py

    from galmo.plots import class_grid

    weights = {k: 1 for k in range(min(n, len(GALAXY10_CLASSES)))}
    columns = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in surveys:
            path = simulate(len(weights), size=size, seed=seed, out=Path(tmp) / f"{name}.h5", class_weights=weights,
                            survey=name, workers=workers, progress=False, noiseless=False)
            with h5py.File(path, "r") as f:
                columns[name] = list(f["images"][()][np.argsort(f["ans"][()], kind="stable")])
    return class_grid(columns, png, per_class=len(weights))
