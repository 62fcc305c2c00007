"""The ``galmo`` command: thin verbs over the library.

One module per verb group under ``galmo.cli``: each module listed in ``COMMAND_MODULES`` exposes
``register(subparsers)``, which adds its verbs with ``set_defaults(func=...)``. ``func(args)``
returns an exit status (0 or None for success).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings

from galmo import __version__
from galmo.core.errors import GalmoError, TrainingInterrupted

COMMAND_MODULES = [
    "galmo.cli.simulate",  # simulate
    "galmo.cli.sources",  # info, show
    "galmo.cli.demo",  # demo
    "galmo.cli.embeddings",  # pretrain, embed, similar, outliers, probe
    "galmo.cli.supervised",  # train, predict, evaluate
    "galmo.cli.cluster",  # cluster
    "galmo.cli.generative",  # train-generator, generate, augment
    "galmo.cli.runs",  # run, report
    "galmo.cli.web",  # serve, finetune
]


def add_verb(sub, name: str, help: str, config, func, *, out_kind: str | None = None, required=()):
    """A verb whose flags are the fields of the dataclass ``config`` (:func:`galmo.core.config.add_options`);
    ``func(args)`` runs it; ``out_kind`` ("dir" or "file") is what its ``--out`` names (checked before
    any work). Returns the sub-parser, for verb-specific extras."""
    from galmo.core.config import add_options

    p = sub.add_parser(name, help=help)
    add_options(p, config, required=required)
    p.set_defaults(func=func, out_kind=out_kind)
    return p


def add_common(p: argparse.ArgumentParser, *, device: bool = False, on_error: bool = False,
               seed: bool = False, batch_size: int | None = None) -> None:
    """Options shared by many verbs, with the help of the shared vocabulary
    (:data:`galmo.core.config.HELP`), spelled as :func:`galmo.core.config.add_options` spells them."""
    from galmo.core.config import HELP

    if device:
        p.add_argument("--device", default="auto", help=f"{HELP['device']} (default: auto)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help=f"{HELP['seed']} (default: 0)")
    if on_error:
        p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                       help=f"{HELP['on_error']} (default: raise)")
    if batch_size is not None:
        p.add_argument("--batch-size", type=int, default=batch_size,
                       help=f"{HELP['batch_size']} (default: {batch_size})")


def add_source(p: argparse.ArgumentParser) -> None:
    """The positional SOURCE of the verbs that look at one source (info, show)."""
    from galmo.core.config import HELP

    p.add_argument("path", metavar="SOURCE", help=HELP["data"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galmo", description="Galaxy morphology from survey images.")
    parser.add_argument("--version", action="version", version=f"galmo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Its ``--out`` is checked first (:func:`check_out`), warnings are shown as one
    line each (:func:`one_line_warnings`), GalmoError becomes ``galmo: error: ...`` and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        with one_line_warnings():
            check_out(args)
            rc = args.func(args)
    except GalmoError as e:
        print(f"galmo: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:  # checkpoint saved (a signal or Ctrl-C during training)
        print(f"galmo: interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("galmo: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def check_out(args: argparse.Namespace) -> None:
    """Check the verb's ``--out`` before any work: each verb declares what it writes with
    ``set_defaults(out_kind="dir")`` (a run folder) or ``"file"``; see :func:`galmo.core.io.check_output`."""
    kind, out = getattr(args, "out_kind", None), getattr(args, "out", None)
    if callable(kind):  # what --out names depends on another flag (--engine ray: a folder of shards)
        kind = kind(args)
    if kind is not None and out is not None:
        from galmo.core.io import check_output

        check_output(out, kind)


def _format_warning(message, category=None, filename=None, lineno=None, line=None) -> str:
    return "galmo: warning: " + " ".join(str(message).split()) + "\n"


def _show_warning(message, category=None, filename=None, lineno=None, file=None, line=None) -> None:
    try:
        (file or sys.stderr).write(_format_warning(message))
    except (AttributeError, OSError):  # no stderr (pythonw) or a closed one: nothing to show it on
        pass


@contextlib.contextmanager
def one_line_warnings():
    """During one CLI call: every warning is one line ``galmo: warning: <message>`` on stderr
    (no file name, line number or source line); the caller's warning settings come back after."""
    saved_format = warnings.formatwarning
    with warnings.catch_warnings():  # restores showwarning (and the filters) on exit
        warnings.showwarning, warnings.formatwarning = _show_warning, _format_warning
        try:
            yield
        finally:
            warnings.formatwarning = saved_format


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
