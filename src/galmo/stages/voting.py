"""Voting clustering (eUML, 2024): several clusterers with the same K vote; a galaxy is
*classified* only when enough of them agree.

>>> vc = VotingClustering(n_clusters=20, min_agree=None).fit(X)     # doctest: +SKIP
>>> vc.labels_            # group per galaxy, -1 = unclassified (members disagree)
>>> vc.agreement_         # how many members voted for the winning group
>>> vc.member_labels_     # (N, M) every member's labels, aligned to the reference member
>>> vc.fraction_classified_

What differs from the eUML reference code, and why:

* **Alignment** of every member's labels to the reference member is a Hungarian assignment on the
  overlap (contingency) matrix (:func:`align_labels`), a one-to-one map. eUML maps each cluster to
  the reference cluster it overlaps most (greedy), so two clusters can land on the same label and
  overwrite each other, which inflates the agreement.
* **Scale**: O(N²) members (Agglomerative/ward) are fit on a random subsample (``subsample``) and
  the remaining galaxies are assigned to the nearest cluster centroid; Birch is fit on a
  subsample with an automatic threshold and predicts the rest (nearest subcluster); KMeans becomes
  MiniBatchKMeans beyond ``minibatch_above`` galaxies. 10⁶ × 64 clusters in minutes on 2 cores
  (``benchmarks/bench_cluster.py``).
* **Bagging** (optional): each member is fit ``bagging`` times on bootstrap resamples; each fit
  labels every galaxy, is aligned to the reference, and the member's label is the majority over
  its bags.
* ``n_clusters`` may be a list: every K is fit and ``per_k_`` holds the labels and the fraction
  classified of each; ``labels_`` etc. describe the first K.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from galmo.core.errors import GalmoError
from galmo.stages._common import StageInputError

MEMBERS = ("kmeans", "agglomerative", "birch")


# ----------------------------------------------------------------------------------- alignment
def overlap_matrix(ref: np.ndarray, lab: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: entry [i, j] = number of points with ``lab == i`` and ``ref == j`` (labels ≥ 0)."""
    ref = np.asarray(ref, dtype=np.int64)
    lab = np.asarray(lab, dtype=np.int64)
    ok = (ref >= 0) & (lab >= 0) & (ref < k) & (lab < k)
    return np.bincount(lab[ok] * k + ref[ok], minlength=k * k).reshape(k, k)


def align_labels(ref: np.ndarray, lab: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Relabel ``lab`` to agree with ``ref`` as much as possible, one-to-one.

    Returns ``(aligned, mapping)`` with ``aligned = mapping[lab]``; ``mapping`` is a permutation of
    0..k-1 that maximises the total overlap (Hungarian assignment, ``linear_sum_assignment``).
    Negative labels stay negative.
    """
    from scipy.optimize import linear_sum_assignment

    ref = np.asarray(ref)
    lab = np.asarray(lab)
    if k is None:
        k = int(max(ref.max(initial=-1), lab.max(initial=-1))) + 1
    ov = overlap_matrix(ref, lab, k)
    rows, cols = linear_sum_assignment(-ov)
    mapping = np.empty(k, dtype=np.int64)
    mapping[rows] = cols
    aligned = np.where(lab >= 0, mapping[np.clip(lab, 0, k - 1)], lab)
    return aligned, mapping


def greedy_mapping(ref: np.ndarray, lab: np.ndarray, k: int) -> np.ndarray:
    """eUML's mapping (each cluster → the reference cluster it overlaps most). Kept only to show,
    in tests and docs, how it lets two clusters collide; never used by :class:`VotingClustering`."""
    return overlap_matrix(ref, lab, k).argmax(axis=1)


def vote(member_labels: np.ndarray, min_agree: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of aligned ``member_labels`` (N, M): the most voted label and its vote count.

    A row whose top count is below ``min_agree`` (default: all M members) gets label -1. Ties
    go to the label of the earliest member (the reference first), so the result is deterministic.
    """
    L = np.asarray(member_labels, dtype=np.int64)
    n, m = L.shape
    min_agree = m if min_agree is None else int(min_agree)
    if not 1 <= min_agree <= m:
        raise GalmoError(f"min_agree must be between 1 and the number of members ({m}), got {min_agree}")
    # votes for each member's label = how many members share it (M is small: O(N·M²))
    counts = (L[:, :, None] == L[:, None, :]).sum(axis=2)
    counts = np.where(L >= 0, counts, 0)
    best = counts.argmax(axis=1)  # first member with the top count
    top = counts[np.arange(n), best]
    label = L[np.arange(n), best]
    label = np.where(top >= min_agree, label, -1)
    return label, top


# ----------------------------------------------------------------------------------- members
def _nearest_centroid(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) of every row; scikit-learn computes it in chunks."""
    from sklearn.metrics import pairwise_distances_argmin

    return pairwise_distances_argmin(np.asarray(X, dtype=np.float32), centroids.astype(np.float32)).astype(np.int64)


def _centroids(X: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    c = np.zeros((k, X.shape[1]), dtype=np.float64)
    np.add.at(c, labels, X)
    n = np.bincount(labels, minlength=k).astype(np.float64)
    return (c / np.maximum(n, 1)[:, None]).astype(np.float32)


def auto_birch_threshold(X: np.ndarray, k: int, rng: np.random.Generator, lo: int | None = None,
                         hi: int = 2000) -> float:
    """A Birch threshold giving between ``lo`` (default 10·K) and ``hi`` subclusters on ``X``.

    Starts at the median nearest-neighbour distance of a random subsample and scales it by 1.5
    until the tree (fit without the global step, which is cheap) has a workable size: enough
    subclusters to resolve K groups, few enough for the final ward step to be instant.
    """
    from sklearn.cluster import Birch
    from sklearn.neighbors import NearestNeighbors

    lo = min(lo or 10 * k, len(X))
    pick = rng.choice(len(X), size=min(2000, len(X)), replace=False)
    sub = np.asarray(X[pick], dtype=np.float32)
    d, _ = NearestNeighbors(n_neighbors=2).fit(sub).kneighbors(sub)
    thr = float(np.median(d[:, 1])) or 1e-3
    small = big = None  # thresholds known to give too many / too few subclusters
    for _ in range(20):
        n_sub = len(Birch(threshold=thr, n_clusters=None, branching_factor=50).fit(X).subcluster_centers_)
        if lo <= n_sub <= hi:
            return thr
        if n_sub > hi:
            small = thr
            thr = thr * 2 if big is None else float(np.sqrt(small * big))
        else:
            big = thr
            thr = thr / 2 if small is None else float(np.sqrt(small * big))
    return small if small is not None else thr  # too many subclusters is slow but never wrong


class _Member:
    """One fitted clusterer that can label any point (``predict``)."""

    def __init__(self, name: str, k: int, seed: int, subsample: int, minibatch_above: int,
                 birch_threshold: float | None, birch_subsample: int):
        self.name, self.k, self.seed = name, k, seed
        self.subsample, self.minibatch_above = subsample, minibatch_above
        self.birch_threshold, self.birch_subsample = birch_threshold, birch_subsample

    def fit(self, X: np.ndarray) -> "_Member":
        rng = np.random.default_rng(self.seed)
        n = len(X)
        if self.name == "kmeans":
            from sklearn.cluster import KMeans, MiniBatchKMeans

            if n > self.minibatch_above:
                est = MiniBatchKMeans(self.k, batch_size=4096, n_init=3, random_state=self.seed, max_no_improvement=20)
            else:
                est = KMeans(self.k, n_init=4, random_state=self.seed)
            est.fit(X)
            self.centroids_ = est.cluster_centers_.astype(np.float32)
            self.fit_labels_ = est.labels_.astype(np.int64)
        elif self.name == "agglomerative":
            from sklearn.cluster import AgglomerativeClustering

            sub = np.sort(rng.choice(n, size=self.subsample, replace=False)) if n > self.subsample else np.arange(n)
            est = AgglomerativeClustering(n_clusters=self.k, linkage="ward").fit(X[sub])
            self.centroids_ = _centroids(np.asarray(X[sub], dtype=np.float64), est.labels_, self.k)
            lab = _nearest_centroid(X, self.centroids_) if len(sub) < n else None
            if lab is not None:
                lab[sub] = est.labels_  # points that were clustered keep their own labels
            self.fit_labels_ = lab if lab is not None else est.labels_.astype(np.int64)
        elif self.name == "birch":
            from sklearn.cluster import AgglomerativeClustering, Birch

            sub = (np.sort(rng.choice(n, size=self.birch_subsample, replace=False)) if n > self.birch_subsample
                   else np.arange(n))
            thr = self.birch_threshold or auto_birch_threshold(X[sub], self.k, rng)
            est = Birch(threshold=thr, n_clusters=AgglomerativeClustering(n_clusters=self.k, linkage="ward"),
                        branching_factor=50, compute_labels=True)
            est.fit(X[sub])
            if len(est.subcluster_centers_) < self.k:
                raise GalmoError(f"Birch found only {len(est.subcluster_centers_)} subclusters for K={self.k}; "
                                 "lower the Birch threshold (birch_threshold)")
            self.birch_ = est
            self.threshold_ = thr
            self.fit_labels_ = est.predict(X).astype(np.int64) if len(sub) < n else est.labels_.astype(np.int64)
        else:
            raise GalmoError(f"unknown clustering member {self.name!r}; choose from {', '.join(MEMBERS)}")
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.name == "birch":
            return self.birch_.predict(X).astype(np.int64)
        return _nearest_centroid(X, self.centroids_)


# ----------------------------------------------------------------------------------- estimator
class VotingClustering(ClusterMixin, BaseEstimator):
    """Cluster with several algorithms at the same K and keep the galaxies they agree on.

    Parameters
    ----------
    n_clusters : int or list of int — K (a list fits each K; the first one fills ``labels_``).
    members : names from ``("kmeans", "agglomerative", "birch")``; the first is the reference.
    min_agree : members that must agree for a galaxy to be classified (default: all).
    bagging : 0 (off) or the number of bootstrap fits per member.
    subsample : at most this many points are clustered by Agglomerative (ward, O(N²)); the rest are
        assigned to the nearest centroid.
    birch_subsample, birch_threshold : Birch is fit on at most this many points; threshold
        ``None`` = automatic (:func:`auto_birch_threshold`).
    minibatch_above : KMeans becomes MiniBatchKMeans above this many points.
    random_state : seed of every member.

    Attributes
    ----------
    labels_ (N,) group or -1; agreement_ (N,) votes for the group; member_labels_ (N, M) aligned;
    fraction_classified_; mappings_ (M, K) member label → reference label; per_k_ {K: {...}}.
    """

    def __init__(self, n_clusters: int | Sequence[int] = 20, members: Sequence[str] = MEMBERS,
                 min_agree: int | None = None, bagging: int = 0, subsample: int = 10000,
                 birch_subsample: int = 5000, birch_threshold: float | None = None,
                 minibatch_above: int = 50000, random_state: int = 0, progress: bool = False):
        self.n_clusters = n_clusters
        self.members = members
        self.min_agree = min_agree
        self.bagging = bagging
        self.subsample = subsample
        self.birch_subsample = birch_subsample
        self.birch_threshold = birch_threshold
        self.minibatch_above = minibatch_above
        self.random_state = random_state
        self.progress = progress

    # -- helpers
    def _ks(self) -> list[int]:
        ks = [self.n_clusters] if np.isscalar(self.n_clusters) else list(self.n_clusters)
        if not ks or any(int(k) < 1 for k in ks):  # K = 1 is allowed here (scikit-learn's checks use it)
            raise StageInputError(f"n_clusters (K) must be ≥ 1, got {self.n_clusters}")
        return [int(k) for k in ks]

    def _check(self, X, reset: bool) -> np.ndarray:
        from galmo.stages._common import check_features

        return check_features(self, X, reset=reset, min_samples=2 if reset else 1)

    def _fit_k(self, X: np.ndarray, k: int) -> dict:
        names = list(self.members)
        if not names:
            raise GalmoError("VotingClustering needs at least one member")
        for nm in names:
            if nm not in MEMBERS:
                raise GalmoError(f"unknown clustering member {nm!r}; choose from {', '.join(MEMBERS)}")
        if len(X) < k:
            raise GalmoError(f"cannot make K={k} groups from {len(X)} galaxies")
        fitted, raw = self._fit_members(X, k, names)
        member_labels, mappings = _align_members(raw, k)
        labels, agreement = vote(member_labels, self.min_agree)
        return {"labels": labels, "agreement": agreement, "member_labels": member_labels,
                "mappings": mappings, "members": fitted,
                "fraction_classified": float((labels >= 0).mean())}

    def _fit_members(self, X: np.ndarray, k: int, names: list[str]) -> tuple[list, list]:
        """Each member fitted once (or on ``bagging`` bootstrap samples): (fitted members, their labels of X)."""
        n = len(X)
        kw = dict(subsample=self.subsample, minibatch_above=self.minibatch_above,
                  birch_threshold=self.birch_threshold, birch_subsample=self.birch_subsample)
        fitted, raw = [], []
        bar = _bar(self.progress, len(names) * max(1, self.bagging), f"cluster K={k}")
        for j, nm in enumerate(names):
            if not self.bagging:
                m = _Member(nm, k, self.random_state + 1000 * j, **kw).fit(X)
                fitted.append([m])
                raw.append([m.fit_labels_])
                if bar:
                    bar.update(1)
                continue
            bags, labs = [], []
            for b in range(self.bagging):
                rng = np.random.default_rng([self.random_state, j, b])
                idx = rng.integers(0, n, size=n)
                m = _Member(nm, k, self.random_state + 1000 * j + b, **kw).fit(X[idx])
                bags.append(m)
                labs.append(m.predict(X))
                if bar:
                    bar.update(1)
            fitted.append(bags)
            raw.append(labs)
        if bar:
            bar.close()
        return fitted, raw

    # -- API
    def fit(self, X, y=None):
        X = self._check(X, reset=True)
        self.per_k_ = {k: self._fit_k(X, k) for k in self._ks()}
        first = self.per_k_[self._ks()[0]]
        self.labels_ = first["labels"]
        self.agreement_ = first["agreement"]
        self.member_labels_ = first["member_labels"]
        self.mappings_ = first["mappings"]
        self.members_ = first["members"]
        self.fraction_classified_ = first["fraction_classified"]
        self.member_names_ = list(self.members)
        self.n_members_ = len(self.member_names_)
        return self

    def fraction_classified(self) -> dict[int, float]:
        """K → fraction of galaxies classified (all K fit)."""
        return {k: r["fraction_classified"] for k, r in self.per_k_.items()}

    def predict(self, X, k: int | None = None) -> np.ndarray:
        """Groups (-1 = members disagree) for new points, from the fitted members of K (default first).
        On the fitted points they may differ from ``labels_`` where a member labels its own fit
        differently from new points (Birch's global step, ward on a subsample)."""
        return self.predict_members(X, k)[0]

    def predict_members(self, X, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(groups, agreement, aligned member labels (N, M)) of new points, as ``labels_``,
        ``agreement_`` and ``member_labels_`` are for the fitted ones."""
        from galmo.stages._common import check_fitted

        check_fitted(self, "per_k_")
        X = self._check(X, reset=False)
        r = self.per_k_[k or self._ks()[0]]
        cols = []
        for fitted, maps in zip(r["members"], r["mappings"]):
            labs = [mp[m.predict(X)] for m, mp in zip(fitted, maps)]
            cols.append(labs[0] if len(labs) == 1 else vote(np.stack(labs, 1), 1)[0])
        member_labels = np.stack(cols, 1)
        labels, agreement = vote(member_labels, self.min_agree)
        return labels, agreement, member_labels


def _align_members(raw: list[list[np.ndarray]], k: int) -> tuple[np.ndarray, list]:
    """Every member's labels (of each bag) aligned to the reference's (the first member's first fit):
    (N, M) aligned labels, a bagged member voting over its bags, and the label mappings."""
    ref = raw[0][0]
    member_labels = np.empty((len(ref), len(raw)), dtype=np.int64)
    mappings = []
    for j, labs in enumerate(raw):
        maps, aligned = [], []
        for lab in labs:
            a, mp = align_labels(ref, lab, k)
            aligned.append(a)
            maps.append(mp)
        member_labels[:, j] = aligned[0] if len(aligned) == 1 else vote(np.stack(aligned, 1), 1)[0]
        mappings.append(maps)
    return member_labels, mappings


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="fit", leave=False)
