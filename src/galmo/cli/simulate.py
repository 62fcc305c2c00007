"""``galmo simulate``: flags from :class:`galmo.simulate.config.SimulateConfig` → :func:`galmo.simulate.simulate`."""

from __future__ import annotations


def register(sub) -> None:
    from galmo.core.config import add_options
    from galmo.simulate.config import SimulateConfig

    p = sub.add_parser("simulate", help="render Galaxy10-like galaxies with GalSim into a Galaxy10-schema HDF5")
    add_options(p, SimulateConfig, required=("n", "out"))
    p.set_defaults(func=cmd_simulate, out_kind="file")


def cmd_simulate(args) -> int:
    from galmo.simulate import simulate, truth_path
    from galmo.simulate.config import SimulateConfig

    out = simulate(**SimulateConfig.from_args(args).kwargs())
    print(f"wrote {out} and {truth_path(out)}")
    return 0
