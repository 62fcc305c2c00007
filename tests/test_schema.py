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
