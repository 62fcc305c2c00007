"""Generative augmentation: the conditional diffusion model, its sampler, the generated files, the verbs.

Every model here is the ``micro`` size (16 px, 0.17 M parameters) on one thread (the cores are
shared: two threads fighting other jobs run ~50× slower than one); the whole file takes ~30 s.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from galmo.cli import main
from galmo.core.errors import GalmoError
from galmo.core.schema import ANSWER_COLUMNS, GALAXY10_CLASSES
from galmo.methods.generative import config as gcfg
from galmo.methods.generative.run import generate, load_generator, train_generator
from galmo.methods.generative.sample import sample
from galmo.methods.generative.votes import check_votes, tree_problem
from galmo.nn.checkpoint import load_state_dict
from galmo.nn.models import create
from galmo.nn.models.diffusion import CONDITIONS, PREDICTIONS, SIZES
from galmo.sources import open_source

QUIET = dict(progress=False, log=lambda *a: None)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("GALMO_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def two_classes(path, n=128, size=16, seed=0):
    """Class 0 'Disc': a bright centred Gaussian disc; class 1 'Empty': sky noise only."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disc = np.exp(-(xx ** 2 + yy ** 2) / (2 * 3.0 ** 2))
    lab = np.arange(n) % 2
    img = rng.normal(0.05, 0.02, (n, size, size, 3))
    img[lab == 0] += 0.85 * disc[None, :, :, None]
    with h5py.File(path, "w") as f:
        f["images"] = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        f["ans"] = lab.astype(np.uint8)
        f.attrs["class_names"] = json.dumps(["Disc", "Empty"])
    return path


def centre(images):
    return images[:, :, 6:10, 6:10].mean((1, 2, 3))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A micro generator trained 200 steps on discs vs empty sky (~12 s on one shared core)."""
    import os

    os.environ["GALMO_THREADS"] = "1"
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("gen")
    src = two_classes(d / "two.h5")
    train_generator(str(src), str(d / "run"), generator_size="micro", epochs=25, batch_size=16, lr=2e-3,
                    val_frac=0.0, grid_per_class=2, grid_steps=5, **QUIET)
    return d / "run"


def test_names_match_the_model_family():
    assert set(gcfg.GENERATOR_SIZES) == set(SIZES) and gcfg.CONDITIONS == CONDITIONS
    assert gcfg.PREDICTIONS == PREDICTIONS


def _untrained(condition="class", seed=0):
    torch.manual_seed(seed)
    return create("diffusion_unet", size="micro", condition=condition, n_classes=10).eval()


def test_sampling_shape_range_and_determinism():
    model = _untrained()
    a = sample(model, np.array([1, 2, 3]), [0, 1, 2], steps=4, guidance=3.0)
    assert a.shape == (3, 3, 16, 16) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, sample(model, np.array([1, 2, 3]), [0, 1, 2], steps=4, guidance=3.0))
    alone = sample(model, np.array([2]), [1], steps=4, guidance=3.0)  # an image depends on its own seed only
    np.testing.assert_allclose(alone[0], a[1], atol=1e-5)
    other = sample(model, np.array([2]), [7], steps=4, guidance=3.0)
    assert np.abs(other[0] - a[1]).mean() > 0.01
    dpm = sample(model, np.array([2]), [1], steps=4, guidance=3.0, sampler="dpm")
    assert dpm.shape == (1, 3, 16, 16) and np.abs(dpm[0] - a[1]).mean() > 1e-4


@pytest.mark.parametrize("condition", CONDITIONS)
def test_guidance_changes_the_output_and_zero_guidance_ignores_the_condition(condition):
    model = _untrained(condition)
    if condition == "class":
        c1, c2 = np.array([1, 1]), np.array([5, 5])
    else:
        rng = np.random.default_rng(0)
        c1, c2 = (rng.uniform(0, 1, (2, len(ANSWER_COLUMNS))).astype(np.float32) for _ in range(2))
    kw = dict(steps=3)
    g1, g3 = sample(model, c1, [0, 1], guidance=1.0, **kw), sample(model, c1, [0, 1], guidance=3.0, **kw)
    assert np.abs(g1 - g3).mean() > 1e-3
    np.testing.assert_allclose(sample(model, c1, [0, 1], guidance=0.0, **kw),
                               sample(model, c2, [0, 1], guidance=0.0, **kw), atol=1e-6)  # the null condition only


def test_the_condition_is_honoured_by_a_briefly_trained_model(trained):
    model, block = load_generator(trained, "cpu")
    assert block["class_names"] == ["Disc", "Empty"] and model.condition == "class"
    labels = np.array([0] * 8 + [1] * 8)
    plain = centre(sample(model, labels, np.arange(16), steps=10, guidance=1.0))
    guided = centre(sample(model, labels, np.arange(16), steps=10, guidance=3.0))
    uncond = centre(sample(model, labels, np.arange(16), steps=10, guidance=0.0))  # the null class: a mixture
    assert plain[:8].mean() - plain[8:].mean() > 0.4
    assert plain[:8].min() > plain[8:].max() and guided[:8].min() > guided[8:].max()
    assert plain[8:].mean() < uncond.mean() < plain[:8].mean()


def test_generated_file_is_a_source_with_ids_condition_and_seed(trained, tmp_path):
    out = generate(trained, tmp_path / "gen.h5", class_name="disc", n=5, steps=5, guidance=2.0, seed=10, **QUIET)
    src = open_source(out)
    cat = src.catalog
    assert len(src) == 5 and src.shape == (3, 16, 16) and src.class_names == ["Disc", "Empty"]
    assert list(cat["id"]) == [f"gen-class-disc-s{s}" for s in range(10, 15)]
    assert (cat["label_name"] == "Disc").all() and (cat["condition"] == "class=Disc").all()
    assert list(cat["seed"]) == list(range(10, 15))
    again = sample(load_generator(trained, "cpu")[0], np.zeros(1, np.int64), [12], steps=5, guidance=2.0)
    np.testing.assert_allclose(src.read([2])[0], again[0], atol=1 / 255 + 1e-6)  # uint8 rounding
    report = (trained / "report.html").read_text()
    assert "Generative model" in report and (trained / "figures" / "generative_grid.png").exists()


def test_resume_gives_the_same_weights(tmp_path):
    src = two_classes(tmp_path / "two.h5", n=32)
    kw = dict(generator_size="micro", epochs=2, batch_size=8, val_frac=0.0, grid_per_class=0, **QUIET)
    train_generator(str(src), str(tmp_path / "full"), **kw)
    from galmo.core.errors import TrainingInterrupted

    with pytest.raises(TrainingInterrupted):
        train_generator(str(src), str(tmp_path / "cut"), stop_after_steps=3, **kw)
    train_generator(str(src), str(tmp_path / "cut"), resume=True, **kw)
    full, cut = (load_state_dict(tmp_path / r / "model.safetensors") for r in ("full", "cut"))
    assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)
    raw = load_state_dict(tmp_path / "full" / "last" / "model.safetensors")
    assert any(not torch.equal(raw[k], full[k]) for k in full)  # the saved weights are the EMA's


def test_unknown_class_is_a_clear_error(trained, tmp_path, capsys):
    rc = main(["generate", "--generator", str(trained), "--class", "Spiral", "--n", "2", "--out",
               str(tmp_path / "g.h5")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("galmo: error: --class 'Spiral': unknown class") and "'Disc', 'Empty'" in err
    assert not (tmp_path / "g.h5").exists()
    rc = main(["generate", "--generator", str(trained), "--like", "x", "--n", "2", "--out", str(tmp_path / "g.h5")])
    assert rc == 2 and "conditioned on the class: give --class" in capsys.readouterr().err


def _tree_votes():
    v = dict.fromkeys(ANSWER_COLUMNS, 0.0)
    v.update({"Class1.1": 0.2, "Class1.2": 0.8, "Class2.1": 0.3, "Class2.2": 0.5, "Class3.2": 0.5, "Class4.2": 0.5,
              "Class5.2": 0.5, "Class6.2": 1.0, "Class7.1": 0.2, "Class9.1": 0.3})
    return np.array([v[c] for c in ANSWER_COLUMNS])


def test_vote_vectors_are_checked_against_the_decision_tree(tmp_path):
    good = _tree_votes()
    assert tree_problem(good) is None
    check_votes(good)
    bad = good.copy()
    bad[ANSWER_COLUMNS.index("Class3.1")] = 0.4  # Q3 now sums to 0.9, its parent Class2.2 is 0.5
    assert tree_problem(bad).startswith("Q3 (Is there a sign of a bar")
    with pytest.raises(GalmoError, match=r"f\.json: the vote fractions break .*Q3 .*sum to 0\.9.*Class2\.2"):
        check_votes(bad, where="f.json")
    neg = good.copy()
    neg[0] = -0.2
    assert "outside [0, 1]" in tree_problem(neg)


def test_vote_conditioned_generation_from_a_file(tmp_path):
    src = two_classes(tmp_path / "two.h5", n=16)
    with h5py.File(src, "a") as f:  # vote fractions as catalog columns (1-D datasets)
        for c, v in zip(ANSWER_COLUMNS, _tree_votes()):
            f[c] = np.full(16, v)
    train_generator(str(src), str(tmp_path / "run"), condition="votes", generator_size="micro", epochs=1,
                    batch_size=8, val_frac=0.0, grid_per_class=1, grid_steps=2, **QUIET)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(dict(zip(ANSWER_COLUMNS, _tree_votes().tolist()))))
    votes = _tree_votes()
    votes[ANSWER_COLUMNS.index("Class3.1")] = 0.4
    bad.write_text(json.dumps(votes.tolist()))
    cat = open_source(generate(tmp_path / "run", tmp_path / "g.h5", votes=str(good), n=2, steps=2, **QUIET)).catalog
    assert list(cat["id"]) == ["gen-votes-good-json-s0", "gen-votes-good-json-s1"] and (cat["label"] == -1).all()
    np.testing.assert_allclose(cat[ANSWER_COLUMNS].to_numpy()[1], _tree_votes())
    with pytest.raises(GalmoError, match="Q3"):
        generate(tmp_path / "run", tmp_path / "g2.h5", votes=str(bad), n=2, steps=2, **QUIET)
    with pytest.raises(GalmoError, match="conditioned on the 37 vote fractions"):
        generate(tmp_path / "run", tmp_path / "g2.h5", class_name="Disc", n=2, **QUIET)


@pytest.mark.filterwarnings("ignore:.*too few for a stratified validation split")  # 4 reference galaxies per class
def test_augment_experiment_runs_end_to_end(tmp_path, monkeypatch):
    import pandas as pd

    from galmo import morphology
    from galmo.methods.generative.augment import ARMS, closing_note, run_augment

    def quick_measure(images, fit_sersic=True, progress=False):  # statmorph itself: the tests below (0.3 s a galaxy)
        return pd.DataFrame({c: np.asarray(images).std((1, 2)) for c in morphology.COLUMNS})

    monkeypatch.setattr(morphology, "measure", quick_measure)

    cfg = gcfg.AugmentConfig(out=str(tmp_path / "aug"), generator_size="micro", n_train=200, n_test_per_class=3,
                             n_generated=12, generator_updates=2, classifier_epochs=1, width=4, steps=3, seeds=(0,),
                             rare_class="merging", n_reference_per_class=4, fidelity_per_class=2, judge_epochs=2,
                             progress=False)
    table = run_augment(cfg, log=lambda *a: None)
    assert len(table) == len(ARMS) * 10 and set(table["arm"]) == set(ARMS)
    assert (table.groupby("arm")["support"].sum() == 30).all()  # the balanced held-out set, 3 per class
    sizes = {arm: len(open_source(tmp_path / "aug" / "sims" / f"train_{arm}_s0.h5")) for arm in ("generated",
                                                                                                  "oversampled")}
    assert sizes == {"generated": 212, "oversampled": 212}
    weighted = json.loads((tmp_path / "aug" / "runs" / "weighted_s0" / "config.json").read_text())["supervised"]
    w = weighted["class_weights"]  # the rare class (2 % of 200: 4 galaxies before the val split) weighs most
    assert w.index(max(w)) == list(GALAXY10_CLASSES).index("Merging") and max(w) > 5 * min(w) and json.loads(
        (tmp_path / "aug" / "runs" / "as_is_s0" / "config.json").read_text())["supervised"]["class_weights"] is None
    gen = open_source(tmp_path / "aug" / "sims" / "train_generated_s0.h5").catalog
    assert gen["id"].str.startswith("gen-class-merging-s").sum() == 12
    assert (gen.tail(12)["label_name"] == "Merging").all()
    m = json.loads((tmp_path / "aug" / "metrics.json").read_text())["augment"]
    assert m["rare_class"] == "Merging" and [r["arm"] for r in m["summary"]] == list(ARMS)
    assert 0 <= m["conditional_fidelity"]["0"] <= 1
    fid = m["fidelity"]  # judged by a classifier trained on the balanced reference set (4 per class)
    assert fid["conditional"]["class"] == "Merging" and fid["conditional"]["n"] == 2
    assert set(fid["frechet"]) == {"Merging", "all"} and fid["frechet"]["Merging"]["n"] == 2
    assert len(open_source(tmp_path / "aug" / "sims" / "reference.h5")) == 40
    report = (tmp_path / "aug" / "report.html").read_text()
    assert "rare-class experiment" in report and "Generative model" in report and "Generator fidelity" in report
    note = closing_note(m)
    assert "conditional fidelity (balanced judge)" in note and "sampling:" in note and "Merging" in note
    assert [r["class"] for r in fid["per_class"]] == list(GALAXY10_CLASSES) + ["all"]


def test_train_generator_verb_saves_a_rerunnable_config(tmp_path, capsys):
    src = two_classes(tmp_path / "two.h5", n=16)
    rc = main(["train-generator", "--data", str(src), "--out", str(tmp_path / "run"), "--generator-size", "micro",
               "--image-size", "8", "--epochs", "1", "--batch-size", "8", "--grid-per-class", "0", "--no-progress"])
    assert rc == 0 and "run folder:" in capsys.readouterr().out
    saved = gcfg.GeneratorConfig.load(tmp_path / "run")
    assert saved.image_size == (8,) and saved.generator_size == "micro" and saved.data == str(src)
    model, block = load_generator(tmp_path / "run", "cpu")
    assert model.image_size == 8 and block["shape"] == [3, 8, 8] and block["class_counts"] == {"Disc": 8, "Empty": 8}
    rc = main(["train-generator", "--data", str(src), "--out", str(tmp_path / "bad"), "--image-size", "8", "16"])
    assert rc == 2 and "needs square images" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- fidelity
def _frechet_by_sqrtm(a, b):
    """The textbook formula (scipy's sqrtm), the reference for the SVD form of frechet_distance."""
    from scipy.linalg import sqrtm

    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * sqrtm(sa @ sb).real))


@pytest.mark.parametrize("d", [6, 40])  # more samples than features, and fewer (singular covariances)
def test_frechet_distance_is_the_textbook_formula(d):
    from galmo.methods.generative.fidelity import frechet_distance

    rng = np.random.default_rng(d)
    a, b = rng.normal(size=(30, d)), rng.normal(0.5, 2.0, size=(25, d))
    assert frechet_distance(a, b) == pytest.approx(_frechet_by_sqrtm(a, b), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    with pytest.raises(GalmoError, match="at least 2 samples"):
        frechet_distance(a[:1], b)


def test_frechet_floor_and_table_in_the_embedding_space(tmp_path):
    """Lite0 features of discs: two halves of the discs are far closer than discs and empty sky."""
    from galmo.methods.generative.fidelity import embed, frechet_distance, frechet_table

    src = open_source(two_classes(tmp_path / "two.h5", n=48))
    x, y = src.read(np.arange(48)), src.catalog["label"].to_numpy()
    f = embed(x)
    assert f.shape == (48, 1280)
    disc, empty = f[y == 0], f[y == 1]
    floor, apart = frechet_distance(disc[:12], disc[12:]), frechet_distance(disc[:12], empty[:12])
    assert apart > 5 * floor > 0
    rows = frechet_table(f, y, f[::-1], y[::-1], ["Disc", "Empty"])  # "generated" = the same galaxies
    assert [r["class"] for r in rows] == ["Disc", "Empty", "all"] and rows[0]["n"] == 12
    swapped = frechet_table(f, y, f, 1 - y, ["Disc", "Empty"])  # generated with the wrong class
    assert swapped[0]["ratio"] > 5 * rows[0]["ratio"]


def _profiles(n, size=32, sersic=0.5, seed=0):
    """(n, 3, size, size) Sérsic-like profiles of index ``sersic`` on sky noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(xx, yy)
    prof = np.exp(-2.0 * ((r / 4.0) ** (1 / sersic) - 1))
    prof = 0.8 * prof / prof.max()
    img = prof[None, None] + rng.normal(0, 0.01, (n, 3, size, size))
    return np.clip(img + 0.05, 0, 1).astype(np.float32)


def test_statmorph_real_vs_generated_on_tiny_images():
    from galmo.methods.generative.fidelity import MORPHOLOGY_COLUMNS, morphology_summary, morphology_table

    n = 6
    real = np.concatenate([_profiles(n, sersic=0.5), _profiles(n, sersic=0.5, seed=1)])
    gen = np.concatenate([_profiles(n, sersic=0.5, seed=2), _profiles(n, sersic=1.0, seed=3)])
    lab = np.repeat([0, 1], n)  # class "same": the same profile; class "other": a steeper one is generated
    df = morphology_table(real, lab, gen, lab, ["same", "other"])
    assert len(df) == 4 * n and set(df["set"]) == {"real", "generated"} and df["gini"].notna().all()
    rows = {(r["class"], r["parameter"]): r for r in morphology_summary(df)}
    assert {p for _, p in rows} == set(MORPHOLOGY_COLUMNS)
    assert rows["same", "concentration"]["ks"] <= 0.5 and rows["other", "concentration"]["ks"] == 1.0
    assert rows["other", "sersic_n"]["median_generated"] > 0.9 > 0.6 > rows["other", "sersic_n"]["median_real"]


@pytest.mark.filterwarnings("ignore:.*too few for a stratified validation split", "ignore:No sources were found")
def test_measure_fidelity_on_a_generator_run(trained, tmp_path):
    from galmo.methods.generative.fidelity import FIDELITY_JSON, GENERATED, measure_fidelity
    from galmo.methods.supervised.run import train

    real = two_classes(tmp_path / "real.h5", n=24, seed=5)  # other sky noise than the generator's training set
    judge = tmp_path / "judge"
    train(str(real), str(judge), model="simple_cnn", width=4, epochs=10, batch_size=8, lr=1e-2, test_frac=0.0,
          evaluate_at_end=False, **QUIET)  # it calls all 24 real galaxies right
    res = measure_fidelity(trained, real, per_class=6, judge=judge, steps=5, log=lambda *a: None)
    assert [r["class"] for r in res["frechet"]] == ["Disc", "Empty", "all"]
    assert all(r["n"] == 6 and r["fd_generated_real"] > 0 for r in res["frechet"][:2])
    acc = {r["class"]: r["accuracy"] for r in res["conditional"]}
    assert acc["Disc"] >= 5 / 6 and acc["Empty"] >= 5 / 6  # the condition is honoured, seen by a classifier
    morph = {(r["class"], r["parameter"]): r for r in res["morphology"]}
    assert morph["Disc", "gini"]["n_generated"] >= 4  # (statmorph flags these toy discs that fill the 16 px image as
    assert morph["Empty", "gini"]["n_real"] == 0  # bad; on empty sky it finds no source: no KS statistic then)
    assert json.loads((trained / FIDELITY_JSON).read_text())["settings"]["per_class"] == 6
    report = (trained / "report.html").read_text()
    assert "Generator fidelity" in report and "fd_real_real" in report and "Conditional fidelity" in report
    assert (trained / "figures" / "fidelity_grid.png").exists()
    stamp = (trained / GENERATED).stat().st_mtime_ns
    again = measure_fidelity(trained, real, per_class=6, steps=5, morphology=False, log=lambda *a: None)
    assert (trained / GENERATED).stat().st_mtime_ns == stamp  # same settings: the generated set is reused
    assert again["frechet"] == res["frechet"]


def test_fidelity_verb_writes_into_the_generator_run_and_refuses_a_non_class_judge(trained, tmp_path, capsys):
    import shutil

    from galmo.methods.generative.fidelity import FIDELITY_JSON

    run = shutil.copytree(trained, tmp_path / "gen")
    real = two_classes(tmp_path / "real.h5", n=16, seed=7)
    assert main(["fidelity", "--generator", str(run), "--data", str(real), "--per-class", "3", "--steps", "3",
                 "--no-morphology", "--no-progress"]) == 0
    res = json.loads((run / FIDELITY_JSON).read_text())
    assert res["settings"]["per_class"] == 3 and res["settings"]["real"] == str(real)
    assert [r["class"] for r in res["frechet"]] == ["Disc", "Empty", "all"] and "morphology" not in res
    disc, empty = res["frechet"][:2]  # discs and sky: both far above zero, and each class its own floor
    assert disc["fd_generated_real"] > 0 and empty["fd_generated_real"] > 0 and disc["n"] == empty["n"] == 3
    assert "fidelity.json" in capsys.readouterr().out
    assert main(["fidelity", "--generator", str(run), "--judge", str(trained), "--per-class", "2", "--steps", "2",
                 "--no-morphology", "--no-progress"]) == 2
    assert "galmo: error:" in (err := capsys.readouterr().err) and "not a supervised run" in err


def test_demo_generative_section_quick(tmp_path):
    src = two_classes(tmp_path / "two.h5", n=64)
    run = tmp_path / "demo"
    assert main(["demo", "--data", str(src), "--out", str(run), "--only", "generative", "--quick"]) == 0
    assert json.loads((run / "demo_timings.json").read_text())["failed"] == []
    section = json.loads((run / "sections" / "generative.json").read_text())
    assert section["figures"] == ["generator/figures/generative_grid.png", "generator/figures/generative_loss.png"]
    assert "Generative model" in (run / "report.html").read_text()


@pytest.mark.filterwarnings("ignore:.*too few for a stratified validation split")
def test_rare_feature_case_generates_from_the_votes_of_the_rare_galaxies(tmp_path):
    from galmo.methods.generative.rare_feature import run_rare_feature

    cfg = gcfg.AugmentConfig(out=str(tmp_path), generator_size="micro", n_train=60, n_test_per_class=3, n_generated=6,
                             generator_updates=2, classifier_epochs=1, width=4, steps=2, seeds=(0,),
                             rare_feature="dust_lane", progress=False)
    res = run_rare_feature(cfg, tmp_path, log=lambda *a: None)
    assert res["label"] == "dust lane" and res["n_train"]["dust lane"] == 4 and res["n_test"]["dust lane"] == 3
    train = open_source(tmp_path / "feature" / "train.h5").catalog
    assert res["n_train"]["no dust lane"] == (train["label"] == 0).sum() > 10
    assert (train.loc[train["label"] == 1, "Class8.7"] > train.loc[train["label"] == 0, "Class8.7"].mean()).all()
    gen = open_source(tmp_path / "feature" / "generated_s0.h5").catalog
    rare_ids = set(train.loc[train["label"] == 1, "id"])
    assert len(gen) == 6 and (gen["label_name"] == "dust lane").all()
    assert {c.removeprefix("like=") for c in gen["condition"]} <= rare_ids  # from the rare galaxies' own votes
    assert [r["arm"] for r in res["summary"]] == ["as_is", "generated", "oversampled"]
    assert len(open_source(tmp_path / "feature" / "train_generated_s0.h5")) == len(train) + 6
    from galmo.methods.generative.fidelity import measure_fidelity  # a vote model: from real galaxies' votes

    res = measure_fidelity(tmp_path / "feature" / "generator", tmp_path / "feature" / "test.h5", per_class=1, steps=2,
                           morphology=False, log=lambda *a: None)
    gen = open_source(tmp_path / "feature" / "generator" / "fidelity" / "generated.h5").catalog
    assert sorted(gen["label_name"]) == ["dust lane", "no dust lane"] and gen["Class8.7"].notna().all()
    assert res["frechet"] == []  # 1 generated galaxy a class: too few for a Fréchet distance (n ≥ 2)
