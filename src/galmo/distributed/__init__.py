"""The Ray Data engine: ``galmo embed|predict|cluster --engine ray`` over a source split into shards.

Every input shard (an HDF5 file of a folder of them, a Parquet/CSV catalog of a folder of them, a
sub-folder of FITS files, or rows of one source) becomes one output Parquet shard with the same
``id`` s and columns as the local path, written by an actor of a Ray Data actor pool that loads the
model once and calls the same library functions as ``--engine local`` on each shard (cluster: the
pipeline fitted once on the driver, :mod:`galmo.distributed.cluster`, saved without pickle,
:mod:`galmo.distributed.fitted`).

Ray is imported only inside :mod:`galmo.distributed.engine`'s functions: this package, its config
and its shard planning import without it (``pip install "galmo[ray]"`` adds it).
"""
