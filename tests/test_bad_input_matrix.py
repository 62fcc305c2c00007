"""Issue 11, "nothing lost, nothing cryptic": every reading verb × every bad input (tests/bad_inputs.py).

Each cell runs ``galmo.cli.main`` in-process on one bad input and asserts: exit 2, stderr starting
``galmo: error:`` and naming the user's file (the bad input, or the bad --out), no traceback, no
temp-named file and no final output left behind. The oversized-FITS cells (a header claiming
100000 x 100000 pixels) run in one child process under a 6 GiB address-space limit. A second test:
with ``--on-error skip`` the good items are processed and the rejected list names the bad one.

Cells that still fail are marked ``xfail(strict=True)`` with the gap as the reason: when a fix lands
the cell XPASSes, the suite turns red, and the mark must be removed. List them with

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_bad_input_matrix.py -rX
"""

from __future__ import annotations

import warnings

import bad_inputs as b
import pytest

# Cells that still fail, with the gap: none today (see the module docstring for how to add one).
GAPS: dict = {}
SKIP_GAPS: dict = {}


def _params(cells, gaps):
    out = []
    for verb, case in cells:
        marks = [pytest.mark.xfail(strict=True, reason=gaps[(verb, case)])] if (verb, case) in gaps else []
        out.append(pytest.param(verb, case, marks=marks, id=f"{verb}-{case}"))
    return out


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """40 sims at 32 px (two classes), good PNG/JPEG/FITS folders, a simple_cnn run, Lite0 embeddings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = b.build_assets(tmp_path_factory.mktemp("bad_input_assets"))
    b.save_assets(a)
    return a


@pytest.fixture(scope="session")
def huge_header(assets, tmp_path_factory):
    """The oversized-FITS cells of every verb, run once in a child process with RLIMIT_AS."""
    cells = [(v, c) for v, c in b.matrix() if c in b.SUBPROCESS_CASES]
    return b.run_in_subprocess(cells, assets.root, tmp_path_factory.mktemp("huge"))


def test_matrix_size():
    """11 reading verbs × 14 bad sources, bad --out for the 11 verbs with --out, --out naming a folder
    for the 6 verbs whose --out is one file."""
    cells = b.matrix()
    assert len(set(cells)) == len(cells) == 11 * 14 + 11 + 6 == 171


@pytest.mark.parametrize("verb,case", _params(b.matrix(), GAPS))
def test_bad_input(verb, case, assets, request, tmp_path):
    if case in b.SUBPROCESS_CASES:  # may allocate 37 GiB on an unchecked reader: never in this process
        o = request.getfixturevalue("huge_header")[(verb, case)]
    else:
        o = b.run_case(verb, case, assets, tmp_path)
    assert o.verdict == "clean", f"galmo {verb} on {case}: {o.verdict} (exit {o.rc}): {o.detail}"
    assert o.rc == 2


@pytest.mark.parametrize("verb,case", _params(b.skip_cells(), SKIP_GAPS))
def test_on_error_skip(verb, case, assets, tmp_path):
    ok, why = b.run_skip_case(verb, case, assets, tmp_path)
    assert ok, f"galmo {verb} --on-error skip on {case}: {why}"
