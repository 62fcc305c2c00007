"""Settings of the generative method: ``galmo train-generator``, ``galmo generate``, ``galmo augment``.

No torch here (the CLI builds its parser from these). Flags that ``galmo train`` also has take their
help from :class:`~galmo.methods.supervised.config.SupervisedConfig` (one meaning per flag).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from galmo.core.config import (HELP, Config, batch_size_option, data_option, device_option, on_error_option, option,
                               progress_option, seed_option)
from galmo.methods.supervised.config import PRECISIONS, DataEfficiencyConfig, SupervisedConfig

CONDITIONS = ("class", "votes")  # = galmo.nn.models.diffusion.CONDITIONS (that module imports torch)
GENERATOR_SIZES = ("micro", "tiny", "small", "base")  # = galmo.nn.models.diffusion.SIZES
PREDICTIONS = ("v_prediction", "epsilon")  # = galmo.nn.models.diffusion.PREDICTIONS
SAMPLERS = ("ddim", "dpm")  # DDIMScheduler, DPMSolverMultistepScheduler
GENERATED_PREFIX = "gen"  # ids of generated galaxies: gen-<condition>-s<seed>


def like_train(name: str, default=dataclasses.MISSING, of=SupervisedConfig):
    """An option with the help (and choices, metavar) of ``galmo train``'s flag of that name (or ``of``'s)."""
    f = next(f for f in dataclasses.fields(of) if f.name == name)
    m = f.metadata
    return option(f.default if default is dataclasses.MISSING else default, m["help"], choices=m.get("choices"),
                  metavar=m.get("metavar"))


def generator_size_option():
    return option("tiny", "U-Net size: micro (16 px, tests), tiny (32 px, 2 CPU cores), small or base (64 px, a GPU)",
                  choices=GENERATOR_SIZES)


@dataclass
class GeneratorConfig(Config):
    """Every setting of one training of the conditional diffusion model (see docs/generative.md)."""

    method = "train-generator"

    data: str = data_option()
    out: str = option(None, "run folder, e.g. runs/generator")
    condition: str = option("class", "what the images are generated from: the Galaxy10 class or the 37 Galaxy "
                            "Zoo vote fractions", choices=CONDITIONS)
    generator_size: str = generator_size_option()
    image_size: tuple[int, ...] | None = option(None, HELP["image_size"] + "; square only (none: the size's: 16 "
                                                "micro, 32 tiny, 64 small and base)")
    epochs: int = option(50, HELP["epochs"])
    batch_size: int = batch_size_option(32)
    lr: float = option(5e-4, HELP["lr"])
    weight_decay: float = like_train("weight_decay", 0.0)
    ema: float | None = like_train("ema", 0.999)
    p_uncond: float = option(0.1, "fraction of the training conditions replaced by the null one (classifier-free "
                             "guidance)")
    flips: bool = option(True, "train on the 8 flips and rotations of each image")
    val_frac: float = like_train("val_frac", 0.05)
    prediction: str = option("v_prediction", "what the network predicts: the velocity (stable at every noise level "
                             "with few training steps) or the noise ε", choices=PREDICTIONS)
    timesteps: int = option(1000, "diffusion steps of the noise schedule (squared-cosine betas)", cli=False)
    seed: int = seed_option()
    device: str = device_option()
    threads: int | None = option(None, "torch threads (none: $GALMO_THREADS, else every core)", cli=False)
    precision: str = like_train("precision")
    resume: bool = option(False, HELP["resume"])
    checkpoint_minutes: float = like_train("checkpoint_minutes")
    max_images: int | None = option(None, HELP["max_images"])
    kind: str = option("image", "which images of the source to train on", cli=False)
    grid_per_class: int = option(4, "sample this many images per class for the report's grid at the end (0: none)")
    grid_steps: int = option(25, "sampler steps of the report's grid", cli=False)
    grid_guidance: float = option(3.0, "guidance scale of the report's grid", cli=False)
    stop_after_steps: int | None = option(None, "stop (resumable) after this many steps (testing the resume)",
                                          cli=False)
    progress: bool = progress_option()
    on_error: str = on_error_option()


def generator_run_option():
    return option(None, "a run folder made by `galmo train-generator`", metavar="RUN")


STEPS_HELP = "sampler steps (DDIM or DPM-Solver++ over the trained noise schedule)"
GUIDANCE_HELP = "classifier-free guidance scale: 1 = the conditional model alone, larger = closer to the condition"


@dataclass
class GenerateConfig(Config):
    """``galmo generate``: N galaxies of one condition into a Galaxy10-schema HDF5."""

    method = "generate"

    generator: str = generator_run_option()
    out: str = option(None, "output .h5 (Galaxy10 schema: any galmo verb reads it)", metavar="FILE")
    class_name: str | None = option(None, "the Galaxy10 class to generate, e.g. 'Cigar Shaped Smooth'", flag="class",
                                    metavar="NAME")
    votes: str | None = option(None, "a .json file with the 37 vote fractions to generate from (a list, or "
                               "{'Class1.1': ...})", metavar="FILE")
    like: str | None = option(None, "generate from the vote fractions of this galaxy of --data", metavar="ID")
    data: str | None = option(None, HELP["data"] + "; where --like looks (none: the generator's training source)",
                              metavar="SOURCE")
    n: int = option(200, "number of galaxies")
    guidance: float = option(3.0, GUIDANCE_HELP)
    steps: int = option(25, STEPS_HELP)
    sampler: str = option("ddim", "ddim (DDIMScheduler, η = 0) or dpm (DPMSolverMultistepScheduler)",
                          choices=SAMPLERS)
    seed: int = seed_option()
    batch_size: int = batch_size_option(64)
    device: str = device_option()
    progress: bool = progress_option()


@dataclass
class FidelityConfig(Config):
    """``galmo fidelity``: how close a generator's galaxies are to real ones of the class they were asked for
    (:func:`galmo.methods.generative.fidelity.measure_fidelity`); written into the generator's run folder."""

    method = "fidelity"

    generator: str = generator_run_option()
    data: str | None = option(None, HELP["data"] + "; the real, labelled galaxies to compare with (none: the "
                              "generator's training source)", metavar="SOURCE")
    judge: str | None = option(None, "a `galmo train` class run that classifies the generated galaxies "
                               "(conditional fidelity; best trained on balanced real data)", metavar="RUN")
    per_class: int = option(20, "generated galaxies per class; the real side draws twice as many and splits them "
                            "in halves for the real-vs-real floor")
    morphology: bool = option(True, "also compare statmorph's Gini, M20, C, A and Sérsic n (about 0.3 s a galaxy)")
    guidance: float = option(3.0, GUIDANCE_HELP)
    steps: int = option(25, STEPS_HELP)
    seed: int = seed_option()
    device: str = device_option()
    progress: bool = progress_option()


@dataclass
class AugmentConfig(Config):
    """``galmo augment``: the rare-class experiment (GalaxySD's question, on sims, with honest baselines)."""

    method = "augment"

    out: str = option(None, "experiment folder (sims, the generator, one classifier run per arm and seed, the "
                      "table, the report)")
    rare_class: str = option("Merging", "the class made rare in the training set")
    rare_frac: float = option(0.02, "its fraction of the training set")
    n_train: int = option(1000, "galaxies in the (imbalanced) training set")
    n_test_per_class: int = option(30, "galaxies per class in the balanced held-out set")
    n_generated: int = option(100, "generated images of the rare class added in the augmented arm")
    n_reference_per_class: int = option(40, "galaxies per class in the balanced reference set (real side of the "
                                        "fidelity measures; training set of the classifier that judges them)")
    fidelity_per_class: int = option(20, "generated galaxies per class for the fidelity measures (0: none)")
    rare_feature: str = option("none", "also run the rare-feature case: dust_lane = edge-on discs with a dust lane, "
                               "rare (--rare-frac) in an edge-on training set, generated from their vote vectors by a "
                               "vote-conditioned generator", choices=("none", "dust_lane"))
    judge_epochs: int = option(30, "epochs of the classifier trained on the balanced reference set that judges the "
                               "generated galaxies (8 epochs of 400 galaxies left it at chance)")
    generator_size: str = generator_size_option()
    generator_updates: int = option(10_000, "optimizer steps of each generator's training (a DDPM wants 10⁴–10⁵; "
                                    "the epochs follow from the training set and --generator-batch-size)")
    generator_batch_size: int = option(16, "batch size of the generators' training")
    generator_precision: str = option("fp32", "the generators' training arithmetic: bf16 autocast is 1.4–1.5× "
                                      "faster on CPUs with AVX-512 BF16 or AMX (measured on the tiny U-Net)",
                                      choices=PRECISIONS)
    classifier_epochs: int = option(8, "epochs of each classifier's training")
    width: int = like_train("width", 16)
    lr: float = option(3e-3, HELP["lr"] + "; of the classifiers")
    guidance: float = option(3.0, GUIDANCE_HELP)
    steps: int = option(25, STEPS_HELP)
    seeds: tuple[int, ...] = like_train("seeds", (0, 1, 2), of=DataEfficiencyConfig)  # the sims and the generator
    # are shared; per seed: the classifiers' split and initialisation, the generated subset
    device: str = device_option()
    progress: bool = progress_option()
