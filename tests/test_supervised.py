"""Supervised pipeline: metrics on hand-checkable cases, TTA, triage, CLI train → predict → evaluate,
exact resume through the CLI, the vote-fraction target."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from galmo.core import metrics as M
from galmo.cli import main
from galmo.nn.models import create
from galmo.methods.supervised import run as S
from galmo.core.schema import ANSWER_COLUMNS, QUESTION_SLICES

sys.path.insert(0, str(Path(__file__).parent))
from supervised_data import make_tiny_source  # noqa: E402

TRAIN = ["--epochs", "2", "--width", "4", "--batch-size", "16", "--lr", "3e-3", "--device", "cpu", "--no-progress",
         "--seed", "3"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(make_tiny_source(tmp_path_factory.mktemp("data") / "tiny.h5", n=72, size=32))


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """One uninterrupted CLI training run, shared by the end-to-end and the resume tests."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--data", tiny, "--out", str(run), *TRAIN]) == 0
    return run


# ---------------------------------------------------------------- metrics, by hand
def test_accuracy_coverage_by_hand():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 0, 2])
    conf = np.array([0.9, 0.5, 0.8, 0.4, 0.7])  # order: 0 (ok), 2 (ok), 4 (ok), 1 (bad), 3 (bad)
    cov, acc = M.accuracy_coverage(y, p, conf, [0.2, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(acc, [1.0, 1.0, 0.75, 0.6])
    assert M.accuracy_at_coverage(y, p, conf, 0.6) == 1.0


def test_ece_by_hand():
    # two bins: conf 0.9 (2 galaxies, 1 right) and conf 0.6 (2 galaxies, both right)
    # ECE = 0.5·|0.5 − 0.9| + 0.5·|1 − 0.6| = 0.4
    assert M.expected_calibration_error([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1], n_bins=10) == pytest.approx(0.4)
    assert M.expected_calibration_error([0.75, 0.75, 0.75, 0.75], [1, 1, 1, 0], n_bins=10) == pytest.approx(0.0)
    r = M.reliability_bins([0.05, 0.95], [0, 1], n_bins=10)
    assert r["count"][0] == 1 and r["count"][9] == 1 and r["accuracy"][9] == 1.0


def test_per_class_and_votes_by_hand():
    prc = M.per_class_precision_recall([0, 0, 1, 1], [0, 1, 1, 1], 3)
    np.testing.assert_allclose(prc["precision"], [1.0, 2 / 3, 0.0])
    np.testing.assert_allclose(prc["recall"], [0.5, 1.0, 0.0])
    assert M.vote_rmse(np.zeros((2, 37)), np.full((2, 37), 0.1)) == pytest.approx(0.1)
    true = np.zeros((2, 37))
    true[:, 0:3] = [[0.9, 0.1, 0.0], [0.5, 0.5, 0.0]]  # only galaxy 0 is high-agreement on Q1
    pred = np.zeros((2, 37))
    pred[:, 0:3] = [[0.6, 0.4, 0.0], [0.0, 1.0, 0.0]]
    ha = M.high_agreement_accuracy(pred, true)
    assert ha["q1_n"] == 1 and ha["q1_accuracy"] == 1.0


# ---------------------------------------------------------------- TTA and triage
def test_tta_averages_the_transforms():
    assert S.tta_transforms(1) == [(0, 0.0)]
    assert [k for k, _ in S.tta_transforms(8)] == list(range(8)) and {a for _, a in S.tta_transforms(8)} == {0.0}
    assert {a for _, a in S.tta_transforms(16)} == {0.0, 45.0}
    torch.manual_seed(0)
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    cnn = create("simple_cnn", num_outputs=4, width=4).eval()
    p8 = S.predict_arrays(cnn, x, "class", tta=8)
    with torch.no_grad():
        by_hand = np.mean([cnn(S.apply_transform(torch.from_numpy(x), k, a)).softmax(1).numpy()
                           for k, a in S.tta_transforms(8)], axis=0)
    np.testing.assert_allclose(p8, by_hand, atol=1e-6)
    assert np.abs(p8 - S.predict_arrays(cnn, x, "class", tta=1)).max() > 1e-6  # a plain CNN is not invariant
    rot = create("rotinv", num_outputs=4, image_size=32, width=4).eval()
    np.testing.assert_allclose(S.predict_arrays(rot, x, "class", tta=8), S.predict_arrays(rot, x, "class", tta=1),
                               atol=1e-5)  # ... the view-pooling network is: TTA over D4 changes nothing


@pytest.mark.parametrize("coverage", [0.0, 0.25, 0.5, 0.83, 1.0])
def test_triage_split_sizes_match_coverage(coverage, tmp_path):
    rng = np.random.default_rng(1)
    preds = pd.DataFrame({"id": [f"g{i}" for i in range(37)], "confidence": rng.random(37),
                          "pred_name": "x", "entropy": 0.0})
    auto, thr = S.triage(preds, coverage=coverage)
    assert auto.sum() == round(coverage * 37)
    if 0 < auto.sum() < 37:
        assert preds["confidence"][auto].min() >= preds["confidence"][~auto].max()
    files = S.write_triage(preds, auto, tmp_path / "p.parquet")
    assert len(pd.read_csv(files["expert_csv"])) == 37 - auto.sum()
    auto_t, _ = S.triage(preds, threshold=0.5)
    assert auto_t.sum() == (preds["confidence"] >= 0.5).sum()


# ---------------------------------------------------------------- CLI end to end
def test_cli_train_predict_evaluate(tiny, trained, tmp_path):
    run = trained
    for f in ("model.safetensors", "config.json", "split.csv", "test_ids.csv", "metrics.json", "report.html",
              "figures/supervised_confusion.png", "figures/supervised_coverage.png",
              "figures/supervised_reliability.png"):
        assert (run / f).exists(), f
    split = pd.read_csv(run / "split.csv")
    assert split["split"].value_counts().to_dict() == {"train": 49, "test": 15, "val": 8}
    assert set(pd.read_csv(run / "test_ids.csv")["id"]) == set(split["id"][split["split"] == "test"])
    out = tmp_path / "preds.parquet"
    assert main(["predict", "--run", str(run), "--data", tiny, "--out", str(out), "--tta", "2",
                 "--triage", "0.5"]) == 0
    preds = pd.read_parquet(out)
    assert len(preds) == 72 and preds["id"].is_unique and preds["id"].iloc[0] == "g0000"
    p = preds[[f"prob_{k}" for k in range(10)]].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(preds["confidence"], p.max(1), atol=1e-7)
    assert preds["auto_classified"].sum() == 36
    assert len(pd.read_csv(tmp_path / "preds_expert.csv")) == 36 and (tmp_path / "preds_expert.png").exists()
    assert main(["evaluate", "--run", str(run), "--data", tiny, "--out", str(tmp_path / "ev")]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["test"]
    assert m["n"] == 15 and 0 <= m["top1"] <= 1 and 0 <= m["ece"] <= 1
    assert m["top1"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test"]["top1"])
    assert main(["predict", "--run", str(tmp_path), "--data", tiny, "--out", str(out)]) == 2  # not a run


def test_cli_resume_after_mid_epoch_stop_matches_uninterrupted(tiny, trained, tmp_path):
    a, b = trained, tmp_path / "b"
    args = ["--data", tiny, *TRAIN]
    assert main(["train", *args, "--out", str(b), "--stop-after-steps", "5"]) == 130  # 4 steps/epoch: mid epoch 2
    assert not (b / "metrics.json").exists()
    assert main(["train", *args, "--out", str(b), "--resume"]) == 0
    ma = json.loads((a / "metrics.json").read_text())["test"]
    mb = json.loads((b / "metrics.json").read_text())["test"]
    assert ma["top1"] == mb["top1"] and ma["ece"] == pytest.approx(mb["ece"], abs=1e-7)
    la = [json.loads(s) for s in (a / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(s) for s in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in la] == pytest.approx([r["val_loss"] for r in lb], abs=1e-6)
    pa, pb = pd.read_parquet(a / "predictions_test.parquet"), pd.read_parquet(b / "predictions_test.parquet")
    np.testing.assert_allclose(pa["confidence"], pb["confidence"], atol=1e-6)


def test_ensemble_same_split_averages_members_and_refuses_leaks(tiny, trained, tmp_path, capsys):
    """--split-from reuses a run's split; an ensemble's probabilities are the mean of its members';
    a member that trained on the test galaxies is refused with a clear message."""
    b = tmp_path / "b"
    other = [a if a != "3" else "5" for a in TRAIN]  # another seed: other weights, same split
    assert main(["train", "--data", tiny, "--out", str(b), *other, "--split-from", str(trained)]) == 0
    sa, sb = pd.read_csv(trained / "split.csv"), pd.read_csv(b / "split.csv")
    assert sa.equals(sb)
    pa, pb = S.predict(trained, tiny, device="cpu"), S.predict(b, tiny, device="cpu")
    cols = [f"prob_{k}" for k in range(10)]
    assert not np.allclose(pa[cols], pb[cols], atol=1e-3)  # two different models
    pe = S.predict([trained, b], tiny, device="cpu")
    np.testing.assert_allclose(pe[cols], (pa[cols].to_numpy() + pb[cols].to_numpy()) / 2, atol=1e-6)
    assert main(["evaluate", "--run", str(trained), str(b), "--data", tiny, "--out", str(tmp_path / "ens")]) == 0
    m = json.loads((tmp_path / "ens" / "metrics.json").read_text())["test"]
    assert m["model"] == "ensemble of 2" and m["n"] == 15 and len(m["members"]) == 2
    y = pe["label"].to_numpy()
    test = pd.read_csv(trained / "test_ids.csv", dtype={"id": str})["id"]
    sel = pe["id"].isin(test).to_numpy()
    assert m["top1"] == pytest.approx(float((pe[cols].to_numpy()[sel].argmax(1) == y[sel]).mean()))
    # a member trained on another split has seen test galaxies: refused, exit 2, no traceback
    c = tmp_path / "c"
    assert main(["train", "--data", tiny, "--out", str(c), *other, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(trained), str(c), "--data", tiny, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--split-from" in err and "Traceback" not in err
    assert main(["evaluate", "--run", str(trained), str(b), "--data", tiny]) == 2  # an ensemble needs --out


def test_votes_target_obeys_tree_and_reports_rmse(tiny, tmp_path):
    res = S.train(tiny, tmp_path / "v", model="simple_cnn", target="votes", width=4, epochs=1, batch_size=16,
                  device="cpu", progress=False, log=lambda *a: None)
    t = res["test"]
    assert 0 < t["rmse"] < 0.5 and "high_agreement_all_accuracy" in t
    preds = S.predict(tmp_path / "v", tiny, device="cpu")
    v = preds[ANSWER_COLUMNS].to_numpy()
    a, b = QUESTION_SLICES[0]
    np.testing.assert_allclose(v[:, a:b].sum(1), 1, atol=1e-5)
    assert (v >= 0).all()


def test_demo_section_quick(tiny, tmp_path):
    res = S.demo_section(tmp_path, tiny, quick=True)
    sec = json.loads((tmp_path / "sections" / "supervised.json").read_text())
    assert sec["key"] == "supervised" and len(sec["figures"]) == 3
    assert all((tmp_path / f).exists() for f in sec["figures"]) and 0 <= res["top1"] <= 1
    assert "Trained for 1 epoch" in sec["body"] and "<code>supervised/</code>" in sec["body"]
    m = json.loads((tmp_path / "supervised" / "metrics.json").read_text())["test"]
    assert m["n"] == 15 and m["top1"] == res["top1"]  # all 72 galaxies (quick takes ≤ 160), 20 % tested


def test_config_json_reruns_with_galmo_run_and_report_rebuilds(tiny, trained, tmp_path):
    """config.json is the SupervisedConfig's save() (plus the checkpoint keys): `galmo run` re-runs
    it to the same numbers, `galmo report` renders the section again from the files."""
    from galmo.methods.supervised.config import SupervisedConfig
    from galmo.nn.train import read_progress

    cfg = SupervisedConfig.load(trained)
    assert (cfg.epochs, cfg.width, cfg.batch_size, cfg.lr, cfg.seed, cfg.progress) == (2, 4, 16, 3e-3, 3, False)
    assert cfg.data == tiny and not cfg.resume
    saved = json.loads((trained / "config.json").read_text())
    assert saved["method"] == "train" and saved["format"] == "galmo-checkpoint" and "supervised" in saved
    assert read_progress(trained)["done"] and read_progress(trained)["epoch"] == 2
    again = tmp_path / "again"
    assert main(["run", str(trained / "config.json"), "--out", str(again)]) == 0
    a, b = (json.loads((r / "metrics.json").read_text())["test"] for r in (trained, again))
    assert a["top1"] == b["top1"] and a["ece"] == pytest.approx(b["ece"], abs=1e-7)
    (again / "report.html").unlink()
    (again / "sections" / "supervised.json").unlink()
    assert main(["report", str(again)]) == 0
    sec = json.loads((again / "sections" / "supervised.json").read_text())
    assert len(sec["figures"]) == 3 and "top1" in sec["body"] and "Trained for 2 epochs" in sec["body"]
    assert "<html" in (again / "report.html").read_text().lower()


def _png_folder(tiny, root, n_bad: int = 1) -> list[str]:
    """The tiny source as a folder of PNGs per class; ``n_bad`` of them truncated (the header still
    reads, the pixels do not). Returns the bad files."""
    from PIL import Image

    from galmo.sources import open_source

    src = open_source(tiny)
    imgs = src.read(slice(None))
    bad = []
    for i, (img, label) in enumerate(zip(imgs, src.catalog["label"])):
        d = root / f"c{label}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"g{i:04d}.png"
        Image.fromarray((img[::-1].transpose(1, 2, 0) * 255).astype(np.uint8)).save(f)
        if i < n_bad:
            f.write_bytes(f.read_bytes()[:120])
            bad.append(str(f))
    return bad


def test_on_error_skip_skips_undecodable_images_in_train_and_predict(tiny, tmp_path, capsys):
    bad = _png_folder(tiny, tmp_path / "png", n_bad=2)
    data = str(tmp_path / "png")
    run = tmp_path / "run"
    assert main(["train", "--data", data, "--out", str(run), *TRAIN, "--epochs", "1"]) == 2  # raise: stops
    assert "cannot decode" in capsys.readouterr().err
    assert main(["train", "--data", data, "--out", str(run), *TRAIN, "--epochs", "1", "--on-error", "skip"]) == 0
    rejected = pd.read_csv(run / "rejected.csv")
    assert sorted(rejected["ref"]) == sorted(bad) and rejected["reason"].str.contains("cannot decode").all()
    out = tmp_path / "preds" / "p.parquet"
    out.parent.mkdir()
    assert main(["predict", "--run", str(run), "--data", data, "--out", str(out), "--on-error", "skip",
                 "--no-progress"]) == 0
    preds = pd.read_parquet(out)
    bad_ids = [Path(f).relative_to(tmp_path / "png").with_suffix("").as_posix() for f in bad]
    assert len(preds) == 72 - 2 and preds["id"].is_unique and not preds["id"].isin(bad_ids).any()
    assert sorted(pd.read_csv(out.parent / "p.rejected.csv")["ref"]) == sorted(bad)
    assert main(["predict", "--run", str(run), "--data", data, "--out", str(out)]) == 2  # raise: stops
