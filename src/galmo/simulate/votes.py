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

from galmo.core.schema import QUESTION_SLICES, QUESTIONS, cumulative_from_conditional

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
    fwhm = _nz(t.get("psf_fwhm_r"), 1.2)
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
    probs = [rng.dirichlet(DIRICHLET_CONCENTRATION * p / p.sum() + 1e-3) for p in answer_probabilities(truth)]
    n = max(10, int(rng.poisson(MEAN_VOLUNTEERS)))
    reached = {None: n}  # how many volunteers gave each answer (and so reached its child questions)
    cond = np.zeros(QUESTION_SLICES[-1][1])
    for qi in (0, 5, 1, 6, 7, 2, 3, 4, 8, 9, 10):  # parents before children
        q = QUESTIONS[qi]
        k = reached[q.parent]
        counts = rng.multinomial(k, probs[qi])
        reached.update(zip(q.columns, counts.tolist()))
        a, b = QUESTION_SLICES[qi]
        if k > 0:
            cond[a:b] = counts / k
    return cond, n


def to_cumulative(conditional: np.ndarray) -> np.ndarray:
    """(N, 37) per-question fractions → cumulative fractions obeying the decision tree."""
    return np.asarray(cumulative_from_conditional(np.asarray(conditional, dtype=np.float64)))
