"""A fitted clustering Pipeline saved without pickle: its arrays in ``<run>/fitted.npz`` (read with
``allow_pickle=False``), everything else in ``<run>/fitted.json``.

Every object of the Pipeline is one of the galmo stages (not the denoiser), scikit-learn's ``Pipeline`` or ``Birch``
(:data:`CLASSES`: nothing else is ever made from the files): its attributes are written as JSON (numbers,
strings, lists, dicts, paths) with each array replaced by its key in the ``.npz``. What cannot be
written so is rebuilt on loading from what was (:func:`_revive`): the encoder's network from its
weights (``offline`` or a file, never random), the neighbour index of the graph embedding from its
fitted galaxies, Birch from its subclusters (all it predicts from).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from galmo.core.errors import GalmoError

STATE_FILES = ("fitted.npz", "fitted.json")  # the arrays first: the JSON, written last, says it is complete
SKIP = {"model_", "nn_"}  # rebuilt by _revive
BIRCH = ("threshold", "branching_factor", "subcluster_centers_", "subcluster_labels_", "_subcluster_norms",
         "n_features_in_")


def _classes() -> dict:
    from sklearn.cluster import Birch
    from sklearn.pipeline import Pipeline

    from galmo.stages import (AutoPCA, Encoder, GraphEmbedding, InvariantFeatures, InvariantProjection,
                              PolarUnwrap, VotingClustering)
    from galmo.stages.voting import _Member

    return {c.__name__: c for c in (Pipeline, Birch, AutoPCA, Encoder, GraphEmbedding, InvariantFeatures,
                                    InvariantProjection, PolarUnwrap, VotingClustering, _Member)}


def pack(value, arrays: dict, key: str = "x"):
    """``value`` as JSON, its arrays added to ``arrays`` under keys derived from ``key``."""
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"array": key}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return {"path": str(value)}
    if isinstance(value, (list, tuple)):
        return {"tuple" if isinstance(value, tuple) else "list": [pack(v, arrays, f"{key}.{i}")
                                                                  for i, v in enumerate(value)]}
    if isinstance(value, dict):
        return {"dict": [[pack(k, arrays, f"{key}.k{i}"), pack(v, arrays, f"{key}.{i}")]
                         for i, (k, v) in enumerate(value.items())]}
    name = type(value).__name__
    if name not in _classes():
        raise GalmoError(f"cannot save a fitted {name} of the pipeline")
    attrs = vars(value) if name != "Birch" else {a: getattr(value, a) for a in BIRCH}
    return {"object": name, "attrs": {a: pack(v, arrays, f"{key}.{a}") for a, v in attrs.items() if a not in SKIP}}


def unpack(node, arrays, classes: dict):
    """The value :func:`pack` wrote (objects only of ``classes``)."""
    if not isinstance(node, dict):
        return node
    if "array" in node:
        return arrays[node["array"]]
    if "path" in node:
        return Path(node["path"])
    for kind, make in (("list", list), ("tuple", tuple)):
        if kind in node:
            return make(unpack(v, arrays, classes) for v in node[kind])
    if "dict" in node:
        return {unpack(k, arrays, classes): unpack(v, arrays, classes) for k, v in node["dict"]}
    if node.get("object") not in classes:
        raise GalmoError(f"unknown object {node.get('object')!r} in a saved pipeline")
    obj = object.__new__(classes[node["object"]])
    obj.__dict__.update({a: unpack(v, arrays, classes) for a, v in node["attrs"].items()})
    return _revive(obj)


def _revive(obj):
    """Rebuild what :func:`pack` left out: the encoder's network, the graph's neighbour index."""
    name = type(obj).__name__
    if name == "Encoder" and hasattr(obj, "n_features_"):
        obj.fit()
    elif name == "GraphEmbedding" and hasattr(obj, "fit_X_"):
        from sklearn.neighbors import NearestNeighbors

        obj.nn_ = NearestNeighbors(n_neighbors=min(obj.n_neighbors, obj.n_fit_)).fit(obj.fit_X_)
    return obj


def save_fitted(run_dir, pipe, extra: dict) -> Path:
    """Write ``pipe`` and ``extra`` (arrays, numbers, lists) as :data:`STATE_FILES` in ``run_dir``."""
    from galmo.core.io import atomic_path, write_json

    arrays: dict = {}
    tree = {"pipeline": pack(pipe, arrays, "pipe"), "extra": pack(extra, arrays, "extra")}
    run_dir = Path(run_dir)
    with atomic_path(run_dir / STATE_FILES[0]) as tmp:
        np.savez(tmp, **arrays)
    return write_json(run_dir / STATE_FILES[1], tree)


def saved_extra(run_dir, key: str):
    """The value ``key`` of the ``extra`` that :func:`save_fitted` wrote (one without arrays), without
    rebuilding the pipeline; None when there is none."""
    from galmo.core.io import read_json

    items = dict((k, v) for k, v in read_json(Path(run_dir) / STATE_FILES[1])["extra"]["dict"])
    return unpack(items[key], {}, {}) if key in items else None


def load_fitted(run_dir) -> tuple:
    """(the pipeline, ``extra``) that :func:`save_fitted` wrote in ``run_dir``; GalmoError naming the
    file when it is missing or unreadable."""
    from galmo.core.io import read_json

    npz, js = (Path(run_dir) / f for f in STATE_FILES)
    try:
        tree = read_json(js)
        with np.load(npz, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise GalmoError(f"cannot read the fitted pipeline ({type(e).__name__}: {e})", path=js) from None
    classes = _classes()
    try:
        return unpack(tree["pipeline"], arrays, classes), unpack(tree["extra"], arrays, classes)
    except (KeyError, TypeError) as e:
        raise GalmoError(f"not a fitted pipeline of galmo cluster (missing {e})", path=js) from None
