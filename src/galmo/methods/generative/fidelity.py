"""How close a generator's galaxies are to real ones of the class they were asked for (any generator run).

:func:`measure_fidelity` samples ``per_class`` galaxies of every class (a vote-conditioned generator: from
the votes of real galaxies of that class) and compares them with real galaxies of the same class:

* **Fréchet distance** in galmo's own embedding space (the offline ImageNet EfficientNet-Lite0,
  :class:`galmo.stages.encode.Encoder`, 96 px, 1280 features). The real galaxies of a class are split
  into two halves R1, R2 of n each (n = the generated count, or half the real ones when fewer): the
  *floor* is FD(R1, R2), what two real samples of that size already differ by; the generated value is
  the mean of FD(R1, G) and FD(R2, G) with n generated images G. FD is biased upwards at small n, so
  only values at the same n compare, which the split guarantees.
* **statmorph parameters** (Gini, M20, C, A, Sérsic n; :func:`galmo.morphology.measure` on the band
  mean of the display images, real and generated alike): per class the medians and the two-sample
  Kolmogorov–Smirnov statistic and p-value (``scipy.stats.ks_2samp``).
* **Conditional fidelity**, when a ``judge`` is given (a ``galmo train`` class run, ideally trained on
  balanced real data): per requested class, the share of the generated images it calls that class,
  beside its recall on real galaxies (its ``metrics.json`` evaluation, when there is one).

Written into the generator run folder: ``fidelity.json``, ``fidelity_morphology.csv`` (one row per
measured galaxy), ``fidelity/generated.h5`` (the generated set, reused by a re-run with the same
settings), ``figures/fidelity_grid.png`` (real and generated side by side per class) and
``figures/fidelity_morphology.png``; the report section is
:func:`galmo.methods.generative.report.fidelity_section`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import GalmoError
from galmo.core.io import write_json, write_text

FIDELITY_JSON = "fidelity.json"
MORPHOLOGY_CSV = "fidelity_morphology.csv"
GENERATED = "fidelity/generated.h5"
GRID_FIGURE = "fidelity_grid.png"
MORPHOLOGY_FIGURE = "fidelity_morphology.png"
MORPHOLOGY_COLUMNS = ("gini", "m20", "concentration", "asymmetry", "sersic_n")
ENCODER_SIZE = 96  # Lite0 input pixels (as galmo's encoder study); the native 224 costs 5× more


# ---------------------------------------------------------------------------------------- Fréchet distance
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b`` (features):
    ‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa Σb)^½.

    With sample covariances Σa = AᵀA/(na−1) (A centred) the non-zero eigenvalues of ΣaΣb are the squared
    singular values of ABᵀ/√((na−1)(nb−1)), so tr (ΣaΣb)^½ is that matrix's nuclear norm: exact, and an
    (na × nb) SVD instead of ``scipy.linalg.sqrtm`` of a 1280 × 1280 product (45 s a call on one shared
    core, and ill-conditioned when n < 1280, as here); equal to the ``sqrtm`` formula (tested)."""
    from scipy.linalg import svdvals

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise GalmoError(f"the Fréchet distance needs at least 2 samples a side (got {len(a)} and {len(b)})")
    ca, cb = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    cross = svdvals(ca @ cb.T).sum() / np.sqrt(na * nb)
    d = ((a.mean(0) - b.mean(0)) ** 2).sum() + (ca ** 2).sum() / na + (cb ** 2).sum() / nb - 2 * cross
    return float(max(d, 0.0))


def frechet_table(real: np.ndarray, real_y: np.ndarray, gen: np.ndarray, gen_y: np.ndarray, names, seed=0) -> list:
    """Per class (and ``all`` classes pooled): n, the real-vs-real floor, generated-vs-real, their ratio."""
    rng = np.random.default_rng(seed)
    rows, pooled = [], {"r1": [], "r2": [], "g": []}
    for k, name in enumerate(names):
        r, g = real[real_y == k], gen[gen_y == k]
        n = min(len(r) // 2, len(g))
        if n < 2:
            continue
        r = r[rng.permutation(len(r))]
        parts = {"r1": r[:n], "r2": r[n:2 * n], "g": g[:n]}
        rows.append(_frechet_row(name, parts))
        for key, v in parts.items():
            pooled[key].append(v)
    if len(rows) > 1:
        rows.append(_frechet_row("all", {k: np.concatenate(v) for k, v in pooled.items()}))
    return rows


def _frechet_row(name: str, parts: dict) -> dict:
    floor = frechet_distance(parts["r1"], parts["r2"])
    gen = (frechet_distance(parts["r1"], parts["g"]) + frechet_distance(parts["r2"], parts["g"])) / 2
    return {"class": name, "n": len(parts["g"]), "fd_real_real": floor, "fd_generated_real": gen,
            "ratio": gen / floor if floor > 0 else None}


def embed(images: np.ndarray, size: int = ENCODER_SIZE, device: str = "cpu") -> np.ndarray:
    """galmo's embedding of images (N, C, H, W) in [0, 1]: the offline EfficientNet-Lite0's pooled features."""
    from galmo.stages.encode import Encoder

    return Encoder(size=size, device=device, batch_size=64).fit().transform(images)


# ---------------------------------------------------------------------------------------- statmorph
def morphology_table(real: np.ndarray, real_y: np.ndarray, gen: np.ndarray, gen_y: np.ndarray, names) -> pd.DataFrame:
    """statmorph parameters of every image (band mean of the display image): one row each, with
    ``class`` and ``set`` (real / generated)."""
    from galmo.morphology import measure

    parts = []
    for what, x, y in (("real", real, real_y), ("generated", gen, gen_y)):
        df = measure(np.asarray(x).mean(1), fit_sersic=True)
        df.insert(0, "set", what)
        df.insert(0, "class", [names[k] for k in y])
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def morphology_summary(df: pd.DataFrame, columns=MORPHOLOGY_COLUMNS) -> list[dict]:
    """Per class and parameter: the measured counts, the medians real / generated, the KS statistic and p-value."""
    from scipy.stats import ks_2samp

    rows = []
    for (name, col), (r, g) in _paired_values(df, columns):
        ok = len(r) >= 2 and len(g) >= 2
        ks = ks_2samp(r, g) if ok else None
        rows.append({"class": name, "parameter": col, "n_real": len(r), "n_generated": len(g),
                     "median_real": float(np.median(r)) if len(r) else None,
                     "median_generated": float(np.median(g)) if len(g) else None,
                     "ks": float(ks.statistic) if ok else None, "p": float(ks.pvalue) if ok else None})
    return rows


def _paired_values(df: pd.DataFrame, columns):
    """((class, parameter), (finite real values, finite generated values)) in class order of appearance."""
    for name in pd.unique(df["class"]):
        sub = df[df["class"] == name]
        for col in columns:
            vals = [sub.loc[sub["set"] == s, col].to_numpy(float) for s in ("real", "generated")]
            yield (name, col), tuple(v[np.isfinite(v)] for v in vals)


# ---------------------------------------------------------------------------------------- conditional fidelity
def conditional_accuracy(judge, generated: Path, names, device: str = "cpu") -> list[dict]:
    """Per requested class: how many generated images the classifier run ``judge`` calls that class, and
    its recall on real galaxies when ``judge/metrics.json`` holds an evaluation."""
    from galmo.methods.supervised.run import predict

    preds = predict(judge, str(generated), device=device)
    real = _judge_recall(Path(judge))
    rows = []
    for name in names:
        asked = preds[preds["label_name"] == name]
        if len(asked):
            rows.append({"class": name, "n": len(asked), "accuracy": float((asked["pred_name"] == name).mean()),
                         "real_recall": real.get(name)})
    return rows


def _judge_recall(judge: Path) -> dict:
    try:
        m = json.loads((judge / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    res = next((m[s] for s in ("test", "all") if isinstance(m.get(s), dict) and "per_class" in m[s]), {})
    return {k: v.get("recall") for k, v in res.get("per_class", {}).items()}


# ---------------------------------------------------------------------------------------- the images
def real_images(src, names, per_class: int, px: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` random galaxies of each class of ``names`` from ``src`` (matched by class name), as
    the generator sees them: (images (N, C, px, px) in [0, 1], class indices into ``names``)."""
    from galmo.methods.generative.run import resized
    from galmo.methods.supervised.run import read_images

    cat = src.catalog
    if "label_name" not in cat.columns:
        raise GalmoError("fidelity needs real galaxies with class labels; this source has none", path=src.path)
    rng, rows = np.random.default_rng(seed), []
    for name in names:
        pos = np.flatnonzero(cat["label_name"].to_numpy() == name)
        rows.append(np.sort(rng.choice(pos, min(per_class, len(pos)), replace=False)))
    rows = np.concatenate(rows).astype(np.int64)
    kept, images = read_images(src, rows)
    labels = np.array([names.index(n) for n in cat["label_name"].to_numpy()[rows[kept]]], dtype=np.int64)
    return resized(images, px).numpy(), labels


def generated_set(generator: Path, src, per_class: int, *, guidance: float, steps: int, seed: int,
                  device: str = "cpu", progress: bool = False) -> Path:
    """``fidelity/generated.h5`` of the generator run: ``per_class`` galaxies of every class (kept when
    its settings are the same)."""
    from galmo.methods.generative.run import _grid_conditions, load_generator, write_generated
    from galmo.methods.generative.sample import sample

    out = Path(generator) / GENERATED
    meta = {"per_class": per_class, "guidance": guidance, "steps": steps, "seed": seed, "real": str(src.path)}
    if out.exists() and _saved_meta(out) == meta:
        return out
    model, block = load_generator(generator, device)
    names = block["class_names"]
    rows = np.flatnonzero(src.catalog["label"].to_numpy() >= 0) if "label" in src.catalog.columns else None
    conds, keys = _grid_conditions(model, block, per_class, src, rows)
    seeds = seed + np.arange(len(conds))
    images = sample(model, conds, seeds, steps=steps, guidance=guidance, device=next(model.parameters()).device,
                    progress=progress)
    labels = np.array([names.index(k) for k in keys])
    votes = None if model.condition == "class" else conds
    write_generated(out, images, labels, [f"class={k}" for k in keys], seeds, block, meta, votes)
    return out


def _saved_meta(path: Path) -> dict | None:
    import h5py

    with h5py.File(path, "r") as f:
        return json.loads(f.attrs.get("config", "null"))


# ---------------------------------------------------------------------------------------- all of it
def measure_fidelity(generator, real=None, *, per_class: int = 20, judge=None, guidance: float = 3.0,
                     steps: int = 25, seed: int = 0, morphology: bool = True, device: str = "cpu",
                     progress: bool = False, log=print) -> dict:
    """Every fidelity measure of the generator run ``generator`` against the labelled source ``real``
    (None: the generator's training source); ``judge``: a classifier run for the conditional fidelity.
    Writes the files listed in the module docstring, the section, the report; returns ``fidelity.json``."""
    from galmo.methods.generative.run import load_generator
    from galmo.nn.device import set_threads
    from galmo.sources import as_source, open_source

    set_threads()
    gen_dir = Path(generator)
    model, block = load_generator(gen_dir, device)
    names, src = block["class_names"], as_source(real if real is not None else block["source"])
    real_x, real_y = real_images(src, names, 2 * per_class, model.image_size, seed)
    path = generated_set(gen_dir, src, per_class, guidance=guidance, steps=steps, seed=seed, device=device,
                         progress=progress)
    gsrc = open_source(path)
    gen_x, gen_y = gsrc.read(np.arange(len(gsrc))), gsrc.catalog["label"].to_numpy()
    feats = embed(np.concatenate([real_x, gen_x]))
    res = {"settings": {"real": str(src.path), "per_class": per_class, "guidance": guidance, "steps": steps,
                        "seed": seed, "encoder": f"tf_efficientnet_lite0 (offline ImageNet), {ENCODER_SIZE} px"},
           "frechet": frechet_table(feats[:len(real_x)], real_y, feats[len(real_x):], gen_y, names, seed)}
    if morphology:
        res["morphology"] = _morphology(gen_dir, real_x, real_y, gen_x, gen_y, names, per_class)
    if judge is not None:
        res["conditional"] = conditional_accuracy(judge, path, names, device)
        res["settings"]["judge"] = str(judge)
    _grid(gen_dir, real_x, real_y, gen_x, gen_y, names)
    write_json(gen_dir / FIDELITY_JSON, res)
    log(f"[fidelity] {gen_dir}: " + ", ".join(f"{r['class']} FD {r['fd_generated_real']:.1f} (floor "
                                                f"{r['fd_real_real']:.1f})" for r in res["frechet"][-1:]))
    _report(gen_dir)
    return res


def _morphology(gen_dir: Path, real_x, real_y, gen_x, gen_y, names, per_class: int) -> list[dict]:
    """statmorph of ``per_class`` real and the generated galaxies of each class: the csv, the figure, the summary."""
    from galmo import plots

    first = np.concatenate([np.flatnonzero(real_y == k)[:per_class] for k in range(len(names))])
    df = morphology_table(real_x[first], real_y[first], gen_x, gen_y, names)
    write_text(gen_dir / MORPHOLOGY_CSV, df.to_csv(index=False))
    plots.paired_boxes(df, MORPHOLOGY_COLUMNS, gen_dir / "figures" / MORPHOLOGY_FIGURE, group="class", split="set")
    return morphology_summary(df)


def _grid(gen_dir: Path, real_x, real_y, gen_x, gen_y, names, per: int = 4) -> None:
    """Real and generated galaxies side by side: two columns per class."""
    from galmo import plots

    cols = {}
    for k, name in enumerate(names):
        if (gen_y == k).any():
            cols[f"{name}\n(real)"] = real_x[real_y == k][:per]
            cols[f"{name}\n(gen.)"] = gen_x[gen_y == k][:per]
    plots.class_grid(cols, gen_dir / "figures" / GRID_FIGURE, per_class=per, cell=0.8)


def _report(gen_dir: Path) -> None:
    from galmo.methods.generative.report import section
    from galmo.report import build_report

    section(gen_dir)
    build_report(gen_dir)
