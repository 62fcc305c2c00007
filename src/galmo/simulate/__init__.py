"""GalSim simulator of galaxies of the ten Galaxy10 classes as DECaLS (galmo's embedded default data), SDSS, HST
or a randomised mixture of surveys would see them.

>>> from galmo.simulate import simulate, default_sample
>>> path = simulate(200, size=64, seed=0, out="sims.h5")      # doctest: +SKIP
>>> path = default_sample()                                  # doctest: +SKIP

Modules: ``physics`` (cosmology, selection, sizes, colours, depth), ``profiles`` (GalSim rendering,
arms, dust, PSF, noise), ``classes`` (the ten recipes), ``anomalies``, ``votes`` (simulated Galaxy Zoo
volunteers), ``render`` (one galaxy), ``run`` (the driver and the files), ``config`` (the flags of
``galmo simulate``). See docs/simulator.md.

The names below are loaded on first use, so that ``galmo.simulate.config`` (read when the CLI
builds its parser) imports nothing else.
"""

import importlib

__all__ = ["simulate", "default_sample", "DEFAULT_N", "DEFAULT_SIZE", "RECIPE_VERSION", "ANOMALY_TYPES",
           "parse_class_weights", "truth_path", "class_montage", "survey_montage"]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("galmo.simulate.run"), name)
    raise AttributeError(f"module 'galmo.simulate' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
