"""Outputs (issue 11): ``--out`` is checked before any work, write errors name the user's path,
one rule for the skipped items (``rejected.csv`` / ``<stem>.rejected.csv``), one-line warnings."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galmo.cli import main
from galmo.core.errors import GalmoError
from galmo.core.io import atomic_path, check_output
from galmo.sources.base import rejected_path

sys.path.insert(0, str(Path(__file__).parent))
from supervised_data import make_tiny_source  # noqa: E402

# Each verb with a --data that does not exist: a bad --out must be reported first, so nothing is read.
VERBS = {
    "embed": (["embed", "--encoder", "pixels", "--data", "{data}"], "file"),
    "predict": (["predict", "--run", "{data}", "--data", "{data}"], "file"),
    "cluster": (["cluster", "--data", "{data}"], "dir"),
    "train": (["train", "--data", "{data}", "--model", "simple_cnn"], "dir"),
}


def _bad_outs(tmp_path: Path, kind: str) -> dict[str, str]:
    (tmp_path / "afile").write_text("a regular file")
    (tmp_path / "afolder").mkdir()
    wrong = tmp_path / ("afolder" if kind == "file" else "afile")  # a folder for a file, a file for a folder
    return {"proc": "/proc/galmo-test/out.parquet", "under a file": str(tmp_path / "afile" / "out.parquet"),
            "wrong kind": str(wrong)}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_bad_out_is_an_error_before_any_work(verb, tmp_path, capsys):
    argv, kind = VERBS[verb]
    data = str(tmp_path / "no-such-source.h5")
    for case, out in _bad_outs(tmp_path, kind).items():
        capsys.readouterr()
        rc = main([a.format(data=data) for a in argv] + ["--out", out])
        err = capsys.readouterr().err
        assert rc == 2, (verb, case, err)
        assert err.startswith(f"galmo: error: {out}: ") and err.count("\n") == 1, (verb, case, err)
        assert "no-such-source" not in err and "Traceback" not in err  # --data was not even looked at
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "afolder"]  # nothing created
    assert list((tmp_path / "afolder").iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_an_error_before_any_work(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["cluster", "--data", str(tmp_path / "none.h5"), "--out", str(ro / "run")]) == 2
        assert capsys.readouterr().err.startswith(f"galmo: error: {ro / 'run'}: cannot write in the folder")
        with (pytest.raises(GalmoError, match=r"cannot write this file \(Permission denied\)") as e,
              atomic_path(ro / "x.csv") as tmp):
            tmp.write_text("x")
        assert ".tmp" not in str(e.value)
    finally:
        ro.chmod(0o700)


def test_check_output_creates_a_missing_parent_and_says_so(tmp_path):
    said = []
    out = tmp_path / "a" / "b" / "preds.parquet"
    assert check_output(out, "file", log=said.append) == out
    assert (tmp_path / "a" / "b").is_dir() and not out.exists() and said == [f"created folder {out.parent}"]
    assert check_output(out, "file", log=said.append) == out and len(said) == 1  # exists now: nothing said
    run = tmp_path / "a" / "run"
    assert check_output(run, "dir", log=said.append) == run and not run.exists() and len(said) == 1
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == []  # the write probe left nothing behind
    with pytest.raises(ValueError):
        check_output(out, "table")


def test_write_errors_name_the_users_path_never_the_temp_name(tmp_path):
    target = tmp_path / "table.csv"
    seen = {}
    with pytest.raises(GalmoError) as e, atomic_path(target) as tmp:
        seen["tmp"] = tmp
        raise OSError(28, f"No space left on device: '{tmp}'")
    msg = str(e.value)
    assert msg.startswith(f"{target}: cannot write this file") and seen["tmp"].name not in msg
    assert "No space left on device" in msg and not seen["tmp"].exists()
    (tmp_path / "t.csv").mkdir()  # the rename fails: a folder is in the way
    (tmp_path / "t.csv" / "keep").write_text("x")
    with pytest.raises(GalmoError, match="cannot write this file") as e, atomic_path(tmp_path / "t.csv") as tmp:
        tmp.write_text("a,b\n")
    assert ".tmp" not in str(e.value) and str(e.value).startswith(str(tmp_path / "t.csv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # no temp file left
    with pytest.raises(GalmoError, match=r"^/proc/galmo-x/y\.csv: cannot write"), \
            atomic_path("/proc/galmo-x/y.csv") as tmp:
        tmp.write_text("x")


def test_rejected_path_is_one_rule():
    assert rejected_path("runs/r", "dir") == Path("runs/r/rejected.csv")
    assert rejected_path("out/preds.parquet", "file") == Path("out/preds.rejected.csv")
    assert rejected_path("emb.v2.parquet", "file") == Path("emb.v2.rejected.csv")


# ------------------------------------------------------------------ skipped items, end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny trained run (40 sims, simple_cnn of width 4, one epoch) and a PNG folder of 6 of its
    images plus a 0-byte JPEG."""
    root = tmp_path_factory.mktemp("outputs")
    h5 = make_tiny_source(root / "tiny.h5", n=40, size=32)
    run = root / "run"
    assert main(["train", "--data", str(h5), "--out", str(run), "--model", "simple_cnn", "--width", "4",
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-progress", "--seed", "0"]) == 0
    folder = root / "png"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"g{i}.png")
    (folder / "broken.jpg").write_bytes(b"")
    return run, folder


def test_predict_and_embed_list_skipped_items_beside_their_output(tiny_run, tmp_path, capsys):
    run, folder = tiny_run
    common = ["--data", str(folder), "--on-error", "skip", "--device", "cpu", "--no-progress"]
    capsys.readouterr()
    for name in ("p.parquet", "q.csv"):  # two outputs in one folder: two lists, none overwritten
        out = tmp_path / "preds" / name
        assert main(["predict", "--run", str(run), *common, "--out", str(out)]) == 0
        rej = out.with_name(f"{out.stem}.rejected.csv")
        stdout = capsys.readouterr().out
        assert f"skipped 1 bad item: see {rej}" in stdout
        assert (f"created folder {out.parent}" in stdout) == (name == "p.parquet")  # said once, when made
        assert [Path(r).name for r in pd.read_csv(rej)["ref"]] == ["broken.jpg"]
    assert len(pd.read_parquet(tmp_path / "preds" / "p.parquet")) == 6
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == ["p.parquet", "p.rejected.csv", "q.csv",
                                                                     "q.rejected.csv"]
    emb = tmp_path / "emb" / "e.parquet"
    assert main(["embed", "--encoder", str(run), *common, "--out", str(emb)]) == 0
    assert f"created folder {emb.parent}" in (stdout := capsys.readouterr().out)
    assert f"skipped 1 bad item: see {emb.parent / 'e.rejected.csv'}" in stdout
    assert [Path(r).name for r in pd.read_csv(emb.parent / "e.rejected.csv")["ref"]] == ["broken.jpg"]
    assert not (emb.parent / "rejected.csv").exists() and len(pd.read_parquet(emb)) == 6
    (folder / "broken.jpg").rename(tmp_path / "broken.jpg")  # nothing skipped: an old list goes
    try:
        assert main(["predict", "--run", str(run), *common, "--out", str(tmp_path / "preds" / "p.parquet")]) == 0
    finally:
        (tmp_path / "broken.jpg").rename(folder / "broken.jpg")
    assert "skipped" not in capsys.readouterr().out and not (tmp_path / "preds" / "p.rejected.csv").exists()


def test_show_and_info_say_what_they_skipped(tiny_run, tmp_path, capsys, monkeypatch):
    _, folder = tiny_run
    monkeypatch.chdir(tmp_path)
    png = tmp_path / "grid.png"
    capsys.readouterr()
    assert main(["show", str(folder), "--out", str(png), "--n", "3", "--on-error", "skip"]) == 0
    assert f"skipped 1 bad item: see {tmp_path / 'grid.rejected.csv'}" in capsys.readouterr().out
    assert main(["info", str(folder), "--on-error", "skip"]) == 0
    out = capsys.readouterr().out
    assert "rejected    1 item:" in out and f"    {folder / 'broken.jpg'}: not a readable PNG/JPEG" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "grid.rejected.csv"]  # info wrote nothing


# ------------------------------------------------------------------ warnings
def test_warnings_are_one_line_and_the_settings_come_back(tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, side in enumerate([16, 16, 20]):  # mixed sizes: the reader warns that it resizes
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"m{i}.png")
    before = (warnings.showwarning, warnings.formatwarning)
    assert main(["info", str(folder)]) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines and all(x.startswith("galmo: warning: ") for x in lines), err
    assert any("images" in x and str(folder) in x for x in lines)
    assert ".py:" not in err and "UserWarning" not in err and "warnings.warn" not in err
    assert (warnings.showwarning, warnings.formatwarning) == before
