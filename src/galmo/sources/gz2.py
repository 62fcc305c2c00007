"""Galaxy Zoo 2 as published for the Kaggle Galaxy Challenge (Willett et al. 2013).

``training_solutions_rev1.csv`` holds ``GalaxyID`` and the 37 cumulative vote fractions
``Class1.1`` .. ``Class11.6`` (:data:`galmo.core.schema.ANSWER_COLUMNS`, in that order); the images are
``images_training_rev1/<GalaxyID>.jpg`` (424×424 SDSS gri composites: R=i, G=r, B=g, so the bands
read blue-first are ``('g', 'r', 'i')``).

The catalog keeps the 37 fractions; GZ2 has no Galaxy10 class, so ``label`` is -1. Rows are checked
against the decision tree: every fraction in [0, 1] and the Q1 answers summing to 1 (±0.01);
other rows are an error (``on_error='raise'``) or rejected (``'skip'``). Galaxies without a jpg are
handled the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from galmo.core.errors import BadInput, GalmoError
from galmo.core.schema import ANSWER_COLUMNS, QUESTION_SLICES, QUESTIONS
from galmo.sources.folder import ImageFolderSource, image_header

SOLUTIONS = "training_solutions_rev1.csv"
IMAGE_DIRS = ("images_training_rev1", "images_training", "images")
Q1_TOLERANCE = 0.01
TREE_TOLERANCE = 0.05


class GZ2Source(ImageFolderSource):
    """Kaggle Galaxy Zoo 2 jpgs with their vote fractions (see the module docstring)."""

    format = "gz2"
    colour_bands = ("g", "r", "i")

    def _scan(self, files, progress):
        """Only the first readable jpg's header is read (the Kaggle jpgs share one size); a jpg of
        another size is resized when it is read."""
        for start, f in enumerate(files):
            try:
                head = image_header(f)
            except BadInput as e:
                if self.on_error == "raise":
                    raise
                self._reject(f, str(e.args[0]).removeprefix(f"{f}: "))
                continue
            return [None] * start + [head] * (len(files) - start)
        return [None] * len(files)


def is_gz2_csv(path) -> bool:
    """True when ``path`` is a CSV whose header has GalaxyID and Class1.1 (read only the header)."""
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    try:
        cols = pd.read_csv(path, nrows=0).columns
    except Exception:
        return False
    return "GalaxyID" in cols and "Class1.1" in cols


def find_image_dir(csv: Path) -> Path:
    """The folder of ``<GalaxyID>.jpg`` beside the solutions CSV."""
    for name in IMAGE_DIRS:
        d = csv.parent / name
        if d.is_dir():
            return d
    if any(p.suffix.lower() == ".jpg" for p in csv.parent.iterdir()):
        return csv.parent
    raise GalmoError(f"no image folder beside {csv.name} (looked for {', '.join(IMAGE_DIRS)} and *.jpg in "
                     f"{csv.parent})", path=csv)


def read_solutions(csv: Path) -> pd.DataFrame:
    """The solutions CSV as a catalog (``id`` + 37 fractions), columns checked."""
    try:
        df = pd.read_csv(csv)
    except Exception as e:
        raise GalmoError(f"cannot read Galaxy Zoo CSV ({type(e).__name__}: {e})", path=csv) from e
    missing = [c for c in ["GalaxyID"] + ANSWER_COLUMNS if c not in df.columns]
    if missing:
        shown = ", ".join(missing[:12]) + (f" ... ({len(missing)} in all)" if len(missing) > 12 else "")
        raise GalmoError(f"Galaxy Zoo CSV is missing columns {shown}; expected GalaxyID and "
                         f"Class1.1 .. Class11.6", path=csv)
    from galmo.core.catalog import validate_catalog

    cat = validate_catalog(df.rename(columns={"GalaxyID": "id"})[["id"] + ANSWER_COLUMNS], csv)
    try:
        cat[ANSWER_COLUMNS] = cat[ANSWER_COLUMNS].astype(np.float64)
    except (TypeError, ValueError) as e:
        raise GalmoError(f"vote fractions are not all numbers ({e})", path=csv) from e
    return cat


def tree_problems(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 37) cumulative fractions → (bad rows: reason string or '', tree-inconsistent rows mask).

    Bad: NaN, a fraction outside [0, 1], or Q1 not summing to 1. Tree-inconsistent (only noted): a
    question's answers not summing to its parent's fraction within TREE_TOLERANCE.
    """
    reason = np.full(len(votes), "", dtype=object)
    q1 = votes[:, 0:3].sum(1)
    off_q1 = np.abs(q1 - 1) > Q1_TOLERANCE
    reason[off_q1] = [f"Q1 fractions sum to {s:.3f}, not 1" for s in q1[off_q1]]
    out_of_range = ((votes < -1e-6) | (votes > 1 + 1e-6)).any(1)
    reason[out_of_range] = "a vote fraction is outside [0, 1]"
    nan = ~np.isfinite(votes).all(1)
    reason[nan] = "missing vote fractions"
    col = {c: k for k, c in enumerate(ANSWER_COLUMNS)}
    inconsistent = np.zeros(len(votes), bool)
    for q, (a, b) in zip(QUESTIONS, QUESTION_SLICES):
        if q.parent is not None:
            inconsistent |= np.abs(votes[:, a:b].sum(1) - votes[:, col[q.parent]]) > TREE_TOLERANCE
    return reason, inconsistent


def open_gz2(path, on_error: str = "raise", size=None, fit: str = "resize", progress: bool = False) -> GZ2Source:
    """A Kaggle GZ2 folder (with ``training_solutions_rev1.csv``) or the solutions CSV itself."""
    path = Path(path)
    csv = path / SOLUTIONS if path.is_dir() else path
    image_dir = find_image_dir(csv)
    cat = read_solutions(csv)
    files = np.array([str(image_dir / f"{i}.jpg") for i in cat["id"]], dtype=object)
    present = {e.name for e in os.scandir(image_dir)}
    has_image = np.array([f"{i}.jpg" in present for i in cat["id"]])
    reason, inconsistent = tree_problems(cat[ANSWER_COLUMNS].to_numpy())
    reason[~has_image] = "image file not found"
    bad = reason != ""
    if bad.any() and on_error == "raise":
        i = int(np.flatnonzero(bad)[0])
        what = "have no image in " + str(image_dir) if reason[i] == "image file not found" else \
            "have vote fractions that break the decision tree"
        raise GalmoError(f"{int(bad.sum())} of {len(cat)} galaxies {what} (e.g. GalaxyID {cat['id'].iat[i]}: "
                         f"{reason[i]}); fix the file or use on_error='skip' to skip them", path=csv)
    keep = ~bad
    cat = cat[keep].reset_index(drop=True)
    cat.insert(1, "label", np.int64(-1))
    cat.insert(2, "label_name", "")
    if not len(cat):
        raise GalmoError("no usable galaxies (every row was rejected)", path=csv)
    src = GZ2Source(path, list(files[keep]), on_error=on_error, size=size, fit=fit, catalog=cat)
    src.catalog = src.catalog.drop(columns=["orig_height", "orig_width"])  # only the first jpg was opened
    src.notes = [n for n in src.notes if "pixels:" not in n]
    for f, r in zip(files[bad], reason[bad]):
        src._reject(f, r)
    if inconsistent[keep].any():
        src._note(f"{int(inconsistent[keep].sum())} galaxies have answers that do not sum to their parent "
                  f"answer within {TREE_TOLERANCE}", warn=False)
    return src
