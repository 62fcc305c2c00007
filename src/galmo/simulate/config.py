"""Settings of ``galmo simulate`` (no heavy imports: the CLI builds its flags from them)."""

from __future__ import annotations

from dataclasses import dataclass

from galmo.core.config import Config, option, progress_option, seed_option
from galmo.core.schemas import SCHEMA_NAMES
from galmo.simulate.surveys import SURVEY_NAMES


# campaigns whose counts the simulator can add (gz2-kaggle: its fractions are always in the truth table)
VOTE_SCHEMAS = tuple(n for n in SCHEMA_NAMES if n != "gz2-kaggle")


@dataclass
class SimulateConfig(Config):
    """The arguments of :func:`galmo.simulate.simulate`, one flag each."""

    method = "simulate"

    n: int = option(None, "number of galaxies")
    out: str = option(None, "output .h5 (a .truth.parquet is written beside it)", metavar="FILE")
    size: int = option(64, "cutout size in pixels; the field of view follows the galaxy size as in Galaxy10 "
                           "DECaLS, so the pixel scale is per galaxy (dataset pxscale)")
    class_weights: str | None = option(None, "class balance: omit (or 'balanced') for balanced classes, 'rare:Merging=0.02', or "
                                             "'Merging=2,Round Smooth=1'")
    anomalies: float = option(0.0, "fraction of galaxies with an injected anomaly")
    noiseless: bool = option(True, "also store the noiseless images")
    workers: int | None = option(None, "processes (none: all cores)")
    survey: str = option("decals", "how the galaxies are observed: decals (GZ DECaLS g,r,z), sdss (GZ2-like g,r,i, "
                                   "shallower, worse seeing, JPEG), hst (ACS F606W+F814W, sharp, deep, JPEG) or random "
                                   "(a survey drawn per galaxy from broad ranges: domain randomisation)",
                         choices=SURVEY_NAMES)
    vote_schema: str | None = option(None, "also write simulated volunteers' vote counts of this Galaxy Zoo campaign "
                                           "into the truth table (galaxy-datasets column names, <question>_total-votes); "
                                           "the GZ2 Kaggle fractions are always there", choices=VOTE_SCHEMAS)
    seed: int = seed_option()
    progress: bool = progress_option()

    def kwargs(self) -> dict:
        """The keyword arguments of :func:`galmo.simulate.simulate`."""
        return self.to_dict()
