"""The command-line vocabulary: every flag of every verb has help and shows its default, a flag
name means the same thing in every verb that takes it, and the agreed names are the ones in use.

"The same thing" is tested on the help with its "(default: ...)" and "(none: ...)" parts removed
(what a default is, and what "none" falls back to, may differ between verbs: a batch size, the
source named in the embeddings) and on the kind of action, type, choices and nargs:

* a flag of the shared vocabulary (:data:`galmo.core.config.HELP`, e.g. ``--seed`` for ``seed``)
  has that help in every verb, optionally followed by "; " and a qualifier of that verb;
* any other flag that several verbs take has the same help in all of them, except the flags of
  :data:`PER_VERB_HELP`, whose help says what that verb does with it.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import pytest

from galmo.core.config import HELP

# Flags whose help says something per verb (what that verb writes); their type and kind still agree.
PER_VERB_HELP = {"--out": "a run folder for runs, a file for single tables/figures: the help says which"}
# Verbs that run long enough to want --progress/--no-progress.
LONG_VERBS = ("simulate", "pretrain", "embed", "train", "predict", "evaluate", "cluster")
FLAGLESS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
            argparse.BooleanOptionalAction, argparse._CountAction, argparse._AppendConstAction)
DEFAULT_PART = re.compile(r"\s*\((?:defaults?\b|none:)[^()]*(?:\([^()]*\)[^()]*)*\)")


def _verbs() -> dict[str, argparse.ArgumentParser]:
    from galmo.cli import build_parser

    out, todo = {}, [("", build_parser())]
    while todo:
        prefix, parser = todo.pop()
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    full = f"{prefix} {name}".strip()
                    if full not in out and sub not in out.values():
                        out[full] = sub
                        todo.append((full, sub))
    return out


def _options(parser):
    """The actions a user can give (not --help/--version, not hidden ones)."""
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        if a.help == argparse.SUPPRESS:  # hidden test hooks (e.g. train --stop-after-steps)
            continue
        yield a


VERBS = _verbs()
FLAGS = {verb: {s for a in _options(p) for s in a.option_strings} for verb, p in VERBS.items()}


def _meaning(a) -> dict:
    takes_value = a.nargs != 0 and not isinstance(a, FLAGLESS)
    tp = a.type if a.type is not None or not takes_value else str  # argparse's default type is str
    return {"kind": type(a).__name__, "type": getattr(tp, "__name__", tp),
            "choices": None if a.choices is None else tuple(a.choices), "nargs": a.nargs,
            "help": DEFAULT_PART.sub("", a.help or "").strip()}


def test_the_parser_has_every_verb():
    assert {"simulate", "info", "show", "demo", "cluster", "train", "predict", "evaluate", "pretrain", "embed",
            "similar", "outliers", "probe", "run", "report"} <= set(VERBS)


def test_every_option_has_help_and_shows_its_default():
    missing_help, missing_default = [], []
    for verb, p in VERBS.items():
        for a in _options(p):
            name = "/".join(a.option_strings) or a.dest
            if not (a.help or "").strip():
                missing_help.append(f"{verb} {name}")
            elif (a.option_strings and not a.required and not isinstance(a, FLAGLESS)
                  and not re.search(r"\bdefault\b|%\(default\)", a.help, re.IGNORECASE)):
                missing_default.append(f"{verb} {name}")
    assert not missing_help, f"no help: {missing_help}"
    assert not missing_default, f"default not shown in the help: {missing_default}"


def _shared_help(flag: str) -> str | None:
    key = flag.removeprefix("--").replace("-", "_")
    if key not in HELP and key.startswith("no_"):  # the negative of a --x/--no-x pair
        key = key.removeprefix("no_")
    return DEFAULT_PART.sub("", HELP[key]).strip() if flag.startswith("--") and key in HELP else None


def test_a_flag_means_the_same_in_every_verb():
    seen = defaultdict(dict)  # flag → verb → meaning
    for verb, p in VERBS.items():
        for a in _options(p):
            for s in a.option_strings:
                seen[s][verb] = _meaning(a)
    clashes = {}
    for flag, by_verb in seen.items():
        same_help = flag not in PER_VERB_HELP and _shared_help(flag) is None  # else: the next test
        keys = ("kind", "type", "choices", "nargs") + (("help",) if same_help else ())
        if len({tuple(m[k] for k in keys) for m in by_verb.values()}) > 1:
            clashes[flag] = {verb: {k: m[k] for k in keys} for verb, m in sorted(by_verb.items())}
    assert not clashes, "flags with several meanings:\n" + "\n".join(
        f"  {flag}: " + "; ".join(f"{v}: {m}" for v, m in by_verb.items()) for flag, by_verb in sorted(clashes.items()))


def test_shared_vocabulary_flags_use_its_help():
    wrong = []
    for verb, p in VERBS.items():
        for a in _options(p):
            for flag in a.option_strings:
                text, got = _shared_help(flag), _meaning(a)["help"]
                if text is not None and got != text and not got.startswith(text + "; "):
                    wrong.append(f"{verb} {flag}: {a.help!r} (shared: {text!r})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("flag", ["--index", "--quiet", "-k", "--no-quiet"])
def test_retired_flags_are_gone(flag):
    assert not [v for v, flags in FLAGS.items() if flag in flags], f"{flag} is still used"


@pytest.mark.parametrize("flag,verbs", [
    ("--size", {"simulate"}),          # cutout pixels; encoder/model input is --image-size
    ("--model", {"train"}),            # a registered architecture; runs are --run, encoders --encoder
    ("--k", {"cluster"}),              # number of groups
    ("--model-size", {"pretrain"}),
])
def test_flags_only_where_agreed(flag, verbs):
    assert {v for v, flags in FLAGS.items() if flag in flags} == verbs


@pytest.mark.parametrize("flag,verbs", [
    ("--emb", {"similar", "outliers", "probe"}),
    ("--run", {"predict", "evaluate"}),
    ("--encoder", {"embed"}),
    ("--top", {"similar", "outliers"}),
    ("--image-size", {"cluster", "embed"}),
])
def test_agreed_flags_are_there(flag, verbs):
    assert verbs <= {v for v, flags in FLAGS.items() if flag in flags}


@pytest.mark.parametrize("verb", LONG_VERBS)
def test_long_verbs_take_progress(verb):
    assert {"--progress", "--no-progress"} <= FLAGS[verb]
    action = next(a for a in _options(VERBS[verb]) if "--progress" in a.option_strings)
    assert isinstance(action, argparse.BooleanOptionalAction) and action.default is True
