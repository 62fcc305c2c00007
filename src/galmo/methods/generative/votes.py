"""A vote vector to generate from: read from a file, checked against the Galaxy Zoo decision tree.

The 37 cumulative vote fractions (:data:`galmo.core.schema.ANSWER_COLUMNS`) must be in [0, 1]; the
answers of Q1 and of Q6 (asked of everyone) sum to 1 and every other question's answers sum to the
fraction of its parent answer (:attr:`galmo.core.schema.Question.parent`), within the tolerances of
the GZ2 reader (:mod:`galmo.sources.gz2`). A vector that breaks the tree is refused with the
question it breaks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from galmo.core.errors import GalmoError
from galmo.core.schema import ANSWER_COLUMNS, QUESTION_SLICES, QUESTIONS

Q1_TOLERANCE = 0.01    # = galmo.sources.gz2.Q1_TOLERANCE
TREE_TOLERANCE = 0.05  # = galmo.sources.gz2.TREE_TOLERANCE


def read_votes_file(path) -> np.ndarray:
    """37 vote fractions from a .json file: a list in the order of ANSWER_COLUMNS or {"Class1.1": ...}."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise GalmoError(f"cannot read the vote file ({e.strerror or e})", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GalmoError(f"the vote file is not valid JSON ({e})", path=path) from None
    if isinstance(raw, dict):
        missing = [c for c in ANSWER_COLUMNS if c not in raw]
        if missing:
            raise GalmoError(f"the vote file lacks {len(missing)} of the 37 answers (e.g. {missing[0]})", path=path)
        raw = [raw[c] for c in ANSWER_COLUMNS]
    try:
        votes = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise GalmoError("the vote file must hold 37 numbers (a list or {'Class1.1': ...})", path=path) from None
    if votes.shape != (len(ANSWER_COLUMNS),):
        raise GalmoError(f"the vote file holds {votes.size} values, expected {len(ANSWER_COLUMNS)} "
                         f"({ANSWER_COLUMNS[0]} .. {ANSWER_COLUMNS[-1]})", path=path)
    return votes


def tree_problem(votes: np.ndarray) -> str | None:
    """Why the 37 cumulative fractions break the decision tree (naming the question), or None."""
    votes = np.asarray(votes, dtype=np.float64)
    if not np.isfinite(votes).all():
        return f"{ANSWER_COLUMNS[int(np.flatnonzero(~np.isfinite(votes))[0])]} is not a number"
    col = {c: k for k, c in enumerate(ANSWER_COLUMNS)}
    for q, (a, b) in zip(QUESTIONS, QUESTION_SLICES):
        block = votes[a:b]
        bad = np.flatnonzero((block < -1e-6) | (block > 1 + 1e-6))
        if len(bad):
            return f"Q{q.number} ({q.text}): {q.columns[bad[0]]} = {block[bad[0]]:g} is outside [0, 1]"
        want = 1.0 if q.parent is None else votes[col[q.parent]]
        tol = Q1_TOLERANCE if q.parent is None else TREE_TOLERANCE
        if abs(block.sum() - want) > tol:
            whom = "1 (everyone answers it)" if q.parent is None else \
                f"{want:.3g}, the fraction {q.parent} of volunteers who reached it"
            return f"Q{q.number} ({q.text}): its answers sum to {block.sum():.3g}, not {whom}"
    return None


def check_votes(votes: np.ndarray, where: str = "the vote vector") -> None:
    """Raise a GalmoError naming the question when ``votes`` breaks the decision tree."""
    problem = tree_problem(votes)
    if problem:
        raise GalmoError(f"{where}: the vote fractions break the Galaxy Zoo decision tree: {problem}")
