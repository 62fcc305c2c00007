"""Label schemas as data: Galaxy10 classes and the Galaxy Zoo 2 decision tree.

The decision tree is the one of the Galaxy Zoo challenge (Kaggle, Willett et al. 2013): 11
questions, 37 answers. Kaggle stores *cumulative* vote fractions: an answer's value is the fraction
of all volunteers who reached the question and gave that answer, so a question's answers sum to
the weight of its parent answer. Dieleman, Willett & Dambre (2015) produce these with a network
whose outputs are, per question, rectified and normalised to sum 1 and then multiplied by the
parent weight. :func:`normalise_votes` does exactly that for numpy arrays and torch tensors.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

GALAXY10_CLASSES = [
    "Disturbed",
    "Merging",
    "Round Smooth",
    "In-between Round Smooth",
    "Cigar Shaped Smooth",
    "Barred Spiral",
    "Unbarred Tight Spiral",
    "Unbarred Loose Spiral",
    "Edge-on without Bulge",
    "Edge-on with Bulge",
]


@dataclass(frozen=True)
class Question:
    number: int
    text: str
    answers: tuple[str, ...]
    parent: str | None  # the cumulative answer column whose value weights this question; None = 1

    @property
    def columns(self) -> list[str]:
        return [f"Class{self.number}.{k + 1}" for k in range(len(self.answers))]


QUESTIONS: tuple[Question, ...] = (
    Question(1, "Is the galaxy simply smooth and rounded, with no sign of a disk?",
             ("smooth", "features or disk", "star or artifact"), None),
    Question(2, "Could this be a disk viewed edge-on?", ("yes", "no"), "Class1.2"),
    Question(3, "Is there a sign of a bar feature through the centre of the galaxy?", ("bar", "no bar"), "Class2.2"),
    Question(4, "Is there any sign of a spiral arm pattern?", ("spiral", "no spiral"), "Class2.2"),
    Question(5, "How prominent is the central bulge, compared with the rest of the galaxy?",
             ("no bulge", "just noticeable", "obvious", "dominant"), "Class2.2"),
    # Q6 is asked of everyone; in the Kaggle data its answers sum to 1 (weight 1), a known quirk.
    Question(6, "Is there anything odd?", ("yes", "no"), None),
    Question(7, "How rounded is it?", ("completely round", "in between", "cigar-shaped"), "Class1.1"),
    Question(8, "Is the odd feature a ring, or is the galaxy disturbed or irregular?",
             ("ring", "lens or arc", "disturbed", "irregular", "other", "merger", "dust lane"), "Class6.1"),
    Question(9, "Does the galaxy have a bulge at its centre? If so, what shape?",
             ("rounded", "boxy", "no bulge"), "Class2.1"),
    Question(10, "How tightly wound do the spiral arms appear?", ("tight", "medium", "loose"), "Class4.1"),
    Question(11, "How many spiral arms are there?", ("1", "2", "3", "4", "more than four", "can't tell"), "Class4.1"),
)

ANSWER_COLUMNS: list[str] = [c for q in QUESTIONS for c in q.columns]
N_ANSWERS = len(ANSWER_COLUMNS)  # 37
_INDEX = {c: i for i, c in enumerate(ANSWER_COLUMNS)}
# (start, stop) slice of each question in the 37-vector
QUESTION_SLICES: list[tuple[int, int]] = []
_s = 0
for _q in QUESTIONS:
    QUESTION_SLICES.append((_s, _s + len(_q.answers)))
    _s += len(_q.answers)
# Evaluation order: a parent question before its children.
_ORDER = [0, 5, 1, 6, 7, 2, 3, 4, 8, 9, 10]
EPS = 1e-12


def _xp(x):
    """torch for tensors, numpy otherwise (without importing torch when the caller has not)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return torch
    import numpy as np

    return np


def _rowsum(block):
    return block.sum(1, keepdims=True) if _xp(block).__name__ == "numpy" else block.sum(1, keepdim=True)


def normalise_votes(raw, eps: float = EPS):
    """Network outputs (N, 37) → cumulative vote fractions obeying the decision tree.

    Per question: ReLU, divide by the sum (+eps), multiply by the parent weight (which is itself
    the cumulative value of the parent answer). Works on numpy arrays and (differentiably) on torch
    tensors.
    """
    xp = _xp(raw)
    relu = xp.clip(raw, 0, None) if xp.__name__ == "numpy" else raw.clamp(min=0)
    return cumulative_from_conditional(conditional_from_cumulative(relu, eps))


def parent_weights(cumulative):
    """(N, 37) cumulative fractions → (N, 11) weight of each question (1 for Q1 and Q6)."""
    xp = _xp(cumulative)
    ws = []
    for q in QUESTIONS:
        if q.parent is None:
            w = cumulative[:, :1] * 0 + 1
        else:
            i = _INDEX[q.parent]
            w = cumulative[:, i:i + 1]
        ws.append(w)
    return xp.concatenate(ws, axis=1) if xp.__name__ == "numpy" else xp.cat(ws, dim=1)


def conditional_from_cumulative(cumulative, eps: float = EPS):
    """Cumulative (Kaggle) fractions → per-question conditional fractions (each question sums to 1
    where its weight is > 0, else 0)."""
    xp = _xp(cumulative)
    out = []
    for a, b in QUESTION_SLICES:
        block = cumulative[:, a:b]
        out.append(block / (_rowsum(block) + eps))
    return xp.concatenate(out, axis=1) if xp.__name__ == "numpy" else xp.cat(out, dim=1)


def cumulative_from_conditional(conditional):
    """Per-question conditional fractions → cumulative (Kaggle) fractions (the inverse of the above)."""
    xp = _xp(conditional)
    cols: list = [None] * len(QUESTIONS)
    done: dict[str, object] = {}
    for qi in _ORDER:
        q = QUESTIONS[qi]
        a, b = QUESTION_SLICES[qi]
        block = conditional[:, a:b]
        if q.parent is not None:
            block = block * done[q.parent]
        for k, c in enumerate(q.columns):
            done[c] = block[:, k:k + 1]
        cols[qi] = block
    return xp.concatenate(cols, axis=1) if xp.__name__ == "numpy" else xp.cat(cols, dim=1)
