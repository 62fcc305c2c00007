"""``galmo simulate``: flags from :class:`galmo.simulate.config.SimulateConfig` → :func:`galmo.simulate.simulate`."""

from __future__ import annotations


def register(sub) -> None:
    from galmo.cli import add_verb
    from galmo.simulate.config import SimulateConfig

    add_verb(sub, "simulate", "render Galaxy10-like galaxies with GalSim into a Galaxy10-schema HDF5", SimulateConfig,
             cmd_simulate, out_kind="file", required=("n", "out"))


def cmd_simulate(args) -> int:
    from galmo.simulate import simulate, truth_path
    from galmo.simulate.config import SimulateConfig

    out = simulate(**SimulateConfig.from_args(args).kwargs())
    print(f"wrote {out} and {truth_path(out)}")
    return 0
