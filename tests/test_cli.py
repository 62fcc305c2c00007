"""The foundation verbs end to end: simulate → info → show → demo, and bad input as clear errors."""

import json
import subprocess
import sys
from pathlib import Path

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


def test_simulate_flags_reach_the_file(tmp_path):
    out = tmp_path / "w.h5"
    assert main(["simulate", "--n", "6", "--size", "16", "--seed", "2", "--workers", "1", "--no-noiseless",
                 "--no-progress", "--class-weights", "Merging=1", "--out", str(out)]) == 0
    with h5py.File(out) as f:
        assert "noiseless" not in f and f["images"].shape == (6, 16, 16, 3)
        assert set(f["ans"][()]) == {1}  # Merging
        assert json.loads(f.attrs["config"])["seed"] == 2


def _png_folder_with_a_bad_file(root):
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"g{i}.png")
    (root / "g9.png").write_bytes(b"not a png at all" * 20)
    return root


def test_on_error_skip_lists_the_bad_files_in_rejected_csv(tmp_path, monkeypatch, capsys):
    import pandas as pd

    src = _png_folder_with_a_bad_file(tmp_path / "imgs")
    assert main(["show", str(src), "--out", str(tmp_path / "g.png")]) == 2  # raise: stops at the bad file
    png = tmp_path / "out" / "grid.png"
    assert main(["show", str(src), "--out", str(png), "--on-error", "skip", "--n", "3"]) == 0
    rejected = pd.read_csv(png.parent / "grid.rejected.csv")
    assert [Path(r).name for r in rejected["ref"]] == ["g9.png"] and png.exists()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["info", str(src), "--on-error", "skip"]) == 0
    out = capsys.readouterr().out
    assert "images      4" in out and f"rejected    1 item:\n    {src / 'g9.png'}: not a readable" in out
    assert not (tmp_path / "rejected.csv").exists()  # info lists the skipped items on the terminal


def test_demo_overview_section_and_report_rebuild(sims, tmp_path):
    from galmo.methods.overview import section

    run = tmp_path / "demo"
    assert main(["demo", "--data", str(sims), "--out", str(run), "--only", "overview", "--quick"]) == 0
    html = (run / "report.html").read_text()
    assert "The sample" in html and html.count("data:image/png;base64,") >= 2
    assert (run / "figures" / "overview_classes.png").exists()
    assert json.loads((run / "demo_timings.json").read_text())["failed"] == []
    # galmo report: the section again from the run folder's files
    (run / "sections" / "overview.json").unlink()
    assert main(["report", str(run)]) == 0
    assert "The sample" in (run / "report.html").read_text()
    # figures gone: drawn again from the recorded source; gone and no source: cannot rebuild
    (run / "figures" / "overview_classes.png").unlink()
    assert section(run) and (run / "figures" / "overview_classes.png").exists()
    (run / "figures" / "overview_classes.png").unlink()
    rec = json.loads((run / "overview.json").read_text())
    (run / "overview.json").write_text(json.dumps({**rec, "source": None}))
    assert section(run) is False
    assert section(tmp_path) is False  # not a run folder with an overview


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
    with pytest.raises(SystemExit) as e:  # argparse: not one of the sections
        main(["demo", "--only", "nonsense", "--out", str(tmp_path / "d")])
    assert e.value.code == 2 and not (tmp_path / "d").exists()
    assert main(["show", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "g.png")]) == 2
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "g.png").exists()
