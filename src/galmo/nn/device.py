"""``--device auto``: CUDA when present, else CPU; thread count set once."""

from __future__ import annotations

import os


def resolve_device(name: str = "auto"):
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from galmo.core.errors import GalmoError

        raise GalmoError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def set_threads(n: int | None = None) -> int:
    import torch

    n = n or int(os.environ.get("GALMO_THREADS", 0)) or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n
