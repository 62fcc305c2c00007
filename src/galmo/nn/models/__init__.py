"""Model registry (timm-style): one family per file, models created by name.

A family module decorates its constructors with :func:`register_model`; :func:`create` imports
every family listed in ``FAMILIES`` on first use.
"""

from __future__ import annotations

import importlib
from typing import Callable

from galmo.core.errors import GalmoError

FAMILIES = [
    "galmo.nn.models.timm_models",
    "galmo.nn.models.patch_transformer",
    "galmo.nn.models.autoencoder",
    "galmo.nn.models.cnn",
    "galmo.nn.models.rotinv",
    "galmo.nn.models.astroformer",
    "galmo.nn.models.diffusion",
    "galmo.nn.models.contrastive",
]
_REGISTRY: dict[str, Callable] = {}
_loaded = False


def register_model(fn: Callable | None = None, *, name: str | None = None):
    def deco(f):
        _REGISTRY[name or f.__name__] = f
        return f

    return deco(fn) if fn is not None else deco


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for fam in FAMILIES:
            importlib.import_module(fam)
        _loaded = True


def list_models() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def create(name: str, **kwargs):
    _load_families()
    if name not in _REGISTRY:
        raise GalmoError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)
