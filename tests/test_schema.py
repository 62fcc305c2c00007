"""The Galaxy Zoo decision tree (galmo.core.schema) checked against arithmetic done by hand."""

from __future__ import annotations

import numpy as np
import pytest

from galmo.core.schema import (ANSWER_COLUMNS, QUESTION_SLICES, QUESTIONS, conditional_from_cumulative,
                          cumulative_from_conditional, normalise_votes, parent_weights)

# One galaxy's raw network outputs, question by question (negative values are cut by the ReLU).
RAW = {
    1: [2, 1, 1],                    # sum 4   -> 0.5, 0.25, 0.25                 (weight 1)
    2: [1, 3],                       # sum 4   -> 0.25, 0.75  x w2 = Q1.2 = 0.25
    3: [1, -1],                      # ReLU [1, 0] -> 1, 0    x w3 = Q1.2*Q2.2 = 0.25*0.75 = 0.1875
    4: [3, 1],                       # sum 4   -> 0.75, 0.25  x w4 = 0.1875
    5: [1, 1, 1, 1],                 # 0.25 each              x w5 = 0.1875
    6: [1, 4],                       # sum 5   -> 0.2, 0.8                         (weight 1)
    7: [0, 2, 2],                    # 0, 0.5, 0.5            x w7 = Q1.1 = 0.5
    8: [1, 1, 1, 1, 1, 1, 4],        # sum 10  -> 0.1 x6, 0.4 x w8 = Q6.1 = 0.2
    9: [1, 1, 2],                    # sum 4   -> .25,.25,.5  x w9 = Q1.2*Q2.1 = 0.25*0.25 = 0.0625
    10: [2, 1, 1],                   # sum 4   -> .5,.25,.25  x w10 = w4*Q4.1 = 0.1875*0.75 = 0.140625
    11: [1, 1, 1, 1, -5, 4],         # ReLU, sum 8 -> 1/8 x4, 0, 1/2  x w11 = 0.140625
}
EXPECTED = {  # cumulative fractions, computed by hand from the comments above
    1: [0.5, 0.25, 0.25],
    2: [0.0625, 0.1875],
    3: [0.1875, 0.0],
    4: [0.140625, 0.046875],
    5: [0.046875] * 4,
    6: [0.2, 0.8],
    7: [0.0, 0.25, 0.25],
    8: [0.02] * 6 + [0.08],
    9: [0.015625, 0.015625, 0.03125],
    10: [0.0703125, 0.03515625, 0.03515625],
    11: [0.017578125] * 4 + [0.0, 0.0703125],
}
WEIGHTS = [1, 0.25, 0.1875, 0.1875, 0.1875, 1, 0.5, 0.2, 0.0625, 0.140625, 0.140625]


def _vector(d) -> np.ndarray:
    return np.array([v for q in range(1, 12) for v in d[q]], dtype=np.float64)[None]


def test_schema_shape():
    assert len(ANSWER_COLUMNS) == 37 and ANSWER_COLUMNS[0] == "Class1.1" and ANSWER_COLUMNS[-1] == "Class11.6"
    assert [len(q.answers) for q in QUESTIONS] == [3, 2, 2, 2, 4, 2, 3, 7, 3, 3, 6]


def test_normalise_votes_by_hand():
    out = normalise_votes(_vector(RAW))
    np.testing.assert_allclose(out, _vector(EXPECTED), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(parent_weights(out)[0], WEIGHTS, rtol=1e-9)
    # every question sums to its parent weight
    sums = [out[0, a:b].sum() for a, b in QUESTION_SLICES]
    np.testing.assert_allclose(sums, WEIGHTS, rtol=1e-9)


def test_conditional_cumulative_round_trip():
    rng = np.random.default_rng(0)
    cond = rng.uniform(0.01, 1, (50, 37))
    for a, b in QUESTION_SLICES:
        cond[:, a:b] /= cond[:, a:b].sum(1, keepdims=True)
    cum = cumulative_from_conditional(cond)
    np.testing.assert_allclose(conditional_from_cumulative(cum), cond, rtol=1e-9)
    np.testing.assert_allclose(cumulative_from_conditional(conditional_from_cumulative(cum)), cum, rtol=1e-9)
    # the hand example: its conditional fractions, re-weighted, give the cumulative ones back
    hand = _vector(EXPECTED)
    np.testing.assert_allclose(cumulative_from_conditional(conditional_from_cumulative(hand)), hand, atol=1e-12)
    # normalise_votes of positive outputs = cumulative_from_conditional of their per-question shares
    raw = rng.uniform(0.1, 2, (20, 37))
    shares = np.concatenate([raw[:, a:b] / raw[:, a:b].sum(1, keepdims=True) for a, b in QUESTION_SLICES], 1)
    np.testing.assert_allclose(normalise_votes(raw), cumulative_from_conditional(shares), rtol=1e-9)


def test_numpy_and_torch_agree():
    torch = pytest.importorskip("torch")
    raw = np.random.default_rng(1).normal(0.5, 1, (40, 37))
    t = torch.tensor(raw, requires_grad=True)
    out_t = normalise_votes(t)
    np.testing.assert_allclose(out_t.detach().numpy(), normalise_votes(raw), rtol=1e-10, atol=1e-12)
    out_t.sum().backward()  # differentiable, finite gradients
    assert torch.isfinite(t.grad).all()
    np.testing.assert_allclose(parent_weights(out_t).detach().numpy(), parent_weights(normalise_votes(raw)))
    cum = normalise_votes(np.abs(raw))
    np.testing.assert_allclose(conditional_from_cumulative(torch.tensor(cum)).numpy(),
                               conditional_from_cumulative(cum), rtol=1e-10)
    np.testing.assert_allclose(normalise_votes(torch.tensor(_vector(RAW))).numpy(), _vector(EXPECTED), rtol=1e-9)


# ---------------------------------------------------------------- every campaign (galmo.core.schemas)
# A copy of galaxy-datasets' answer columns (galaxy_datasets/shared/label_metadata.py: the "ortho" pairs),
# written out here, not imported: galaxy-datasets pulls in lightning, torchaudio and datasets.
def _cols(pairs: dict) -> list[str]:
    return [q + a for q, answers in pairs.items() for a in answers.split()]


GALAXY_DATASETS_PAIRS = {
    "gz2": {"smooth-or-featured-gz2": "_smooth _featured-or-disk _artifact", "disk-edge-on-gz2": "_yes _no",
            "has-spiral-arms-gz2": "_yes _no", "bar-gz2": "_yes _no",
            "bulge-size-gz2": "_dominant _obvious _just-noticeable _no", "something-odd-gz2": "_yes _no",
            "how-rounded-gz2": "_round _in-between _cigar", "bulge-shape-gz2": "_round _boxy _no-bulge",
            "spiral-winding-gz2": "_tight _medium _loose",
            "spiral-arm-count-gz2": "_1 _2 _3 _4 _more-than-4 _cant-tell"},
    "decals-dr12": {"smooth-or-featured-dr12": "_smooth _featured-or-disk _artifact", "disk-edge-on-dr12": "_yes _no",
                    "has-spiral-arms-dr12": "_yes _no", "bar-dr12": "_yes _no",
                    "bulge-size-dr12": "_dominant _obvious _none",
                    "how-rounded-dr12": "_completely _in-between _cigar-shaped",
                    "edge-on-bulge-dr12": "_boxy _none _rounded", "spiral-winding-dr12": "_tight _medium _loose",
                    "spiral-arm-count-dr12": "_1 _2 _3 _4 _more-than-4",
                    "merging-dr12": "_neither _tidal-debris _both _merger"},
    "decals-dr5": {"smooth-or-featured-dr5": "_smooth _featured-or-disk _artifact", "disk-edge-on-dr5": "_yes _no",
                   "has-spiral-arms-dr5": "_yes _no", "bar-dr5": "_strong _weak _no",
                   "bulge-size-dr5": "_dominant _large _moderate _small _none",
                   "how-rounded-dr5": "_round _in-between _cigar-shaped", "edge-on-bulge-dr5": "_boxy _none _rounded",
                   "spiral-winding-dr5": "_tight _medium _loose",
                   "spiral-arm-count-dr5": "_1 _2 _3 _4 _more-than-4 _cant-tell",
                   "merging-dr5": "_none _minor-disturbance _major-disturbance _merger"},
    "hubble": {"smooth-or-featured-hubble": "_smooth _features _artifact",
               "how-rounded-hubble": "_completely _in-between _cigar-shaped", "clumpy-appearance-hubble": "_yes _no",
               "clump-count-hubble": "_1 _2 _3 _4 _5-plus _cant-tell", "disk-edge-on-hubble": "_yes _no",
               "bulge-shape-hubble": "_rounded _boxy _none", "bar-hubble": "_yes _no",
               "has-spiral-arms-hubble": "_yes _no", "spiral-winding-hubble": "_tight _medium _loose",
               "spiral-arm-count-hubble": "_1 _2 _3 _4 _5-plus _cant-tell",
               "bulge-size-hubble": "_none _just-noticeable _obvious _dominant",
               "galaxy-symmetrical-hubble": "_yes _no", "clumps-embedded-larger-object-hubble": "_yes _no"},
    "candels": {"smooth-or-featured-candels": "_smooth _features _artifact",
                "how-rounded-candels": "_completely _in-between _cigar-shaped", "clumpy-appearance-candels": "_yes _no",
                "clump-count-candels": "_1 _2 _3 _4 _5-plus _cant-tell", "disk-edge-on-candels": "_yes _no",
                "edge-on-bulge-candels": "_yes _no", "bar-candels": "_yes _no", "has-spiral-arms-candels": "_yes _no",
                "spiral-winding-candels": "_tight _medium _loose",
                "spiral-arm-count-candels": "_1 _2 _3 _4 _5-plus _cant-tell", "bulge-size-candels": "_none _obvious _dominant",
                "merging-candels": "_merger _tidal-debris _both _neither"},
}
GALAXY_DATASETS_PAIRS["decals-dr8"] = {q.replace("-dr5", "-dr8"): a for q, a in GALAXY_DATASETS_PAIRS["decals-dr5"].items()}
# ... and the dependencies of two of them (decals_ortho_dependencies, gz2_ortho_dependencies)
DR5_DEPENDENCIES = {"smooth-or-featured-dr5": None, "disk-edge-on-dr5": "smooth-or-featured-dr5_featured-or-disk",
                    "has-spiral-arms-dr5": "disk-edge-on-dr5_no", "bar-dr5": "disk-edge-on-dr5_no",
                    "bulge-size-dr5": "disk-edge-on-dr5_no", "how-rounded-dr5": "smooth-or-featured-dr5_smooth",
                    "edge-on-bulge-dr5": "disk-edge-on-dr5_yes", "spiral-winding-dr5": "has-spiral-arms-dr5_yes",
                    "spiral-arm-count-dr5": "has-spiral-arms-dr5_yes", "merging-dr5": None}
GZ2_DEPENDENCIES = {"smooth-or-featured-gz2": None, "disk-edge-on-gz2": "smooth-or-featured-gz2_featured-or-disk",
                    "has-spiral-arms-gz2": "smooth-or-featured-gz2_featured-or-disk",
                    "bar-gz2": "smooth-or-featured-gz2_featured-or-disk",
                    "bulge-size-gz2": "smooth-or-featured-gz2_featured-or-disk",
                    "how-rounded-gz2": "smooth-or-featured-gz2_smooth", "bulge-shape-gz2": "disk-edge-on-gz2_yes",
                    "spiral-winding-gz2": "has-spiral-arms-gz2_yes", "spiral-arm-count-gz2": "has-spiral-arms-gz2_yes",
                    "something-odd-gz2": None}


@pytest.mark.parametrize("name", sorted(GALAXY_DATASETS_PAIRS))
def test_schema_columns_match_galaxy_datasets(name):
    from galmo.core.schema import get_schema

    s = get_schema(name)
    assert s.label_cols == _cols(GALAXY_DATASETS_PAIRS[name]) and s.votes == "counts"
    assert [q.name for q in s.questions] == list(GALAXY_DATASETS_PAIRS[name])
    deps = {"decals-dr5": DR5_DEPENDENCIES, "decals-dr8": {q.replace("-dr5", "-dr8"): d and d.replace("-dr5", "-dr8")
                                                           for q, d in DR5_DEPENDENCIES.items()},
            "gz2": GZ2_DEPENDENCIES}.get(name)
    if deps:
        assert {q.name: q.parent for q in s.questions} == deps


def test_schema_sizes_and_names():
    from galmo.core.schema import get_schema
    from galmo.core.schemas import SCHEMA_NAMES

    sizes = {n: (len(get_schema(n).questions), len(get_schema(n).label_cols)) for n in SCHEMA_NAMES}
    assert sizes == {"gz2-kaggle": (11, 37), "gz2": (10, 30), "decals-dr12": (10, 30), "decals-dr5": (10, 34),
                     "decals-dr8": (10, 34), "hubble": (13, 40), "candels": (12, 38)}
    assert get_schema("gz2-kaggle").label_cols == ANSWER_COLUMNS
    with pytest.raises(Exception, match="unknown Galaxy Zoo schema 'dr5'.*decals-dr5"):
        get_schema("dr5")


@pytest.mark.parametrize("name", ["gz2-kaggle", "gz2", "decals-dr12", "decals-dr5", "decals-dr8", "hubble", "candels"])
def test_every_schema_is_a_tree_covering_each_answer_once(name):
    """Each answer column belongs to exactly one question; each question hangs from one answer of
    another question (or from nobody); following the parents from any question reaches a root."""
    from galmo.core.schema import get_schema

    s = get_schema(name)
    owner = {}
    for qi, q in enumerate(s.questions):
        for c in q.columns:
            assert c not in owner, f"{c} is an answer of two questions"
            owner[c] = qi
    assert len(owner) == len(s.label_cols) == sum(b - a for a, b in s.slices)
    assert sorted(s.order) == list(range(len(s.questions)))  # every question once, parents first
    for qi, q in enumerate(s.questions):
        seen, cur = {qi}, q
        while cur.parent is not None:
            assert cur.parent in owner, f"{cur.name} depends on {cur.parent}, not an answer of {name}"
            parent = owner[cur.parent]
            assert parent not in seen, f"{q.name}: the dependencies loop"
            seen.add(parent)
            assert s.order.index(parent) < s.order.index(owner[cur.columns[0]])
            cur = s.questions[parent]
    assert any(q.parent is None for q in s.questions)
    # the tree's arithmetic: cumulative fractions from random counts sum, per question, to the parent weight
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 20, (5, len(s.label_cols))).astype(float)
    cum = s.cumulative_from_counts(counts)
    w = s.question_weights(cum)
    for qi, (a, b) in enumerate(s.slices):
        reached = counts[:, a:b].sum(1) > 0
        np.testing.assert_allclose(cum[reached, a:b].sum(1), w[reached, qi], rtol=1e-9)
