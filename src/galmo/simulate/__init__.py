"""GalSim simulator of DECaLS-like galaxies of the ten Galaxy10 classes: galmo's embedded default data.

>>> from galmo.simulate import simulate, default_sample
>>> path = simulate(200, size=64, seed=0, out="sims.h5")      # doctest: +SKIP
>>> path = default_sample()                                  # doctest: +SKIP

Modules: ``physics`` (cosmology, selection, sizes, colours, depth), ``profiles`` (GalSim rendering,
arms, dust, PSF, noise), ``classes`` (the ten recipes), ``anomalies``, ``votes`` (simulated Galaxy Zoo
volunteers), ``render`` (one galaxy), ``run`` (the driver and the files). See docs/simulator.md.
"""

from galmo.simulate.run import (ANOMALY_TYPES, DEFAULT_N, DEFAULT_SIZE, RECIPE_VERSION, class_montage,
                                default_sample, parse_class_weights, simulate, truth_path)

__all__ = ["simulate", "default_sample", "DEFAULT_N", "DEFAULT_SIZE", "RECIPE_VERSION", "ANOMALY_TYPES",
           "parse_class_weights", "truth_path", "class_montage"]
