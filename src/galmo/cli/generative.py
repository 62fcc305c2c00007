"""``galmo train-generator``, ``galmo generate``, ``galmo fidelity``, ``galmo augment``: the generative method's verbs.

Every flag comes from the configs of :mod:`galmo.methods.generative.config` (argparse → config → one
library call); ``galmo run CONFIG.json`` re-runs a generator training through :func:`run_config`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from galmo.methods.generative.config import AugmentConfig, FidelityConfig, GenerateConfig, GeneratorConfig


def register(sub) -> None:
    from galmo.cli import add_verb

    p = add_verb(sub, "train-generator", "train a class- or vote-conditional diffusion model (generative "
                 "augmentation)", GeneratorConfig, cmd_train_generator, out_kind="dir", required=("data", "out"))
    p.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # testing the resume
    add_verb(sub, "generate", "generate galaxies of a class or vote vector with a trained generator (Galaxy10 "
             "HDF5)", GenerateConfig, cmd_generate, out_kind="file", required=("generator", "out"))
    add_verb(sub, "fidelity", "how close a generator's galaxies are to real ones: Fréchet distances with their "
             "floor, statmorph parameters, a judge's accuracy", FidelityConfig, cmd_fidelity, required=("generator",))
    add_verb(sub, "augment", "the rare-class experiment: a classifier as is, with generated rare galaxies, with "
             "the rare class oversampled", AugmentConfig, cmd_augment, out_kind="dir", required=("out",))


def run_train_generator(cfg: GeneratorConfig) -> int:
    from galmo.methods.generative.run import run_train_generator as train

    train(cfg)
    print(f"run folder: {cfg.out} (report: {Path(cfg.out) / 'report.html'})")
    return 0


def cmd_train_generator(args) -> int:
    return run_train_generator(GeneratorConfig.from_args(args, stop_after_steps=args.stop_after_steps))


def run_config(path, out=None) -> int:
    """``galmo run CONFIG.json [--out DIR]``: the generator training saved in ``path``, again."""
    cfg = GeneratorConfig.load(path)
    return run_train_generator(cfg.replace(out=str(out)) if out else cfg)


def cmd_generate(args) -> int:
    from galmo.methods.generative.run import run_generate

    run_generate(GenerateConfig.from_args(args))
    return 0


def cmd_fidelity(args) -> int:
    from galmo.methods.generative.fidelity import measure_fidelity

    cfg = FidelityConfig.from_args(args)
    measure_fidelity(cfg.generator, cfg.data, per_class=cfg.per_class, judge=cfg.judge, guidance=cfg.guidance,
                     steps=cfg.steps, seed=cfg.seed, morphology=cfg.morphology, device=cfg.device,
                     progress=cfg.progress)
    print(f"fidelity: {Path(cfg.generator) / 'fidelity.json'} (report: {Path(cfg.generator) / 'report.html'})")
    return 0


def cmd_augment(args) -> int:
    from galmo.methods.generative.augment import run_augment

    cfg = AugmentConfig.from_args(args)
    run_augment(cfg)
    print(f"experiment folder: {cfg.out} (report: {Path(cfg.out) / 'report.html'})")
    return 0
