"""galmo: galaxy morphology from survey images.

Catalog-first: every command reads a source (HDF5, FITS, folders, simulations) that yields a
catalog with an ``id`` column and images, and writes a catalog carrying the same ``id``.
"""

__version__ = "0.1.0"

from galmo.core.errors import GalmoError  # noqa: F401
