"""Simulated Galaxy Zoo volunteers: vote fractions of the GZ2 decision tree from the truth.

For every question a conditional answer distribution is derived from the galaxy's truth (class,
inclination, bar strength, arm strength and visibility, bulge fraction, pitch angle, axis ratio,
odd features and anomalies), perturbed per galaxy (a Dirichlet draw: volunteers disagree more on
some galaxies than others). About 40 volunteers (as in GZ2, Willett et al. 2013) then walk the
tree: each question's votes are a multinomial draw among the volunteers who reached it. The
per-question fractions become Kaggle's cumulative fractions with
:func:`galmo.core.schema.cumulative_from_conditional`, so they obey the tree exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from galmo.core.errors import GalmoError
from galmo.core.schema import GZ2_KAGGLE, QUESTION_SLICES, Schema, cumulative_from_conditional, get_schema

MEAN_VOLUNTEERS = 42
DIRICHLET_CONCENTRATION = 40.0


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _nz(x, default=0.0) -> float:
    x = float(x)
    return default if not math.isfinite(x) else x


def _soft(values, centres, width) -> np.ndarray:
    return np.exp(-0.5 * ((values - np.asarray(centres)) / width) ** 2) + 0.02


def answer_probabilities(t: dict) -> list[np.ndarray]:
    """Per-question answer probabilities (list of 11 arrays) implied by a truth row."""
    cls, anomaly = int(t["class"]), t.get("anomaly_type", "")
    fwhm = _nz(t.get("psf_fwhm", t.get("psf_fwhm_r", math.nan)), 1.2)
    vis = t["r50_arcsec"] / (t["r50_arcsec"] + fwhm)  # how well resolved: 0.5–0.9
    arms = _nz(t["arm_strength"]) * vis
    artifact = 0.01 + (0.3 if anomaly in ("satellite_trail", "cosmic_rays") else 0.0)
    feat = {0: 0.55 + 0.25 * _nz(t["clumpiness"]), 1: 0.5, 2: 0.07, 3: 0.12, 4: 0.22 + 0.3 * (_nz(t["disk_frac"]) > 0),
            5: 0.55 + 0.4 * vis, 6: 0.5 + 0.4 * vis, 7: 0.55 + 0.4 * vis, 8: 0.65 + 0.3 * vis, 9: 0.6 + 0.3 * vis}[cls]
    q1 = np.array([(1 - feat) * (1 - artifact), feat * (1 - artifact), artifact])
    inc, q = _nz(t["inclination_deg"], -1.0), _nz(t["axis_ratio"], 1.0)
    edge = _sig((inc - 76.0) / 3.5) if inc >= 0 else 0.7 * _sig((0.33 - q) / 0.06)
    q2 = np.array([edge, 1 - edge])
    bar = 0.05 + 0.88 * _sig((_nz(t["bar_strength"]) - 0.05) / 0.015) * (0.5 + 0.5 * vis)
    spiral = 0.06 + 0.88 * _sig((arms - 0.12) / 0.05)
    bt = _nz(t["bulge_frac"])
    q5 = _soft(bt, [0.0, 0.08, 0.25, 0.55], 0.08)
    odd = {0: 0.75, 1: 0.92}.get(cls, 0.06)
    odd = max(odd, 0.85 if anomaly else 0.0, 0.6 if t["tidal_features"] else 0.0,
              min(0.5, 0.2 * _nz(t["dust_tau_g"])), 0.3 if math.isfinite(_nz(t["ring_radius_arcsec"], np.nan)) else 0.0)
    q7 = _soft(q, [0.92, 0.62, 0.3], 0.1)
    q8 = np.full(7, 0.03)  # ring, lens/arc, disturbed, irregular, other, merger, dust lane
    q8 += {0: np.array([0, 0, 0.6, 0.45, 0.05, 0.1, 0]), 1: np.array([0, 0, 0.25, 0.05, 0.02, 1.0, 0])}.get(cls, 0)
    if anomaly:
        q8[{"ring": 0, "lensed_arc": 1}.get(anomaly, 4)] += 1.2  # trails, cosmic rays: "other"
    q8[6] += 0.5 * _nz(t["dust_tau_g"])
    if math.isfinite(_nz(t["ring_radius_arcsec"], np.nan)):
        q8[0] += 0.5
    q9 = np.array([0.75, 0.12, 0.13] if bt > 0.1 else [0.45, 0.1, 0.45] if bt > 0.03 else [0.1, 0.05, 0.85])
    q10 = _soft(_nz(t["pitch_deg"], 20.0), [10.0, 20.0, 32.0], 6.0) if t["n_arms"] else np.ones(3)
    q11 = _arm_count(int(t["n_arms"]), arms)
    return [q1, q2, np.array([bar, 1 - bar]), np.array([spiral, 1 - spiral]), q5, np.array([odd, 1 - odd]),
            q7, q8, q9, q10, q11]


def _arm_count(m: int, visible: float) -> np.ndarray:
    """1, 2, 3, 4, more than four, can't tell: the true count with ±1 confusion; faint arms → can't tell."""
    p = np.full(6, 0.02)
    if 1 <= m <= 4:
        p[m - 1] += 0.7
        p[max(m - 2, 0)] += 0.1
        p[min(m, 4)] += 0.1
    p /= p.sum()
    cant = float(np.clip(0.1 + 0.7 * (1 - 3 * visible), 0.08, 0.85))
    p *= 1 - cant
    p[5] += cant
    return p


def sample_votes(rng: np.random.Generator, truth: dict) -> tuple[np.ndarray, int]:
    """Per-question (conditional) vote fractions (37,) and the number of volunteers for one galaxy.

    Each question's fractions sum to 1 among the volunteers who reached it (0 if none did);
    :func:`to_cumulative` turns a stack of them into Kaggle's cumulative convention.
    """
    counts, n = _volunteers(rng, GZ2_KAGGLE, answer_probabilities(truth))
    cond = np.zeros(len(counts))
    for a, b in QUESTION_SLICES:
        k = counts[a:b].sum()
        if k > 0:
            cond[a:b] = counts[a:b] / k
    return cond, n


def _volunteers(rng: np.random.Generator, schema: Schema, probs: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """(vote counts (answers,), volunteers): each question's probabilities perturbed by a Dirichlet draw,
    then about :data:`MEAN_VOLUNTEERS` volunteers walk the tree (:func:`walk_tree`)."""
    probs = [rng.dirichlet(DIRICHLET_CONCENTRATION * p / p.sum() + 1e-3) for p in probs]
    n = max(10, int(rng.poisson(MEAN_VOLUNTEERS)))
    return walk_tree(rng, schema, probs, n), n


def walk_tree(rng: np.random.Generator, schema: Schema, probs: list[np.ndarray], n: int) -> np.ndarray:
    """Vote counts (answers,) of ``n`` volunteers walking ``schema``'s tree: each question's votes are a
    multinomial draw (``probs``: one normalised array per question) among the volunteers who gave its
    parent answer (everyone for a question without one); parents are drawn before their children."""
    index = schema.column_index
    counts = np.zeros(len(index))
    for qi in schema.order:
        q, (a, b) = schema.questions[qi], schema.slices[qi]
        k = n if q.parent is None else int(counts[index[q.parent]])
        counts[a:b] = rng.multinomial(k, probs[qi])
    return counts


def to_cumulative(conditional: np.ndarray) -> np.ndarray:
    """(N, 37) per-question fractions → cumulative fractions obeying the decision tree."""
    return np.asarray(cumulative_from_conditional(np.asarray(conditional, dtype=np.float64)))


# ------------------------------------------------------------------ the other campaigns' schemas
# Each campaign question (its name without the campaign tag) takes its answer probabilities from one
# distribution of the Kaggle GZ2 tree (Q1 .. Q11 of answer_probabilities) or from "odd": [nothing odd,
# then Q8's seven odd features × P(odd)]; each answer (by its column suffix) is a weighting of that
# distribution's answers, and each question's weights are renormalised. A constant is used where the
# truth says nothing (clump counts). Approximate by design: the truth is the simulator's.
_E = {k: [float(i == k) for i in range(7)] for k in range(7)}
CAMPAIGN_ANSWERS: dict[str, tuple] = {
    "smooth-or-featured": (1, {"_smooth": _E[0][:3], "_featured-or-disk": _E[1][:3], "_features": _E[1][:3],
                               "_artifact": _E[2][:3], "_problem": _E[2][:3]}),
    "disk-edge-on": (2, {"_yes": [1, 0], "_no": [0, 1]}),
    "bar": (3, {"_yes": [1, 0], "_no": [0, 1], "_strong": [0.55, 0], "_weak": [0.45, 0.05]}),
    "has-spiral-arms": (4, {"_yes": [1, 0], "_no": [0, 1]}),
    "bulge-size": (5, {"_none": [1, 0.3, 0, 0], "_no": [1, 0, 0, 0], "_small": [0, 0.7, 0, 0],
                       "_just-noticeable": [0, 1, 0, 0], "_moderate": [0, 0, 0.6, 0], "_obvious": [0, 0.2, 1, 0],
                       "_large": [0, 0, 0.4, 0.3], "_dominant": [0, 0, 0, 1]}),
    "something-odd": (6, {"_yes": [1, 0], "_no": [0, 1]}),
    "how-rounded": (7, {"_round": _E[0][:3], "_completely": _E[0][:3], "_in-between": _E[1][:3],
                        "_cigar-shaped": _E[2][:3], "_cigar": _E[2][:3]}),
    "edge-on-bulge": (9, {"_rounded": [1, 0, 0], "_boxy": [0, 1, 0], "_none": [0, 0, 1], "_yes": [1, 1, 0],
                          "_no": [0, 0, 1]}),
    "bulge-shape": (9, {"_rounded": [1, 0, 0], "_round": [1, 0, 0], "_boxy": [0, 1, 0], "_none": [0, 0, 1],
                        "_no-bulge": [0, 0, 1]}),
    "spiral-winding": (10, {"_tight": _E[0][:3], "_medium": _E[1][:3], "_loose": _E[2][:3]}),
    "spiral-arm-count": (11, {"_1": _E[0][:6], "_2": _E[1][:6], "_3": _E[2][:6], "_4": _E[3][:6],
                              "_more-than-4": _E[4][:6], "_5-plus": _E[4][:6], "_cant-tell": _E[5][:6]}),
    # odd: [nothing odd, ring, lens or arc, disturbed, irregular, other, merger, dust lane]
    "merging": ("odd", {"_none": [1, 1, 1, 0, 0.5, 1, 0, 1], "_neither": [1, 1, 1, 0, 0.5, 1, 0, 1],
                        "_minor-disturbance": [0, 0, 0, 0.5, 0.5, 0, 0, 0],
                        "_major-disturbance": [0, 0, 0, 0.5, 0, 0, 0.2, 0], "_tidal-debris": [0, 0, 0, 0.5, 0, 0, 0.1, 0],
                        "_both": [0, 0, 0, 0, 0, 0, 0.3, 0], "_merger": [0, 0, 0, 0, 0, 0, 1, 0]}),
    "clumpy-appearance": ("odd", {"_yes": [0.05, 0, 0, 0.5, 1, 0, 0.3, 0], "_no": [0.95, 1, 1, 0.5, 0, 1, 0.7, 1]}),
    "galaxy-symmetrical": ("odd", {"_yes": [1, 1, 1, 0, 0, 1, 0, 1], "_no": [0, 0, 0, 1, 1, 0, 1, 0]}),
    "clump-count": (None, {"_1": [0.15], "_2": [0.3], "_3": [0.2], "_4": [0.1], "_5-plus": [0.1], "_cant-tell": [0.15]}),
    "clumps-embedded-larger-object": (None, {"_yes": [0.6], "_no": [0.4]}),
}


def campaign_probabilities(truth: dict, schema: Schema) -> list[np.ndarray]:
    """Per-question answer probabilities of ``schema`` (one array per question) implied by a truth row,
    through :data:`CAMPAIGN_ANSWERS` (the Kaggle table: :func:`answer_probabilities` itself)."""
    base = answer_probabilities(truth)
    if schema.name == GZ2_KAGGLE.name:
        return base
    sources = {k + 1: p / p.sum() for k, p in enumerate(base)}
    odd = sources[6][0]
    sources["odd"] = np.concatenate([[1 - odd], odd * sources[8]])
    sources[None] = np.ones(1)
    out = []
    for q in schema.questions:
        key = q.name.rsplit("-", 1)[0]
        if key not in CAMPAIGN_ANSWERS:
            raise GalmoError(f"the simulator has no volunteers for question {q.name!r} of schema {schema.name}")
        src, weights = CAMPAIGN_ANSWERS[key]
        p = np.array([np.dot(weights[c[len(q.name):]], sources[src]) for c in q.columns]) + 1e-3
        out.append(p / p.sum())
    return out


def campaign_counts(truth: pd.DataFrame, schema, seed: int = 0) -> pd.DataFrame:
    """Simulated volunteers' vote counts for the campaign ``schema`` (any of :data:`galmo.core.schemas.SCHEMA_NAMES`)
    from a simulator truth table (``<stem>.truth.parquet``): ``id``, one column per answer and
    ``<question>_total-votes`` (galaxy-datasets' layout), and ``n_volunteers``. Seeded per galaxy from
    ``seed`` and its position, so a subset draws the same votes. The Kaggle table's counts are its
    cumulative fractions × ``n_volunteers`` when the truth has both (the votes the simulator drew)."""
    schema = get_schema(schema)
    if schema.name == GZ2_KAGGLE.name and {"n_volunteers", *schema.label_cols} <= set(truth.columns):
        n = truth["n_volunteers"].to_numpy(np.int64)
        counts = np.rint(truth[schema.label_cols].to_numpy(np.float64) * n[:, None])
    else:
        rows = truth.to_dict("records")
        drawn = [_volunteers(np.random.default_rng([seed, i, 7]), schema, campaign_probabilities(t, schema))
                 for i, t in enumerate(rows)]
        counts = np.array([c for c, _ in drawn]).reshape(len(rows), len(schema.label_cols))
        n = np.array([k for _, k in drawn], np.int64)
    df = pd.DataFrame(counts.astype(np.int64), columns=schema.label_cols)
    totals = pd.DataFrame(schema.totals(counts).astype(np.int64), columns=schema.total_columns)
    return pd.concat([truth[["id"]].reset_index(drop=True).astype(str), df, totals,
                      pd.DataFrame({"n_volunteers": n})], axis=1)
