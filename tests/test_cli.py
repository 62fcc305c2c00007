"""The foundation verbs end to end: simulate → info → show → demo, and bad input as clear errors."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from galmo.cli import main


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "s.h5"
    assert main(["simulate", "--n", "40", "--size", "32", "--seed", "5", "--workers", "1", "--out", str(out)]) == 0
    return out


def test_simulate_info_show(sims, capsys, tmp_path):
    with h5py.File(sims) as f:
        assert f["images"].shape == (40, 32, 32, 3) and f["images"].dtype == np.uint8
        assert f["flux"].shape == (40, 3, 32, 32)
    assert sims.with_suffix(".truth.parquet").exists()
    assert main(["info", str(sims)]) == 0
    out = capsys.readouterr().out
    assert "40" in out and "g, r, z" in out and "Merging" in out
    png = tmp_path / "grid.png"
    assert main(["show", str(sims), "--out", str(png), "--n", "12"]) == 0
    from PIL import Image

    im = np.asarray(Image.open(png))
    assert im.shape[0] > 100 and im.shape[1] > 300 and im[..., :3].std() > 10  # a real picture, not blank


def test_demo_overview_section(sims, tmp_path):
    run = tmp_path / "demo"
    assert main(["demo", "--data", str(sims), "--out", str(run), "--only", "overview", "--quick"]) == 0
    html = (run / "report.html").read_text()
    assert "The sample" in html and html.count("data:image/png;base64,") >= 2
    assert (run / "figures" / "overview_classes.png").exists()


@pytest.mark.parametrize("content,expect", [
    (b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "s.h5"),       # truncated HDF5
    (b"garbage bytes, not a file format", "s.h5"),
])
def test_bad_input_is_a_message_not_a_traceback(tmp_path, content, expect):
    bad = tmp_path / "s.h5"
    bad.write_bytes(content)
    r = subprocess.run([sys.executable, "-m", "galmo.cli", "info", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("galmo: error:") and expect in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_arguments(tmp_path):
    assert main(["simulate", "--n", "0", "--out", str(tmp_path / "x.h5")]) == 2
    assert main(["show", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "g.png")]) == 2
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "g.png").exists()
