"""Label schemas: Galaxy10 classes and the Galaxy Zoo decision trees (every campaign, as data).

A :class:`Schema` is one campaign's decision tree, built from the plain data of
:mod:`galmo.core.schemas` (``get_schema("decals-dr5")``): questions in order, each with its answer
columns and the answer column that leads to it. Two ways of storing votes exist:

* *counts* (galaxy-datasets / zoobot catalogs): volunteers per answer; a question's total is the
  number of volunteers asked it (:meth:`Schema.totals`);
* *cumulative* fractions (Kaggle, Willett et al. 2013): an answer's value is the fraction of all
  volunteers who reached the question and gave that answer, so a question's answers sum to the weight
  of its parent answer.

Per-question *shares* (:meth:`Schema.shares`: each question's values divided by their sum) turn counts
into vote fractions, cumulative fractions into conditional ones, and Dirichlet concentrations into
the expected fractions. Dieleman, Willett & Dambre (2015) produce cumulative fractions with a network
whose outputs are, per question, rectified and normalised to sum 1 and then multiplied by the parent
weight: :meth:`Schema.normalise_votes`, for numpy arrays and (differentiably) torch tensors.

The module-level names (:data:`QUESTIONS`, :data:`ANSWER_COLUMNS`, :func:`normalise_votes`, ...) are
those of the Kaggle GZ2 37-answer table, galmo's default (what the simulator writes).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property

from galmo.core.errors import GalmoError
from galmo.core.schemas import SCHEMA_NAMES, SCHEMAS

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
EPS = 1e-12
VOTE_STORAGE = ("counts", "cumulative")


@dataclass(frozen=True)
class Question:
    number: int  # 1-based position in its schema
    text: str
    answers: tuple[str, ...]  # human-readable
    parent: str | None  # the answer column whose volunteers were asked this question; None = everyone
    name: str = ""  # the column prefix ('smooth-or-featured-dr5'; 'Class1' in the Kaggle table)
    columns: tuple[str, ...] = field(default=())  # its answer columns, in order


def _xp(x):
    """torch for tensors, numpy otherwise (without importing torch when the caller has not)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return torch
    import numpy as np

    return np


def _cat(xp, blocks):
    return xp.concatenate(blocks, axis=1) if xp.__name__ == "numpy" else xp.cat(blocks, dim=1)


def _rowsum(block):
    return block.sum(1, keepdims=True) if _xp(block).__name__ == "numpy" else block.sum(1, keepdim=True)


def _questions(data: dict) -> tuple[Question, ...]:
    text, answer_text = data.get("text", {}), data.get("answer_text", {})
    deps = data["dependencies"]
    out = []
    for k, (name, suffixes) in enumerate(data["pairs"].items()):
        if name not in deps:
            raise ValueError(f"schema question {name!r} has no dependency entry")
        words = tuple(s.strip("_.-").replace("-", " ") for s in suffixes)
        out.append(Question(k + 1, text.get(name, name.replace("-", " ")), tuple(answer_text.get(name, words)),
                            deps[name], name, tuple(name + s for s in suffixes)))
    return tuple(out)


@dataclass(frozen=True)
class Schema:
    """One Galaxy Zoo decision tree (see the module docstring); build it with :func:`get_schema`."""

    name: str
    title: str
    votes: str  # how catalogs store it: 'counts' or 'cumulative'
    questions: tuple[Question, ...]

    @cached_property
    def label_cols(self) -> list[str]:
        """Every answer column, question by question (galaxy-datasets' ``label_cols``)."""
        return [c for q in self.questions for c in q.columns]

    @cached_property
    def slices(self) -> list[tuple[int, int]]:
        """(start, stop) of each question in a row of :attr:`label_cols`."""
        out, s = [], 0
        for q in self.questions:
            out.append((s, s + len(q.columns)))
            s += len(q.columns)
        return out

    @cached_property
    def column_index(self) -> dict[str, int]:
        """Answer column → its position in a row of :attr:`label_cols`."""
        return {c: k for k, c in enumerate(self.label_cols)}

    @cached_property
    def order(self) -> list[int]:
        """Question positions, every parent question before its children."""
        owner = {c: i for i, q in enumerate(self.questions) for c in q.columns}
        order: list[int] = []
        todo = list(range(len(self.questions)))
        while todo:
            ready = [i for i in todo if self.questions[i].parent is None or owner[self.questions[i].parent] in order]
            if not ready:
                raise ValueError(f"schema {self.name}: the dependencies of {[self.questions[i].name for i in todo]} "
                                 "form a cycle")
            order += ready
            todo = [i for i in todo if i not in ready]
        return order

    @property
    def total_columns(self) -> list[str]:
        """galaxy-datasets' per-question totals: ``<question>_total-votes``."""
        return [f"{q.name}_total-votes" for q in self.questions]

    @property
    def fraction_columns(self) -> list[str]:
        """galaxy-datasets' per-answer vote fractions: ``<answer>_fraction``."""
        return [f"{c}_fraction" for c in self.label_cols]

    def shares(self, values, eps: float = EPS):
        """Each question's values divided by their sum (0 where the sum is 0): counts → vote fractions,
        cumulative → conditional fractions, Dirichlet concentrations → expected fractions."""
        return _cat(_xp(values), [values[:, a:b] / (_rowsum(values[:, a:b]) + eps) for a, b in self.slices])

    def totals(self, counts):
        """(N, questions) volunteers who answered each question."""
        return _cat(_xp(counts), [_rowsum(counts[:, a:b]) for a, b in self.slices])

    def cumulative_from_conditional(self, conditional):
        """Per-question fractions → cumulative fractions (each answer × the weight of its parent answer)."""
        index = self.column_index
        blocks: list = [None] * len(self.questions)
        done: dict[int, object] = {}
        for qi in self.order:
            q, (a, b) = self.questions[qi], self.slices[qi]
            block = conditional[:, a:b]
            if q.parent is not None:
                block = block * done[index[q.parent]]
            for k in range(b - a):
                done[a + k] = block[:, k:k + 1]
            blocks[qi] = block
        return _cat(_xp(conditional), blocks)

    def question_weights(self, cumulative):
        """(N, questions) weight of each question: its parent answer's cumulative value (1 when asked of all)."""
        index = self.column_index
        ws = [cumulative[:, :1] * 0 + 1 if q.parent is None else cumulative[:, index[q.parent]:index[q.parent] + 1]
              for q in self.questions]
        return _cat(_xp(cumulative), ws)

    def normalise_votes(self, raw, eps: float = EPS):
        """Network outputs (N, answers) → cumulative fractions obeying the tree: per question ReLU, divide
        by the sum (+eps), multiply by the parent weight."""
        relu = raw.clip(0, None) if _xp(raw).__name__ == "numpy" else raw.clamp(min=0)
        return self.cumulative_from_conditional(self.shares(relu, eps))

    def cumulative_from_counts(self, counts):
        """Vote counts → cumulative fractions (the Kaggle convention, what galmo's vote metrics compare)."""
        return self.cumulative_from_conditional(self.shares(counts))

    def missing(self, columns) -> list[str]:
        """The answer columns of this schema not among ``columns``."""
        have = set(columns)
        return [c for c in self.label_cols if c not in have]


def get_schema(name: str) -> Schema:
    """The campaign schema ``name`` (one of :data:`SCHEMA_NAMES`); GalmoError listing them otherwise."""
    if isinstance(name, Schema):
        return name
    if name not in _BUILT:
        if name not in SCHEMAS:
            raise GalmoError(f"unknown Galaxy Zoo schema {name!r} (one of {', '.join(SCHEMA_NAMES)})")
        data = SCHEMAS[name]
        if data["votes"] not in VOTE_STORAGE:
            raise ValueError(f"schema {name}: votes must be one of {VOTE_STORAGE}")
        _BUILT[name] = Schema(name, data["title"], data["votes"], _questions(data))
    return _BUILT[name]


_BUILT: dict[str, Schema] = {}


def detect_schema(columns) -> str | None:
    """The schema with the most answer columns among ``columns`` (None when no schema has any)."""
    have = set(columns)
    best, n_best = None, 0
    for name in SCHEMA_NAMES:
        n = sum(c in have for c in get_schema(name).label_cols)
        if n > n_best:
            best, n_best = name, n
    return best


# ------------------------------------------------------------------ the Kaggle GZ2 table, galmo's default
GZ2_KAGGLE = get_schema("gz2-kaggle")
QUESTIONS: tuple[Question, ...] = GZ2_KAGGLE.questions
ANSWER_COLUMNS: list[str] = GZ2_KAGGLE.label_cols
N_ANSWERS = len(ANSWER_COLUMNS)  # 37
QUESTION_SLICES: list[tuple[int, int]] = GZ2_KAGGLE.slices


def normalise_votes(raw, eps: float = EPS):
    """Network outputs (N, 37) → Kaggle cumulative vote fractions (:meth:`Schema.normalise_votes`)."""
    return GZ2_KAGGLE.normalise_votes(raw, eps)


def parent_weights(cumulative):
    """(N, 37) cumulative fractions → (N, 11) weight of each question (1 for Q1 and Q6)."""
    return GZ2_KAGGLE.question_weights(cumulative)


def conditional_from_cumulative(cumulative, eps: float = EPS):
    """Cumulative (Kaggle) fractions → per-question conditional fractions (each question sums to 1
    where its weight is > 0, else 0)."""
    return GZ2_KAGGLE.shares(cumulative, eps)


def cumulative_from_conditional(conditional):
    """Per-question conditional fractions → cumulative (Kaggle) fractions (the inverse of the above)."""
    return GZ2_KAGGLE.cumulative_from_conditional(conditional)
