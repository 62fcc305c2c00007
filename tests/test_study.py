"""The data-efficiency study: runs on fractions of one split, read back when started again, one report."""

import json

import numpy as np
import pandas as pd
import pytest

from galmo.core.errors import GalmoError


def test_epochs_grow_as_the_fraction_shrinks():
    from galmo.methods.supervised.study import epochs_for

    assert [epochs_for(10, f) for f in (1.0, 0.2, 0.05)] == [10, 23, 45]


def test_recipe_options_per_model():
    from galmo.methods.supervised.config import DataEfficiencyConfig
    from galmo.methods.supervised.study import train_options

    cfg = DataEfficiencyConfig(out="x", epochs=4)
    rot = train_options(cfg, "rotinv", "astroformer", 0.2, 1)
    assert rot["recipe"] == "astroformer" and rot["drop_path"] == 0.0 and rot["epochs"] == 9
    assert rot["train_frac"] == 0.2 and rot["seed"] == 1 and rot["width"] == 16
    lite = train_options(cfg, "lite0", "none", 1.0, 0)
    assert "recipe" not in lite and lite["model"] == "timm_classifier" and "backbone" not in lite
    conv = train_options(cfg, "convnext-atto", "none", 1.0, 0)
    assert conv["backbone"] == "convnext_atto" and conv["weights"] == "none"
    with pytest.raises(GalmoError, match="unknown study model"):
        train_options(cfg, "resnet9000", "none", 1.0, 0)


def test_study_runs_every_setting_on_one_split_and_reads_back_finished_runs(tmp_path):
    from supervised_data import make_tiny_source

    from galmo.methods.supervised.config import DataEfficiencyConfig
    from galmo.methods.supervised.study import RESULTS, run_study

    src = make_tiny_source(tmp_path / "tiny.h5", n=120, size=32)
    cfg = DataEfficiencyConfig(data=str(src), out=str(tmp_path / "study"), models=("rotinv",), fractions=(0.25, 1.0),
                               seeds=(0,), recipes=("none", "astroformer"), epochs=1, batch_size=16, progress=False)
    table = run_study(cfg, log=lambda *a: None)
    assert len(table) == 4 and set(table["recipe"]) == {"none", "astroformer"}
    full = table[table["train_frac"] == 1.0]["n_train"].iloc[0]
    assert (table[table["train_frac"] == 0.25]["n_train"] == round(0.25 * full)).all()
    assert table["top1"].between(0, 1).all() and (table["epochs"] == [2, 2, 1, 1]).all()
    tests = {r: frozenset(pd.read_csv(tmp_path / "study" / "runs" / r / "test_ids.csv", dtype={"id": str})["id"])
             for r in table["run"]}
    assert len(set(tests.values())) == 1  # every model and fraction is tested on the same galaxies
    again = run_study(cfg, log=lambda *a: None)  # finished runs are read back, not trained again
    assert again.drop(columns=["train_seconds"]).equals(table.drop(columns=["train_seconds"]))
    assert np.array_equal(again["train_seconds"], table["train_seconds"])
    saved = pd.read_csv(tmp_path / "study" / RESULTS)
    assert len(saved) == 4 and list(saved["run"]) == list(table["run"])
    summary = json.loads((tmp_path / "study" / "data_efficiency.json").read_text())
    assert len(summary["summary"]) == 4 and set(summary["best"]) == {"0.25", "1.0"}
    section = json.loads((tmp_path / "study" / "sections" / "lowdata.json").read_text())
    assert section["figures"] == ["figures/lowdata_accuracy.png"] and "Best mean top-1" in section["body"]
    assert (tmp_path / "study" / "report.html").stat().st_size > 10_000  # the plot is embedded

    import shutil

    from galmo.report import rebuild

    shutil.rmtree(tmp_path / "study" / "figures")
    shutil.rmtree(tmp_path / "study" / "sections")
    rebuild(tmp_path / "study")  # galmo report STUDY: the section and its plot again, from the table alone
    assert (tmp_path / "study" / "figures" / "lowdata_accuracy.png").stat().st_size > 5_000
    assert json.loads((tmp_path / "study" / "sections" / "lowdata.json").read_text())["body"] == section["body"]


def test_study_command_line(tmp_path):
    from supervised_data import make_tiny_source

    from galmo.cli import main

    src = make_tiny_source(tmp_path / "tiny.h5", n=80, size=32)
    out = tmp_path / "s"
    assert main(["study", "data-efficiency", "--data", str(src), "--out", str(out), "--models", "rotinv",
                 "--fractions", "1", "--seeds", "3", "--recipes", "none", "--epochs", "1", "--no-progress"]) == 0
    row = pd.read_csv(out / "data_efficiency.csv").iloc[0]
    assert row["run"] == "rotinv_none_f1_s3" and row["seed"] == 3
    assert json.loads((out / "config.json").read_text())["method"] == "study-data-efficiency"
    assert main(["run", str(out / "config.json"), "--out", str(tmp_path / "again")]) == 0  # galmo run re-runs it
    again = pd.read_csv(tmp_path / "again" / "data_efficiency.csv").iloc[0]
    assert again["top1"] == row["top1"] and again["n_train"] == row["n_train"]  # same seed, same numbers
