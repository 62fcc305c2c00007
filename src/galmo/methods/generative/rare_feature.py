"""The rare-feature case of ``galmo augment`` (GalaxySD's dusty early types, on sims): a feature combination the
simulator makes but the training set almost lacks, generated from the vote vectors of its few examples.

``dust_lane``: edge-on discs (the two Galaxy10 edge-on classes) with a dust lane (the truth column
``dust_lane``; the simulator gives one to 40 % of the bulgeless and 75 % of the bulged edge-ons).

1. Simulate a pool of edge-on discs; the training set keeps every one without a dust lane and only
   ``max(4, rare_frac × that number)`` with one; the held-out set (other simulator seeds) has
   ``n_test_per_class`` of each. The label is the feature: ``no dust lane`` / ``dust lane``.
2. Train a **vote-conditioned** generator on the training set (its 37 simulated Galaxy Zoo vote fractions).
3. Generate ``n_generated`` galaxies from the vote vectors of the training set's dusty discs (cycled,
   one seed each), labelled ``dust lane``.
4. Per seed, the same classifier as the rare-class experiment, ``as_is`` / ``generated`` / ``oversampled``;
   the detection of the feature (recall, precision of ``dust lane``) on the held-out set, mean and std.

Files in the experiment folder: ``feature/`` (the sets, the generator, ``runs/<arm>_s<seed>``),
``rare_feature.csv``; the summary goes into ``metrics.json`` (``augment.rare_feature``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.io import write_text
from galmo.core.schema import ANSWER_COLUMNS

# feature → (simulator class weights of the pool, truth column, class names without / with it)
FEATURES = {"dust_lane": ("Edge-on without Bulge=1,Edge-on with Bulge=1", "dust_lane", ["no dust lane", "dust lane"])}
FEATURE_ARMS = ("as_is", "generated", "oversampled")
RESULTS = "rare_feature.csv"
POOL_SEEDS = {"train": 4000, "test": 5000}


def write_labelled(out: Path, pool: Path, rows: np.ndarray, labels: np.ndarray, names: list[str]) -> Path:
    """A Galaxy10 HDF5 of the pool's galaxies ``rows`` with the feature as the label and the vote columns."""
    import h5py

    from galmo.sources import open_source

    cat = open_source(pool).catalog.iloc[rows]
    with h5py.File(pool, "r") as f:
        images, ids = f["images"][()][rows], f["id"][()][rows]
    from galmo.sources.galaxy10_h5 import write_galaxy10

    return write_galaxy10(out, images, np.asarray(labels, np.int16), ids,
                          {col: cat[col].to_numpy(np.float64) for col in ANSWER_COLUMNS},
                          {"bands": "grz", "class_names": json.dumps(names)})


def feature_sets(cfg, folder: Path, px: int) -> tuple[Path, Path]:
    """The training set (the feature rare) and the balanced held-out set (kept when already there)."""
    from galmo.simulate import simulate
    from galmo.sources import open_source

    weights, column, names = FEATURES[cfg.rare_feature]
    sizes = {"train": cfg.n_train, "test": 4 * cfg.n_test_per_class}
    out = {}
    for part, seed in POOL_SEEDS.items():
        out[part] = folder / f"{part}.h5"
        if out[part].exists():
            continue
        pool = simulate(sizes[part], size=px, seed=seed, out=folder / f"pool_{part}.h5", class_weights=weights,
                        progress=cfg.progress)
        has = open_source(pool).catalog[column].to_numpy(bool)
        with_, without = np.flatnonzero(has), np.flatnonzero(~has)
        if part == "train":
            keep = with_[:max(4, int(round(cfg.rare_frac * len(without))))]
        else:
            n = min(cfg.n_test_per_class, len(with_), len(without))
            keep, without = with_[:n], without[:n]
        rows = np.sort(np.concatenate([without, keep]))
        write_labelled(out[part], pool, rows, has[rows].astype(int), names)
    return out["train"], out["test"]


def generated_feature(cfg, gen_run: Path, train: Path, out: Path, seed: int) -> Path:
    """``n_generated`` galaxies from the vote vectors of the training set's galaxies with the feature."""
    from galmo.methods.generative.run import load_generator, write_generated
    from galmo.methods.generative.sample import sample
    from galmo.sources import open_source

    if out.exists():
        return out
    cat = open_source(train).catalog
    rare = cat[cat["label"] == 1]
    pick = np.arange(cfg.n_generated) % len(rare)
    votes = rare[ANSWER_COLUMNS].to_numpy(np.float32)[pick]
    model, block = load_generator(gen_run, cfg.device)
    seeds = 100_000 * seed + np.arange(cfg.n_generated)
    images = sample(model, votes, seeds, steps=cfg.steps, guidance=cfg.guidance,
                    device=next(model.parameters()).device, progress=cfg.progress)
    conditions = [f"like={i}" for i in rare["id"].to_numpy()[pick]]
    meta = {"generator": str(gen_run), "guidance": cfg.guidance, "steps": cfg.steps, "condition": "votes"}
    return write_generated(out, images, np.ones(cfg.n_generated), conditions, seeds, block, meta, votes)


def run_rare_feature(cfg, out: Path, log=print) -> dict:
    """Run (or finish) the rare-feature case in ``out/feature``; returns its summary for metrics.json."""
    from galmo.methods.generative.augment import (generator_options, oversampled, summarise, train_and_score,
                                                  write_merged)
    from galmo.methods.generative.run import train_generator
    from galmo.nn.models.diffusion import SIZES

    folder = out / "feature"
    train, test = feature_sets(cfg, folder, SIZES[cfg.generator_size][0])
    gen_run = folder / "generator"
    if not (gen_run / "model.safetensors").exists():
        log(f"[augment] rare feature {cfg.rare_feature}: training the vote-conditioned generator on {train}")
        train_generator(str(train), str(gen_run), log=log, **generator_options(cfg, train, condition="votes"))
    name, rows = FEATURES[cfg.rare_feature][2][1], []
    for seed in cfg.seeds:
        gen = _rows(generated_feature(cfg, gen_run, train, folder / f"generated_s{seed}.h5", seed))
        data = {"as_is": train, "generated": write_merged(folder / f"train_generated_s{seed}.h5", train, gen),
                "oversampled": write_merged(folder / f"train_oversampled_s{seed}.h5", train,
                                            oversampled(train, 1, cfg.n_generated))}
        for arm, path in data.items():
            res = train_and_score(cfg, path, test, folder / "runs" / f"{arm}_s{seed}", seed)
            rows += [{"arm": arm, "seed": seed, "class": k, **v} for k, v in res["per_class"].items()]
            pc = res["per_class"][name]
            log(f"[augment] rare feature, seed {seed} {arm}: {name} recall {pc['recall']:.3f}, "
                f"precision {pc['precision']:.3f}")
    table = pd.DataFrame(rows)
    write_text(out / RESULTS, table.to_csv(index=False))
    return {"feature": cfg.rare_feature, "label": name, "n_train": _counts(train), "n_test": _counts(test),
            "summary": summarise(table, name)}


def _rows(h5: Path) -> dict:
    import h5py

    with h5py.File(h5, "r") as f:
        return {k: f[k][()] for k in ("images", "ans", "id")}


def _counts(h5: Path) -> dict:
    from galmo.sources import open_source

    return {str(k): int(v) for k, v in open_source(h5).catalog["label_name"].value_counts().items()}
