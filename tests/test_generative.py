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


def test_augment_experiment_runs_end_to_end(tmp_path):
    from galmo.methods.generative.augment import ARMS, run_augment

    cfg = gcfg.AugmentConfig(out=str(tmp_path / "aug"), generator_size="micro", n_train=200, n_test_per_class=3,
                             n_generated=12, generator_epochs=1, classifier_epochs=1, width=4, steps=3, seeds=(0,),
                             rare_class="merging", progress=False)
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
    report = (tmp_path / "aug" / "report.html").read_text()
    assert "rare-class experiment" in report and "Generative model" in report


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
