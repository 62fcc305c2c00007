"""The one checkpoint format: safetensors weights + a JSON config. Loading never unpickles.

A checkpoint folder holds ``model.safetensors`` and ``config.json``::

    {"format": "galmo-checkpoint", "version": 1, "galmo": "0.1.0",
     "model": {"name": "<registry name>", "kwargs": {...}}, ... anything else the caller adds}

Training state for ``--resume`` (optimizer moments, step counters, RNG) lives beside it in
``train_state.safetensors`` + ``train_state.json``. Everything is written atomically.

The resumable checkpoint of a run folder, ``last/``, is written as one set (:func:`save_resumable`):
every file goes into ``last.tmp/``, each file and folder is flushed to disk (``os.fsync``), then the
folders are swapped by renames (``last`` → ``last.old``, ``last.tmp`` → ``last``, the run folder
fsynced, ``last.old`` removed). A kill at any moment therefore leaves either the previous complete
checkpoint or the new complete one: ``last/``, or ``last.old/`` in the instant between the two
renames, which :func:`resumable_dir` reads and :func:`recover_resumable` moves back.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from galmo import __version__
from galmo.core.errors import GalmoError
from galmo.core.io import atomic_path, write_json

FORMAT = "galmo-checkpoint"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"
LAST = "last"            # the resumable checkpoint of a run folder
LAST_TMP = "last.tmp"    # the next one, being written (never read)
LAST_OLD = "last.old"    # the previous one, for the instant of the swap


def _tensors_to_file(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _dedupe_shared(state: dict) -> dict:
    """safetensors refuses tensors that share memory (tied weights): store a copy of each."""
    seen: dict[int, str] = {}
    out = {}
    for k, v in state.items():
        key = (v.data_ptr(), v.numel(), v.dtype) if v.numel() else None
        out[k] = v.clone() if key is not None and key in seen else v
        if key is not None:
            seen[key] = k
    return out


def save_checkpoint(folder: str | os.PathLike, model, model_name: str, model_kwargs: dict,
                    extra: dict[str, Any] | None = None, config=None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``folder``.

    ``config``: a :class:`galmo.core.config.Config`; then ``config.json`` is written by its
    ``save()`` ({"method", "config", "versions"} plus the checkpoint's keys), so one file both
    re-runs the run (``galmo run``) and loads the model (:func:`load_checkpoint`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _tensors_to_file(_dedupe_shared(model.state_dict()), folder / MODEL_FILE, metadata={"format": FORMAT})
    cfg = {"format": FORMAT, "version": 1, "galmo": __version__,
           "model": {"name": model_name, "kwargs": model_kwargs}}
    cfg.update(extra or {})
    if config is not None:
        config.save(folder, **cfg)
    else:
        write_json(folder / CONFIG_FILE, cfg)
    return folder


def read_config(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    p = folder / CONFIG_FILE
    if not p.exists():
        raise GalmoError(f"not a galmo checkpoint: {CONFIG_FILE} missing (expected {MODEL_FILE} + {CONFIG_FILE})",
                         path=folder)
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise GalmoError(f"config is not valid JSON ({e})", path=p) from None
    if cfg.get("format") != FORMAT:
        raise GalmoError(f"not a galmo checkpoint config (format={cfg.get('format')!r})", path=p)
    return cfg


def load_state_dict(path: str | os.PathLike) -> dict:
    """Weights from a ``.safetensors`` file (safe by construction)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise GalmoError("weights file not found", path=path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise GalmoError(f"cannot read safetensors weights ({e})", path=path) from None


def load_checkpoint(folder: str | os.PathLike, device="cpu"):
    """Rebuild the model named in ``config.json`` and load its weights. Returns (model, config)."""
    from galmo.nn.models import create

    folder = Path(folder)
    cfg = read_config(folder)
    kwargs = dict(cfg["model"].get("kwargs", {}))
    if "weights" in kwargs:  # pretrained init is irrelevant: the checkpoint holds every weight
        kwargs["weights"] = None
    model = create(cfg["model"]["name"], **kwargs)
    state = load_state_dict(folder / MODEL_FILE)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise GalmoError(f"weights do not match model {cfg['model']['name']!r}: missing {list(missing)[:5]}, "
                         f"unexpected {list(unexpected)[:5]}", path=folder / MODEL_FILE)
    return model.to(device).eval(), cfg


# ---------------------------------------------------------------- training state (resume)

def save_train_state(folder: str | os.PathLike, optimizer, scalars: dict, rng: dict | None = None) -> None:
    """Optimizer moments and counters for an exact resume. Tensors → safetensors, the rest → JSON."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = optimizer.state_dict()
    tensors, state_meta = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            import torch

            if isinstance(v, torch.Tensor):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                state_meta.setdefault(str(pid), {})[k] = v
    for k, v in (rng or {}).items():
        tensors[f"rng.{k}"] = v
    _tensors_to_file(tensors, folder / STATE_FILE)
    write_json(folder / STATE_JSON, {"param_groups": sd["param_groups"], "state_meta": state_meta,
                                     "scalars": scalars})


def load_train_state(folder: str | os.PathLike, optimizer) -> tuple[dict, dict]:
    """Restore the optimizer in place; return (scalars, rng tensors)."""
    folder = Path(folder)
    if not (folder / STATE_JSON).exists():
        raise GalmoError("no training state to resume from (train_state.json missing)", path=folder)
    meta = json.loads((folder / STATE_JSON).read_text())
    tensors = load_state_dict(folder / STATE_FILE)
    state: dict = {}
    rng = {}
    for k, v in tensors.items():
        kind, rest = k.split(".", 1)
        if kind == "rng":
            rng[rest] = v
            continue
        pid, name = rest.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    for pid, st in meta["state_meta"].items():
        state.setdefault(int(pid), {}).update(st)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["scalars"], rng


# ---------------------------------------------------------------- the resumable set last/ (crash-safe)

def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file and folder under ``folder`` (and ``folder`` itself) to the disk."""
    folder = Path(folder)
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (renames, new files); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_resumable(run_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write the resumable checkpoint ``run_dir/last/`` as one consistent set: ``write(folder)`` fills
    a fresh ``last.tmp/``, which is fsynced and swapped in by renames (see the module docstring)."""
    run_dir = Path(run_dir)
    last, tmp, old = run_dir / LAST, run_dir / LAST_TMP, run_dir / LAST_OLD
    if tmp.exists():  # a save killed half-way: never the only complete checkpoint
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp)
    fsync_tree(tmp)
    if last.exists():
        if old.exists():  # last/ is complete, so last.old/ is not needed
            shutil.rmtree(old)
        os.rename(last, old)
    os.rename(tmp, last)
    fsync_dir(run_dir)
    if old.exists():
        shutil.rmtree(old)
    return last


def resumable_dir(run_dir: str | os.PathLike) -> Path | None:
    """The complete resumable checkpoint of ``run_dir`` (``last/``, or ``last.old/`` when a save was
    killed between its two renames); None when there is none. Reads only."""
    run_dir = Path(run_dir)
    for name in (LAST, LAST_OLD):
        if (run_dir / name / STATE_JSON).exists():
            return run_dir / name
    return None


def recover_resumable(run_dir: str | os.PathLike) -> Path | None:
    """:func:`resumable_dir`, moved back to ``last/`` when needed, the half-written ``last.tmp/`` removed."""
    run_dir = Path(run_dir)
    found = resumable_dir(run_dir)
    if found is not None and found.name == LAST_OLD:
        if (run_dir / LAST).exists():  # an incomplete last/ (not made by save_resumable)
            shutil.rmtree(run_dir / LAST)
        os.rename(found, run_dir / LAST)
        fsync_dir(run_dir)
        found = run_dir / LAST
    if (run_dir / LAST_TMP).exists():
        shutil.rmtree(run_dir / LAST_TMP)
    return found
