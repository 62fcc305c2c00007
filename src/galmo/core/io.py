"""Crash-safe output: every file is written to a temporary name beside its target and renamed.

A crash (or Ctrl-C) therefore never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the suffix of ``path`` so that libraries choosing a format by
    extension (matplotlib, astropy, pandas) still do the right thing. An OSError while creating,
    writing or renaming becomes a :class:`~galmo.core.errors.GalmoError` naming ``path`` (never the
    temporary name).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _write_error(e, path, None) from e
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise _write_error(e, path, tmp) from e
        raise


def _write_error(e: OSError, path: Path, tmp: Path | None):
    """The GalmoError for an OSError while writing ``path``: the reason, with ``tmp`` never named."""
    from galmo.core.errors import GalmoError

    reason = e.strerror or str(e) or type(e).__name__
    if tmp is not None:
        reason = reason.replace(str(tmp), str(path)).replace(tmp.name, path.name)
    return GalmoError(f"cannot write this file ({reason})", path=path)


OUT_KINDS = ("dir", "file")


def check_output(path: str | os.PathLike, kind: str = "dir", log=print) -> Path:
    """Check, before any work, that ``path`` can be written as a folder (``kind='dir'``: a run folder)
    or a file (``'file'``); returns it as a Path.

    The parent folder (and the folder itself for an existing ``'dir'``) must be a folder we can
    write in: a missing parent is created and ``log`` says so. A problem raises GalmoError naming
    ``path`` as the user gave it: not a folder where one is needed (a path under a regular file,
    an existing file for a run folder), a folder where a file is needed, or no permission.
    """
    from galmo.core.errors import GalmoError

    if kind not in OUT_KINDS:
        raise ValueError(f"kind must be one of {OUT_KINDS}, got {kind!r}")
    user, p = str(path), Path(path).expanduser()
    try:
        return _check_output(p, user, kind, log)
    except OSError as e:  # e.g. a folder on the way that we may not look into
        raise GalmoError(f"cannot check this path ({e.strerror or e})", path=user) from e


def _check_output(p: Path, user: str, kind: str, log) -> Path:
    from galmo.core.errors import GalmoError

    if kind == "file" and (p.is_dir() or user.endswith(("/", os.sep))):
        raise GalmoError("is a folder, but a file name is needed here", path=user)
    if kind == "dir" and p.exists() and not p.is_dir():
        raise GalmoError("is a file, but a folder is needed here (a run folder)", path=user)
    folder = p if kind == "dir" and p.is_dir() else p.parent
    _make_folder(folder, user, log)
    try:
        fd, probe = tempfile.mkstemp(prefix=".galmo-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise GalmoError(f"cannot write in the folder {folder} ({e.strerror or e})", path=user) from e
    return p


def _make_folder(folder: Path, user: str, log) -> None:
    """Create ``folder`` (and its parents) unless it exists; GalmoError if a part of it is a file."""
    from galmo.core.errors import GalmoError

    existing = next((a for a in (folder, *folder.parents) if a.exists()), None)
    if existing is not None and not existing.is_dir():
        raise GalmoError(f"{existing} is a file, not a folder", path=user)
    if existing == folder:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GalmoError(f"cannot create the folder {folder} ({e.strerror or e})", path=user) from e
    if log is not None:
        log(f"created folder {folder}")


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cache_dir() -> Path:
    """Where galmo caches generated data (``$GALMO_CACHE`` or ``~/.cache/galmo``)."""
    d = Path(os.environ.get("GALMO_CACHE", Path.home() / ".cache" / "galmo"))
    d.mkdir(parents=True, exist_ok=True)
    return d
