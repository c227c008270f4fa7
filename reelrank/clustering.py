"""Clustering of unit vectors, shared by learned topics (``reelrank.learned_topics``) and viewer
communities (``reelrank.communities``): spherical k-means (faiss) with k-means++ seeding under
cosine distance, the mean silhouette, the choice of k within bounds by that silhouette, the
normalised mutual information used to compare a clustering with a reference labelling, and the
one-to-one matching of a refit's clusters to the previous ones (``min_cost_assignment``).

Pure NumPy and faiss (the matching is written here: scipy.optimize, which has one, costs a
serving process 38 MB of memory to import).
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import numpy as np


class KChoice(Protocol):
    """What ``choose_k`` reads of a configuration (``learned_topics.TopicConfig`` has it)."""

    min_topics: int
    max_topics: int
    candidates: int
    sample: int
    niter: int
    seed: int
    keep_k_margin: float


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def kmeans(x: np.ndarray, k: int, seed: int, niter: int,
            init: np.ndarray | None = None, nredo: int = 1) -> np.ndarray:
    """(k, D) unit centroids of spherical k-means; ``init`` (k, D): where to start, else
    k-means++ seeding; ``nredo``: seeded starts, the tightest result kept."""
    import faiss

    best: np.ndarray | None = None
    best_fit = -np.inf
    # One thread: faiss' OpenMP threads spin against each other and against serving on a
    # busy machine (a 3,000-vector run took 0.4 s with them, 0.05 s without).
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for r in range(1 if init is not None else nredo):
            start = init if init is not None else kmeanspp(x, k, seed + r)
            km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed + r, spherical=True,
                              verbose=False, min_points_per_centroid=1,
                              max_points_per_centroid=1_000_000)
            km.train(x, init_centroids=np.ascontiguousarray(start, dtype=np.float32))
            c = unit(np.asarray(km.centroids))
            fit = float((x @ c.T).max(axis=1).sum())
            if fit > best_fit:
                best, best_fit = c, fit
    finally:
        faiss.omp_set_num_threads(threads)
    assert best is not None  # at least one start ran
    return best


def kmeanspp(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ seeding under cosine distance (1 - cos: half the squared distance of
    unit vectors): each next seed is the best of a few drawn in proportion to their distance
    from the nearest seed so far (the one leaving the least total distance)."""
    rng = np.random.default_rng(seed)
    trials = 2 + int(math.log(max(k, 1)))
    chosen = [int(rng.integers(len(x)))]
    dist = np.clip(1.0 - x @ x[chosen[0]], 0.0, None)
    for _ in range(1, k):
        total = dist.sum()
        if total <= 0:
            picks = rng.integers(len(x), size=1)
        else:
            picks = rng.choice(len(x), size=trials, p=dist / total)
        options = np.minimum(dist[None, :], np.clip(1.0 - x[picks] @ x.T, 0.0, None))
        best = int(np.argmin(options.sum(axis=1)))
        chosen.append(int(picks[best]))
        dist = options[best]
    return x[chosen]


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of unit vectors ``x`` under cosine distance (0 for a single cluster)."""
    ks, inv = np.unique(labels, return_inverse=True)
    if len(ks) < 2:
        return 0.0
    dist = 1.0 - x @ x.T  # (S, S)
    onehot = np.zeros((len(x), len(ks)))
    onehot[np.arange(len(x)), inv] = 1.0
    sums = dist @ onehot  # (S, K): total distance to each cluster
    counts = onehot.sum(axis=0)
    own = counts[inv]
    a = np.where(own > 1, sums[np.arange(len(x)), inv] / np.maximum(own - 1, 1), 0.0)
    mean = sums / counts[None, :]
    mean[np.arange(len(x)), inv] = np.inf
    b = mean.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def choose_k(x: np.ndarray, cfg: KChoice, previous_k: int | None = None,
             ) -> tuple[int, dict[int, float]]:
    """The number of topics for unit vectors ``x`` within the configured bounds, by the mean
    silhouette of a sample; the previous version's count wins ties within ``keep_k_margin``."""
    n = len(x)
    hi = max(1, min(cfg.max_topics, n // 2))
    lo = max(1, min(cfg.min_topics, hi))
    grid = sorted({int(round(v)) for v in np.geomspace(lo, hi, max(1, cfg.candidates))} | {lo, hi})
    if previous_k is not None and lo <= previous_k <= hi:
        grid = sorted(set(grid) | {previous_k})
    if len(grid) == 1:
        return grid[0], {}
    rng = np.random.default_rng(cfg.seed)
    sample = x[rng.choice(n, size=min(n, cfg.sample), replace=False)]
    scores: dict[int, float] = {}

    def score(k: int) -> float:
        if k not in scores and k > 1:
            c = kmeans(sample, k, cfg.seed, cfg.niter, nredo=3)
            scores[k] = silhouette(sample, np.argmax(sample @ c.T, axis=1))
        elif k not in scores:
            scores[k] = 0.0
        return scores[k]

    for k in grid:
        score(k)
    # Then halve the gap around the best value until neighbours are one apart.
    while True:
        best = max(scores, key=lambda k: (scores[k], -k))
        tried = sorted(scores)
        at = tried.index(best)
        mids = {(tried[j] + best) // 2 for j in (at - 1, at + 1) if 0 <= j < len(tried)
                and abs(tried[j] - best) > 1}
        if not mids:
            break
        for k in mids:
            score(k)
    if previous_k in scores and scores[best] - scores[previous_k] <= cfg.keep_k_margin:
        best = previous_k
    return best, scores


def nmi(a: Sequence, b: Sequence) -> float:
    """Normalised mutual information of two labellings (arithmetic mean of the entropies, as
    scikit-learn's default); 1.0 when both are a single cluster."""
    _, ia = np.unique(np.asarray(a), return_inverse=True)
    _, ib = np.unique(np.asarray(b), return_inverse=True)
    n = len(ia)
    if n == 0:
        return float("nan")
    joint = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(joint, (ia, ib), 1.0)
    p = joint / n
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / (pa[:, None] * pb[None, :])[nz])).sum())
    ha = -float((pa[pa > 0] * np.log(pa[pa > 0])).sum())
    hb = -float((pb[pb > 0] * np.log(pb[pb > 0])).sum())
    if ha == 0 and hb == 0:
        return 1.0
    return max(0.0, mi / ((ha + hb) / 2)) if (ha + hb) > 0 else 0.0


def min_cost_assignment(cost) -> tuple[np.ndarray, np.ndarray]:
    """The one-to-one pairing of rows and columns of a (n, m) cost matrix with the least total
    cost, min(n, m) pairs, as ``(rows, cols)`` sorted by row (scipy's ``linear_sum_assignment``
    answers the same). The Hungarian method with potentials, one shortest augmenting path per
    row, each step over all columns at once: O(n^2 m) for n <= m; a few ms at 100 x 100."""
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError("cost must be a 2-d matrix")
    flipped = c.shape[0] > c.shape[1]
    if flipped:
        c = c.T
    n, m = c.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if not np.isfinite(c).all():
        raise ValueError("cost must be finite")
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, np.int64)  # column j (1-based) -> its row (1-based), 0: free
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            reduced = c[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            options = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(options)) + 1
            delta = options[j1 - 1]
            done = np.nonzero(used)[0]
            u[owner[done]] += delta
            v[done] -= delta
            minv[~used] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # flip the path's pairs back to its start
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.nonzero(owner[1:])[0]
    rows = owner[1:][cols] - 1
    if flipped:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return rows[order].astype(np.int64), cols[order].astype(np.int64)
