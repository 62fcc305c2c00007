"""One dataclass per method: every option, its default and its help written once.

A method's ``config.py`` declares ``@dataclass class XConfig(Config)`` with fields made by
:func:`option`. From that one declaration come

* the command-line flags (:func:`add_options`: ``--name-with-dashes``, type from the annotation,
  booleans as ``--x/--no-x``, the default shown in the help), read back by :meth:`Config.from_args`;
* ``config.json`` in the run folder (:meth:`Config.save`: the fields plus the method name and the
  library versions), loaded back by :meth:`Config.load` (``galmo run CONFIG.json`` re-runs it).

Framework-free: importing this module imports no torch (the CLI builds its parser from configs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from galmo.core.errors import GalmoError

CONFIG_FILE = "config.json"
VERSIONED = ("galmo", "numpy", "scipy", "scikit-learn", "astropy", "torch", "timm", "galsim", "faiss-cpu",
             "onnxruntime", "diffusers")


def option(default: Any = None, help: str = "", *, flag: str | None = None, choices=None, metavar: str | None = None,
           cli: bool = True, short: str | None = None, default_factory=None):
    """A config field with its command-line help. ``flag``: the flag's name when it is not the field's
    name with dashes; ``cli=False``: a library-only setting (still saved in config.json); ``short``:
    an extra short flag such as ``-k``. Lists and tuples take ``default_factory`` or a tuple default."""
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "cli": cli, "short": short}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a result depends on (from package metadata: no imports)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _base_type(tp) -> tuple[type, bool, bool]:
    """(element type, optional, sequence) of an annotation such as ``int | None`` or ``tuple[int, ...]``."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else str  # a union of several types is parsed as text
        origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return (args[0] if args else str), optional, True
    return tp, optional, False


@dataclasses.dataclass
class Config:
    """Base of every method's config. Subclasses set ``method`` (the verb that runs them)."""

    method: ClassVar[str] = ""

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict, path=None):
        """The config from a dict of field values; unknown keys are an error (a typo must not pass)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise GalmoError(f"unknown {cls.method or cls.__name__} setting(s): {', '.join(unknown)}", path=path)
        hints = typing.get_type_hints(cls)
        kw = {}
        for k, v in d.items():
            _, _, seq = _base_type(hints[k])
            kw[k] = tuple(v) if seq and isinstance(v, list) and typing.get_origin(
                _strip_optional(hints[k])) is tuple else v
        return cls(**kw)

    def save(self, run_dir, **extra) -> Path:
        """``run_dir/config.json``: {"method", "config": fields, "versions", **extra}, written atomically."""
        from galmo.core.io import write_json

        return write_json(Path(run_dir) / CONFIG_FILE, {"method": self.method, "config": self.to_dict(),
                                                        "versions": library_versions(), **extra})

    @classmethod
    def load(cls, path):
        """The config saved by :meth:`save` (a run folder or its config.json)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        d = read_config_file(path)
        if cls.method and d.get("method") != cls.method:
            raise GalmoError(f"this is a {d.get('method')!r} config, not {cls.method!r}", path=path)
        return cls.from_dict(d.get("config", {}), path=path)

    # ------------------------------------------------------------------ command line
    @classmethod
    def from_args(cls, args: argparse.Namespace, **override):
        """The config from parsed flags made by :func:`add_options` (fields without a flag keep their
        defaults unless given in ``override``)."""
        kw = {}
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in override:
                kw[f.name] = override[f.name]
            elif f.metadata.get("cli", True) and hasattr(args, f.name):
                v = getattr(args, f.name)
                if isinstance(v, list) and typing.get_origin(_strip_optional(hints[f.name])) is tuple:
                    v = tuple(v)
                kw[f.name] = v
        return cls(**kw)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _strip_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, os.PathLike):
        return str(v)
    return v


def read_config_file(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise GalmoError("no such config file", path=path)
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GalmoError(f"config is not valid JSON ({e})", path=path) from None
    if not isinstance(d, dict):
        raise GalmoError("config must be a JSON object", path=path)
    return d


def add_options(parser: argparse.ArgumentParser, cls: type[Config], *, exclude=(), only=None,
                required=()) -> None:
    """Add one flag per field of ``cls`` (except ``exclude``; only ``only`` when given) to ``parser``.
    Every flag gets its help and its shown default; ``required`` fields become required flags."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or f.name in exclude or (only is not None and f.name not in only):
            continue
        m = f.metadata
        flag = "--" + (m.get("flag") or f.name.replace("_", "-"))
        names = [flag] + ([m["short"]] if m.get("short") else [])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        tp, optional, seq = _base_type(hints[f.name])
        help_ = m.get("help") or ""
        if not help_:
            raise TypeError(f"{cls.__name__}.{f.name} has no help text")
        kw: dict[str, Any] = {"dest": f.name, "help": help_}
        if f.name in required:
            kw["required"] = True
        else:
            kw["default"] = list(default) if isinstance(default, tuple) else default
            shown = ("none" if default is None else " ".join(map(str, default)) if isinstance(default, (list, tuple))
                     else str(default).lower() if isinstance(default, bool) else str(default))
            kw["help"] = f"{help_} (default: {shown})".replace("%", "%%")
        if tp is bool and not seq:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
            continue
        if tp in (int, float, str):
            kw["type"] = tp
        if seq:
            kw["nargs"] = "+"
        if m.get("choices"):
            kw["choices"] = list(m["choices"])
        if m.get("metavar"):
            kw["metavar"] = m["metavar"]
        parser.add_argument(*names, **kw)


# ---------------------------------------------------------------------- the shared vocabulary
# A flag that several verbs take means the same everywhere: configs declare these fields with the
# factories below, never with their own help text.
HELP = {
    "data": "image source: Galaxy10 HDF5, FITS file or folder, PNG/JPEG folder, GZ2 CSV, or a catalog "
            "(see galmo info)",
    "device": "auto (CUDA when present), cpu, cuda, cuda:1 ...",
    "seed": "random seed; the same seed and data give the same result",
    "on_error": "bad input: stop with a message (raise) or skip it and list it in rejected.csv (skip)",
    "batch_size": "images per batch",
    "progress": "progress bars",
    "emb": "embeddings .parquet written by galmo embed",
    "epochs": "passes over the training images",
    "lr": "peak learning rate (AdamW, warm-up then cosine decay)",
    "max_images": "use a seeded random subset of this many galaxies (none: all)",
    "resume": "continue the interrupted run in --out from its last checkpoint",
    "image_size": "pixels the images are resized to before the network: one number (square) or HEIGHT WIDTH",
    "augment": "augment the training images on the fly",
    "val_frac": "fraction of the images held out to validate the loss",
    "weights": "the backbone's initial weights: offline (packaged), FILE (.safetensors or state dict), hub (download) "
               "or none (random)",
    "backbone": "timm model name",
    "dihedral_mean": "embed as the mean over the 8 rotations by 90° and flips of the square",
    "tta": "average the predictions over N test-time transforms (8 = the dihedral group)",
    "run": "a run folder made by `galmo train`; several: an ensemble (probabilities averaged)",
    "checkpoint_every": "also save the resumable state every N optimizer steps (0: off)",
    "backend": "inference engine: auto (ONNX Runtime on CPU, PyTorch on CUDA), torch or onnx (ONNX Runtime; "
               "a model that does not export runs with PyTorch, with a warning)",
    "checkpoint_minutes": "save the resumable state at least every this many minutes (and at epoch ends)",
    "framing": "how images of another size reach the model's input (galmo.core.resample): resize (centre-crop "
               "to its aspect ratio, antialiased bilinear: the galaxy fills the same fraction of the frame) or "
               "crop (pixel scale kept: centre-crop, or zero-pad)",
    "crop_frac": "keep the central fraction of each image's side before --framing (1: the whole frame; 0.5 "
                 "zooms in 2x)",
}


def data_option():
    return option(None, HELP["data"], metavar="SOURCE")


def device_option():
    return option("auto", HELP["device"])


def seed_option():
    return option(0, HELP["seed"])


def on_error_option():
    return option("raise", HELP["on_error"], choices=("raise", "skip"))


def batch_size_option(default: int):
    return option(default, HELP["batch_size"])


def progress_option():
    return option(True, HELP["progress"])


BACKENDS = ("auto", "torch", "onnx")


def backend_option():
    return option("auto", HELP["backend"], choices=BACKENDS)


def framing_option(none: str = "the model's, recorded when it was trained"):
    """``--framing`` (:mod:`galmo.core.resample`); None: ``none``."""
    return option(None, f"{HELP['framing']} (none: {none})", choices=("resize", "crop"))


def crop_frac_option(none: str = "the model's, recorded when it was trained"):
    """``--crop-frac`` (:mod:`galmo.core.resample`); None: ``none``."""
    return option(None, f"{HELP['crop_frac']} (none: {none})")
