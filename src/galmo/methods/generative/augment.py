"""``galmo augment``: does adding generated galaxies of a rare class help a classifier find them?

GalaxySD's experiment on galmo's simulations, with the honest baseline next to it:

1. simulate an imbalanced training set (the rare class at ``rare_frac``: the simulator's
   ``class_weights="rare:<class>=<frac>"``) and a balanced held-out set, at the generator's resolution;
2. train the class-conditional generator on the training set (once; shared by the seeds);
3. per seed, train the same classifier (``simple_cnn`` through :func:`galmo.methods.supervised.run.train`)
   (a) ``as_is`` on the training set, (b) ``generated``: plus ``n_generated`` generated rare galaxies,
   (c) ``oversampled``: plus as many copies of the real rare galaxies (the same number of extra
   rare images, no new information), (d) ``weighted``: the training set as is with the class-weighted
   loss (``class_weight="balanced"``: inverse class frequency);
4. per-class completeness (recall) and purity (precision) on the balanced set, mean and spread over
   seeds; and the conditional fidelity: the share of the generated images that the ``as_is``
   classifier calls the rare class (a lower bound: that classifier rarely predicts it);
5. the generator's fidelity (:func:`galmo.methods.generative.fidelity.measure_fidelity`) against a third,
   balanced *reference* set of sims: Fréchet distances per class with the real-vs-real floor, statmorph
   parameters real vs generated, and the conditional fidelity per class as judged by the same classifier
   trained on the balanced reference set (``runs/judge``, evaluated on the held-out set).

Everything lands in the experiment folder: ``sims/``, ``generator/`` (with its ``fidelity.json``),
``runs/<arm>_s<seed>/``, ``runs/judge/``, ``augment.csv`` (one row per arm, seed and class),
``metrics.json``, the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.io import write_json, write_text
from galmo.core.schema import GALAXY10_CLASSES
from galmo.methods.generative.config import AugmentConfig
from galmo.methods.generative.run import class_index

ARMS = ("as_is", "generated", "oversampled", "weighted")
ARM_OPTIONS = {"weighted": {"class_weight": "balanced"}}  # galmo train options of an arm beyond its data
RESULTS = "augment.csv"
TRAIN_SEED, TEST_SEED, REFERENCE_SEED = 1000, 2000, 3000  # simulator seeds of the training, held-out, reference sets
JUDGE_RUN = "judge"  # runs/judge: the classifier trained on the balanced reference set


def simulate_sets(cfg: AugmentConfig, out: Path, px: int) -> tuple[Path, Path, Path]:
    """The imbalanced training set, the balanced held-out set and the balanced reference set (kept when there)."""
    from galmo.simulate import simulate

    k = len(GALAXY10_CLASSES)
    sets = {"train": (cfg.n_train, TRAIN_SEED, f"rare:{cfg.rare_class}={cfg.rare_frac}"),
            "test": (cfg.n_test_per_class * k, TEST_SEED, None),
            "reference": (cfg.n_reference_per_class * k, REFERENCE_SEED, None)}
    for name, (n, seed, weights) in sets.items():
        if not (out / "sims" / f"{name}.h5").exists():
            simulate(n, size=px, seed=seed, out=out / "sims" / f"{name}.h5", progress=cfg.progress,
                     class_weights=weights)
    return tuple(out / "sims" / f"{name}.h5" for name in sets)


def generator_options(cfg: AugmentConfig, train: Path, **more) -> dict:
    """``train_generator`` options of one of the experiment's generators: ``cfg.generator_updates`` optimizer
    steps as whole epochs of the training set ``train`` (less the generator's validation split)."""
    from galmo.methods.generative.config import GeneratorConfig
    from galmo.sources import open_source

    n = len(open_source(train))
    n_fit = n - int(round(GeneratorConfig.val_frac * n))
    per_epoch = max(1, -(-n_fit // cfg.generator_batch_size))
    return dict(generator_size=cfg.generator_size, epochs=max(1, round(cfg.generator_updates / per_epoch)),
                batch_size=cfg.generator_batch_size, precision=cfg.generator_precision, device=cfg.device,
                progress=cfg.progress, grid_per_class=2, **more)


def write_merged(out: Path, base: Path, extra: dict | None) -> Path:
    """A Galaxy10 HDF5 of ``base``'s images, labels and ids plus ``extra`` ({"images", "ans", "id"})."""
    import h5py

    with h5py.File(base, "r") as f:
        parts = {k: [f[k][()]] for k in ("images", "ans", "id")}
        attrs = {k: f.attrs[k] for k in ("bands", "class_names") if k in f.attrs}
    for k in parts:
        if extra is not None:  # ids keep their own width (bytes of any length); images and labels the base's type
            parts[k].append(np.asarray(extra[k]) if k == "id" else np.asarray(extra[k]).astype(parts[k][0].dtype))
    from galmo.sources.galaxy10_h5 import write_galaxy10

    images, ans, ids = (np.concatenate(parts[k]) for k in ("images", "ans", "id"))
    return write_galaxy10(out, images, ans, ids, attrs=attrs)


def _rare_rows(h5: Path, rare: int) -> dict:
    import h5py

    with h5py.File(h5, "r") as f:
        keep = np.flatnonzero(f["ans"][()] == rare)
        return {k: f[k][()][keep] for k in ("images", "ans", "id")}


def oversampled(base: Path, rare: int, n_extra: int) -> dict:
    """``n_extra`` copies of the real rare galaxies (cycled), with ids ``<id>-copy<k>``."""
    real = _rare_rows(base, rare)
    pick = np.arange(n_extra) % max(1, len(real["ans"]))
    ids = [f"{real['id'][i].decode()}-copy{k}".encode() for k, i in enumerate(pick)]
    return {"images": real["images"][pick], "ans": real["ans"][pick], "id": np.array(ids)}


def arm_sources(cfg: AugmentConfig, out: Path, train: Path, generated: Path, seed: int) -> dict:
    """{arm: training HDF5} for one seed."""
    import h5py

    rare = class_index(cfg.rare_class, list(GALAXY10_CLASSES))
    with h5py.File(generated, "r") as f:
        gen = {"images": f["images"][()], "ans": f["ans"][()], "id": f["id"][()]}
    folder = out / "sims"
    return {"as_is": train,
            "generated": write_merged(folder / f"train_generated_s{seed}.h5", train, gen),
            "oversampled": write_merged(folder / f"train_oversampled_s{seed}.h5", train,
                                        oversampled(train, rare, len(gen["ans"]))),
            "weighted": train}


def train_and_score(cfg: AugmentConfig, data: Path, test: Path, run: Path, seed: int, epochs: int | None = None,
                    **options) -> dict:
    """Train the classifier of one arm and seed (kept when already trained; ``epochs``: None for
    ``cfg.classifier_epochs``; ``options``: more galmo train options) and evaluate it on ``test``."""
    from galmo.methods.supervised.run import evaluate, train

    if not (run / "model.safetensors").exists():
        train(str(data), str(run), model="simple_cnn", width=cfg.width, epochs=epochs or cfg.classifier_epochs,
              lr=cfg.lr, seed=seed, test_frac=0.0, evaluate_at_end=False, device=cfg.device, progress=cfg.progress,
              log=lambda *a: None, **options)
    return evaluate(run, test, split="all", report=False, out=run, device=cfg.device, log=lambda *a: None)


def fidelity(run: Path, generated: Path, rare: str, device: str) -> float:
    """Share of the generated images the classifier of ``run`` calls ``rare``."""
    from galmo.methods.supervised.run import predict

    preds = predict(run, str(generated), device=device)
    return float((preds["pred_name"] == rare).mean())


def run_augment(cfg: AugmentConfig, log=print) -> pd.DataFrame:
    """Run (or finish) the experiment; returns the per-arm, per-seed, per-class table."""
    from galmo.methods.generative.run import generate, train_generator
    from galmo.nn.models.diffusion import SIZES

    out = Path(cfg.out)
    rare = GALAXY10_CLASSES[class_index(cfg.rare_class, list(GALAXY10_CLASSES))]
    cfg = cfg.replace(rare_class=rare)
    cfg.save(out)
    train, test, reference = simulate_sets(cfg, out, SIZES[cfg.generator_size][0])
    gen_run = out / "generator"
    if not (gen_run / "model.safetensors").exists():
        log(f"[augment] training the {cfg.generator_size} generator on {train}")
        train_generator(str(train), str(gen_run), log=log, **generator_options(cfg, train))
    rows, fid = [], {}
    for seed in cfg.seeds:
        generated = out / "sims" / f"generated_s{seed}.h5"
        if not generated.exists():
            generate(gen_run, generated, class_name=rare, n=cfg.n_generated, guidance=cfg.guidance, steps=cfg.steps,
                     seed=100_000 * seed, device=cfg.device, progress=cfg.progress, log=log)
        for arm, data in arm_sources(cfg, out, train, generated, seed).items():
            res = train_and_score(cfg, data, test, out / "runs" / f"{arm}_s{seed}", seed, **ARM_OPTIONS.get(arm, {}))
            rows += [{"arm": arm, "seed": seed, "class": k, **v} for k, v in res["per_class"].items()]
            pc = res["per_class"][rare]
            log(f"[augment] seed {seed} {arm}: {rare} recall {pc['recall']:.3f}, precision {pc['precision']:.3f}, "
                f"balanced accuracy {res['balanced_accuracy']:.3f}")
        fid[seed] = fidelity(out / "runs" / f"as_is_s{seed}", generated, rare, cfg.device)
    table = pd.DataFrame(rows)
    write_text(out / RESULTS, table.to_csv(index=False))
    res = {"rare_class": rare, "summary": summarise(table, rare), "conditional_fidelity": fid,
           "fidelity": generator_fidelity(cfg, out, reference, test, log) if cfg.fidelity_per_class else None}
    if cfg.rare_feature != "none":
        from galmo.methods.generative.rare_feature import run_rare_feature

        res["rare_feature"] = run_rare_feature(cfg, out, log)
    write_json(out / "metrics.json", {"augment": res})
    _report(out)
    log(closing_note(res))
    return table


def generator_fidelity(cfg: AugmentConfig, out: Path, reference: Path, test: Path, log=print) -> dict:
    """Train the judge on the balanced reference set (scored on the held-out set), measure the generator's
    fidelity against the reference set; returns the rare class's rows, the pooled Fréchet row, every class
    (Fréchet distances and the judge's accuracy) and the sampling speed of the generator's grid."""
    from galmo.methods.generative.fidelity import measure_fidelity

    judge = out / "runs" / JUDGE_RUN
    scored = train_and_score(cfg, reference, test, judge, seed=0, epochs=cfg.judge_epochs)
    log(f"[augment] judge (trained on the balanced reference set): balanced accuracy "
        f"{scored['balanced_accuracy']:.3f} on the held-out set")
    res = measure_fidelity(out / "generator", reference, per_class=cfg.fidelity_per_class, judge=judge,
                           guidance=cfg.guidance, steps=cfg.steps, device=cfg.device, progress=cfg.progress, log=log)
    pick = {r["class"]: r for r in res["frechet"]}
    judged = {r["class"]: r for r in res["conditional"]}
    per_class = [{**r, **{k: judged.get(r["class"], {}).get(k) for k in ("accuracy", "real_recall")}}
                 for r in res["frechet"]]
    grid = json.loads((out / "generator" / "metrics.json").read_text())["generator"].get("grid", {})
    return {"frechet": {k: pick[k] for k in (cfg.rare_class, "all") if k in pick},
            "conditional": judged.get(cfg.rare_class), "judge_balanced_accuracy": scored["balanced_accuracy"],
            "per_class": per_class, "sampling": grid}


def closing_note(res: dict) -> str:
    """The experiment's result in a few lines (what the terminal shows at the end)."""
    lines = [f"[augment] {res['rare_class']}: recall / precision on the balanced held-out set, mean ± std over seeds"]
    lines += [f"  {r['arm']:<12} {_arm_result(r)}" for r in res["summary"]]
    feature = res.get("rare_feature")
    lines += [f"  rare feature ({feature['label']}), {r['arm']:<12} {_arm_result(r)}"
              for r in (feature["summary"] if feature else ())]
    fid = res.get("fidelity") or {}
    for name, r in fid.get("frechet", {}).items():
        lines.append(f"  Fréchet distance {name}: generated {r['fd_generated_real']:.1f}, real-vs-real floor "
                     f"{r['fd_real_real']:.1f} (n = {r['n']})")
    if fid.get("conditional"):
        c = fid["conditional"]
        lines.append(f"  conditional fidelity (balanced judge): {c['accuracy']:.3f} of the generated "
                     f"{res['rare_class']} galaxies called so (its recall on real ones: {c['real_recall'] or 0:.3f})")
    if fid.get("per_class"):
        table = pd.DataFrame(fid["per_class"]).drop(columns=["ratio"]).to_string(index=False, float_format="%.3g")
        lines += ["  per class (FD: Fréchet distance; accuracy: the judge's on generated, real_recall: on real):"]
        lines += ["    " + line for line in table.splitlines()]
    grid = fid.get("sampling") or {}
    if grid.get("sampling_images_per_s"):
        lines.append(f"  sampling: {grid['sampling_images_per_s']:.2f} images/s at {grid['steps']} steps, guidance "
                     f"{grid['guidance']:g} (the generator's grid)")
    return "\n".join(lines)


def _arm_result(r: dict) -> str:
    return " / ".join(f"{r[f'rare_{k}_mean']:.3f} ± {r[f'rare_{k}_std'] or 0:.3f}" for k in ("recall", "precision"))


def summarise(table: pd.DataFrame, rare: str) -> list[dict]:
    """Per arm: mean and std over seeds of the rare class's recall and precision, and of the macro averages."""
    macro = table.groupby(["arm", "seed"])[["recall", "precision"]].mean().add_prefix("macro_")
    rare_rows = table[table["class"] == rare].set_index(["arm", "seed"])[["recall", "precision"]].add_prefix("rare_")
    per_seed = rare_rows.join(macro).reset_index()
    stats = per_seed.groupby("arm").agg(["mean", "std"])
    stats.columns = [f"{a}_{b}" for a, b in stats.columns]
    stats = stats.drop(columns=[c for c in stats.columns if c.startswith("seed_")]).reset_index()
    stats["arm"] = pd.Categorical(stats["arm"], ARMS, ordered=True)
    return json.loads(stats.sort_values("arm").to_json(orient="records"))


def _report(out: Path) -> None:
    from galmo.methods.generative.report import section
    from galmo.report import build_report

    section(out)  # the experiment's and the generator's (from out/generator/)
    build_report(out)
