"""Start-up stays light: building the parser, ``galmo --help`` and ``galmo info`` import no deep-learning
or simulation framework (they cost seconds at start-up). Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

HEAVY = ("torch", "galsim", "faiss", "diffusers", "timm", "matplotlib")
RUN = """
import json, sys
from galmo.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:  # --help exits through argparse
    rc = e.code
print("\\n@@" + json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""


def _run(*argv) -> tuple[int, set[str], str]:
    r = subprocess.run([sys.executable, "-c", RUN, *argv], check=False, capture_output=True, text=True, timeout=120)
    out, _, tail = r.stdout.rpartition("\n@@")
    assert tail, r.stderr[-2000:]
    d = json.loads(tail)
    return d["rc"], {m.split(".")[0] for m in d["modules"]}, out


def _galaxy10(path, n=6, size=16):
    """A tiny Galaxy10 DECaLS file (astroNN schema)."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["images"] = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        f["ans"] = rng.integers(0, 10, n).astype(np.uint8)
        for key in ("ra", "dec", "redshift"):
            f[key] = rng.uniform(0, 1, n)
    return path


@pytest.mark.parametrize("argv", [["--help"], ["simulate", "--help"], ["cluster", "--help"], ["train", "--help"],
                                  ["embed", "--help"], []])
def test_help_imports_no_framework(argv):
    rc, modules, out = _run(*argv)
    assert rc in (0, 1) and "usage: galmo" in out  # no verb: the help and exit status 1
    assert not modules & set(HEAVY), f"galmo {' '.join(argv)} imported {sorted(modules & set(HEAVY))}"


def test_info_imports_no_framework(tmp_path):
    rc, modules, out = _run("info", str(_galaxy10(tmp_path / "g.h5")))
    assert rc == 0 and "images      6  (3 x 16 x 16" in out
    assert not modules & set(HEAVY), f"galmo info imported {sorted(modules & set(HEAVY))}"


def test_python_dash_m_entry_points(tmp_path):
    for mod in ("galmo", "galmo.cli"):
        r = subprocess.run([sys.executable, "-m", mod, "--version"], check=False, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("galmo "), r.stderr[-2000:]
