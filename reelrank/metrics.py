"""Pure evaluation metrics: arrays in, floats (or small tuples) out; no I/O, no state.

Conventions shared by every function here:

* An undefined value (no positives, one class only, empty input) is ``nan``, never 0, so a report
  can tell "bad" from "not measurable". Aggregates skip undefined groups.
* Ranks of a target item are **0-based** (0 = top slot); ``inf`` means "cannot be recommended"
  (excluded, not retrieved, or outside the item space).
* Ties never flatter a model: ranking metrics order equal scores pessimistically (see
  ``target_ranks`` and ``grouped_ndcg_at_k``); only AUC uses the standard average-rank treatment,
  where a tied positive/negative pair counts 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# --- helpers --------------------------------------------------------------------------------


def _vector(values: ArrayLike, name: str, nonneg: bool = False) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if nonneg and (np.isnan(arr).any() or (arr < 0).any()):
        raise ValueError(f"{name} must be non-negative")
    return arr


def _binary_labels(labels: ArrayLike) -> np.ndarray:
    y = _vector(labels, "labels")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    return y


def _scores(scores: ArrayLike, n: int) -> np.ndarray:
    s = _vector(scores, "scores")
    if s.shape[0] != n:
        raise ValueError(f"scores has {s.shape[0]} entries, expected {n}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s


def _group_index(group_ids: ArrayLike, n: int) -> np.ndarray:
    ids = np.asarray(group_ids).ravel()
    if ids.shape[0] != n:
        raise ValueError(f"group ids have {ids.shape[0]} entries, expected {n}")
    return np.unique(ids, return_inverse=True)[1].ravel()


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _positions_within_groups(groups_sorted: np.ndarray) -> np.ndarray:
    """0-based position of each element inside its run of equal group ids (input is sorted)."""
    idx = np.arange(groups_sorted.shape[0])
    starts = np.ones(idx.shape[0], dtype=bool)
    starts[1:] = groups_sorted[1:] != groups_sorted[:-1]
    return idx - np.maximum.accumulate(np.where(starts, idx, 0))


def _grouped_average_ranks(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1-based ascending rank of each value inside its group; tied values share their mean rank."""
    n = values.shape[0]
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (g[1:] != g[:-1]) | (v[1:] != v[:-1])
    run_start = np.flatnonzero(new_run)
    run_len = np.diff(np.append(run_start, n))
    run_id = np.cumsum(new_run) - 1
    # in-group position of the run's first element, plus half the run's extent, made 1-based
    first = _positions_within_groups(g) - (np.arange(n) - run_start[run_id])
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = first + (run_len[run_id] - 1) / 2.0 + 1.0
    return ranks


# --- classification over shown impressions --------------------------------------------------


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC by the rank-sum formula; a tied positive/negative pair counts 0.5.

    Returns ``nan`` when the input is empty or holds only one class.
    """
    return gauc_detail(np.zeros(len(np.asarray(labels))), labels, scores)[0]


def gauc_detail(
    user_ids: ArrayLike, labels: ArrayLike, scores: ArrayLike
) -> tuple[float, int, int]:
    """Group AUC: per-user AUC averaged with each user weighted by their impression count.

    Users whose impressions are all positive or all negative have no AUC and are left out.
    Returns ``(value, n_users_used, n_impressions_used)``; ``(nan, 0, 0)`` when no user counts.
    """
    per_user, n = _per_user_auc(user_ids, labels, scores)
    if n.shape[0] == 0:
        return math.nan, 0, 0
    return float(np.sum(per_user * n) / np.sum(n)), int(n.shape[0]), int(n.sum())


def _per_user_auc(user_ids: ArrayLike, labels: ArrayLike,
                  scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(AUC, impressions) of each user with both classes, in sorted user-id order."""
    y = _binary_labels(labels)
    s = _scores(scores, y.shape[0])
    inv = _group_index(user_ids, y.shape[0])
    if y.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    ranks = _grouped_average_ranks(inv, s)
    n = np.bincount(inv).astype(np.float64)
    n_pos = np.bincount(inv, weights=y, minlength=n.shape[0])
    rank_sum_pos = np.bincount(inv, weights=ranks * y, minlength=n.shape[0])
    used = (n_pos > 0) & (n_pos < n)
    n, n_pos, rank_sum_pos = n[used], n_pos[used], rank_sum_pos[used]
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * (n - n_pos)), n


def paired_gauc_difference(user_ids: ArrayLike, labels: ArrayLike, scores_a: ArrayLike,
                           scores_b: ArrayLike, n_boot: int = 2_000, seed: int = 0,
                           level: float = 0.95) -> dict:
    """GAUC of ``scores_a`` minus GAUC of ``scores_b`` on the same impressions, with a
    bootstrap interval over users.

    Both scorings rank the same users' same impressions, so the difference is the
    impression-weighted mean of per-user AUC differences; resampling users (with their weights)
    gives its spread. Returns ``{"diff", "low", "high", "users", "share_a_better"}``, the last
    the share of users whose AUC is higher under ``a`` (ties half); ``nan`` if none has both classes.
    """
    auc_a, n = _per_user_auc(user_ids, labels, scores_a)
    auc_b, _ = _per_user_auc(user_ids, labels, scores_b)
    if n.shape[0] == 0:
        return {"diff": math.nan, "low": math.nan, "high": math.nan, "users": 0,
                "share_a_better": math.nan}
    d = auc_a - auc_b
    return {**_paired(d, n, n_boot, seed, level), "users": int(n.shape[0]),
            "share_a_better": float(np.mean((d > 0) + 0.5 * (d == 0)))}


def paired_mean_difference(a: ArrayLike, b: ArrayLike, n_boot: int = 2_000, seed: int = 0,
                           level: float = 0.95) -> dict:
    """Mean of ``a`` minus mean of ``b`` measured on the same units (one viewer-day each),
    with a bootstrap interval over units: ``{"diff", "low", "high", "n"}`` (``nan`` if empty)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.shape[0] == 0:
        return {"diff": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    return {**_paired(d, np.ones_like(d), n_boot, seed, level), "n": int(d.shape[0])}


def _paired(d: np.ndarray, w: np.ndarray, n_boot: int, seed: int, level: float) -> dict:
    """The ``w``-weighted mean of ``d``, with a bootstrap interval resampling its units."""
    rng = np.random.default_rng(seed)
    picks = (rng.integers(0, d.shape[0], d.shape[0]) for _ in range(n_boot))
    boot = np.array([np.sum(d[k] * w[k]) / np.sum(w[k]) for k in picks])
    tail = (1.0 - level) / 2.0 * 100.0
    return {"diff": float(np.sum(d * w) / np.sum(w)), "low": float(np.percentile(boot, tail)),
            "high": float(np.percentile(boot, 100 - tail))}


def gauc(user_ids: ArrayLike, labels: ArrayLike, scores: ArrayLike) -> float:
    """Impression-weighted per-user AUC; see ``gauc_detail`` for the counts behind it."""
    return gauc_detail(user_ids, labels, scores)[0]


def logloss(labels: ArrayLike, probs: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy (natural log), probabilities clipped to ``[eps, 1 - eps]``."""
    y = _binary_labels(labels)
    p = np.clip(_scores(probs, y.shape[0]), eps, 1.0 - eps)
    if y.shape[0] == 0:
        return math.nan
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


# --- graded ranking (watch time) ------------------------------------------------------------


def _dcg(gains: np.ndarray) -> float:
    return float(np.sum(gains / np.log2(np.arange(gains.shape[0]) + 2.0)))


def ndcg_at_k(relevances_in_ranked_order: ArrayLike, k: int) -> float:
    """NDCG@k with gain = relevance and discount ``log2(rank + 1)`` (rank 1-based).

    The list is the whole candidate set in the order the model ranked it; the ideal DCG sorts the
    same relevances descending. A list with no positive relevance (or an empty list) returns
    ``nan``: there is nothing to rank well, so callers skip it rather than score it 0 or 1.
    """
    _check_k(k)
    rel = _vector(relevances_in_ranked_order, "relevances", nonneg=True)
    ideal = _dcg(np.sort(rel)[::-1][:k])
    return _dcg(rel[:k]) / ideal if ideal > 0 else math.nan


def _grouped_dcg(groups_sorted: np.ndarray, gains_sorted: np.ndarray, k: int) -> np.ndarray:
    pos = _positions_within_groups(groups_sorted)
    keep = pos < k
    disc = gains_sorted[keep] / np.log2(pos[keep] + 2.0)
    return np.bincount(groups_sorted[keep], weights=disc, minlength=int(groups_sorted.max()) + 1)


def grouped_ndcg_at_k(
    group_ids: ArrayLike, relevances: ArrayLike, scores: ArrayLike, k: int
) -> float:
    """Mean NDCG@k over groups (e.g. user-days), each ranked by score descending.

    Equal scores are ordered pessimistically: the lower relevance goes first, so a model cannot
    gain from ties and the result does not depend on input order. Groups without a positive
    relevance are skipped; ``nan`` when none is left.
    """
    _check_k(k)
    rel = _vector(relevances, "relevances", nonneg=True)
    s = _scores(scores, rel.shape[0])
    g = _group_index(group_ids, rel.shape[0])
    if rel.shape[0] == 0:
        return math.nan
    by_model = np.lexsort((rel, -s, g))  # group, then score desc, then worst relevance first
    by_ideal = np.lexsort((-rel, g))
    dcg = _grouped_dcg(g[by_model], rel[by_model], k)
    idcg = _grouped_dcg(g[by_ideal], rel[by_ideal], k)
    used = idcg > 0
    return float(np.mean(dcg[used] / idcg[used])) if used.any() else math.nan


# --- retrieval / next item ------------------------------------------------------------------


def recall_at_k(ranked_ids: Sequence[Hashable], relevant_set: Iterable[Hashable], k: int) -> float:
    """Share of the relevant items found in the top k: ``|top_k & relevant| / |relevant|``.

    The denominator is the full relevant set (not ``min(k, |relevant|)``); ``nan`` if it is empty.
    """
    _check_k(k)
    relevant = set(relevant_set)
    if not relevant:
        return math.nan
    return len(set(list(ranked_ids)[:k]) & relevant) / len(relevant)


def _ranks(rank_of_target: ArrayLike) -> np.ndarray:
    r = np.atleast_1d(np.asarray(rank_of_target, dtype=np.float64))
    if np.isnan(r).any() or (r < 0).any():
        raise ValueError("ranks must be >= 0 (use inf for 'cannot be recommended')")
    return r


def hit_rate_at_k(rank_of_target: ArrayLike, k: int) -> float:
    """Share of 0-based target ranks below k (scalar or array in; mean out, ``nan`` if empty)."""
    _check_k(k)
    r = _ranks(rank_of_target)
    return float(np.mean(r < k)) if r.size else math.nan


def ndcg_at_k_single(rank_of_target: ArrayLike, k: int) -> float:
    """NDCG@k with one relevant item: ``1 / log2(rank + 2)`` for 0-based rank < k, else 0; mean."""
    _check_k(k)
    r = _ranks(rank_of_target)
    gains = np.where(r < k, 1.0 / np.log2(np.minimum(r, k) + 2.0), 0.0)
    return float(np.mean(gains)) if r.size else math.nan


def mrr(rank_of_target: ArrayLike) -> float:
    """Mean reciprocal rank over the full ranking, ``1 / (rank + 1)``; an ``inf`` rank gives 0."""
    r = _ranks(rank_of_target)
    return float(np.mean(1.0 / (r + 1.0))) if r.size else math.nan


def _exclusion_mask(exclude: Any, shape: tuple[int, int]) -> np.ndarray:
    n_users, n_items = shape
    if exclude is None:
        return np.zeros(shape, dtype=bool)
    if isinstance(exclude, np.ndarray) and exclude.dtype == bool:
        if exclude.shape != shape:
            raise ValueError(f"exclude mask has shape {exclude.shape}, expected {shape}")
        return exclude
    if hasattr(exclude, "indptr") and hasattr(exclude, "indices"):  # CSR-like (scipy.sparse)
        indptr = np.asarray(exclude.indptr, dtype=np.int64)
        if indptr.shape[0] != n_users + 1:
            raise ValueError(f"exclude indptr has {indptr.shape[0]} entries, not {n_users + 1}")
        rows = np.repeat(np.arange(n_users), np.diff(indptr))
        cols = np.asarray(exclude.indices, dtype=np.int64)
    else:
        per_user = [np.asarray(e, dtype=np.int64).ravel() for e in exclude]
        if len(per_user) != n_users:
            raise ValueError(f"exclude has {len(per_user)} rows, expected {n_users}")
        rows = np.repeat(np.arange(n_users), [e.shape[0] for e in per_user])
        cols = np.concatenate(per_user) if per_user else np.zeros(0, dtype=np.int64)
    if rows.shape[0] != cols.shape[0] or (cols < 0).any() or (cols >= n_items).any():
        raise ValueError("exclude holds item indices outside [0, n_items)")
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


def target_ranks(scores: ArrayLike, targets: ArrayLike, exclude: Any = None) -> np.ndarray:
    """0-based rank of each user's target item among the items that user may be shown.

    ``scores`` is ``(U, I)``; ``targets`` is ``(U,)`` item indices. ``exclude`` removes items per
    user (e.g. already seen): ``None``, a boolean ``(U, I)`` mask, a list of U index arrays, or a
    CSR-like object with ``indptr``/``indices``.

    Tie policy (pessimistic): ``rank = #higher + #tied``, counting only non-excluded items other
    than the target. The target lands below every item it ties with, so a model that scores
    everything equally gets the worst rank, and ranks stay whole numbers, which keeps HR@k,
    NDCG@k and MRR consistent with each other.

    The rank is ``inf`` (never a hit, reciprocal rank 0) when the target is excluded, when its
    score is ``-inf`` or NaN (the candidate sources did not retrieve it), or when the target
    index is negative (the item is outside the scored item space). Other items with NaN scores
    never outrank the target. Memory is a few ``(U, I)`` boolean arrays: chunk users if large.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (U, I), got shape {s.shape}")
    t = np.asarray(targets, dtype=np.int64).ravel()
    if t.shape[0] != s.shape[0] or (t >= s.shape[1]).any():
        raise ValueError("targets must hold one item index in [-1, I) per user")
    allowed = ~_exclusion_mask(exclude, s.shape)
    rows = np.arange(s.shape[0])
    safe_t = np.maximum(t, 0)
    target_score = s[rows, safe_t][:, None]  # (U, 1)
    higher = np.sum((s > target_score) & allowed, axis=1)
    tied = np.sum((s == target_score) & allowed, axis=1) - 1  # minus the target itself
    ranks = (higher + tied).astype(np.float64)
    target_score = target_score[:, 0]
    unreachable = (t < 0) | ~allowed[rows, safe_t] | np.isnan(target_score)
    ranks[unreachable | (target_score == -np.inf)] = np.inf
    return ranks


# --- beyond accuracy, over top-k lists ------------------------------------------------------


def catalog_coverage(lists: Iterable[Iterable[Hashable]], n_catalog: int) -> float:
    """Share of the catalog that appears in at least one list."""
    if n_catalog < 1:
        raise ValueError("n_catalog must be >= 1")
    return len(set().union(*map(set, lists))) / n_catalog


def lorenz_curve(exposure_counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz curve of exposure: ``x`` = share of items (least exposed first), ``y`` = share of
    exposure they hold. Both have ``n + 1`` points from 0; ``y`` is NaN if exposure is 0."""
    c = np.sort(_vector(exposure_counts, "exposure_counts", nonneg=True))
    x = np.arange(c.shape[0] + 1, dtype=np.float64) / max(c.shape[0], 1)
    cum = np.concatenate(([0.0], np.cumsum(c)))
    return x, (cum / cum[-1] if cum[-1] > 0 else np.full_like(cum, math.nan))


def gini(exposure_counts: ArrayLike) -> float:
    """Gini coefficient of exposure, n-based: ``sum_i (2i - n - 1) c_(i) / (n * sum c)``.

    ``c_(i)`` sorted ascending, i 1-based. Equal exposure gives 0; all exposure on one of n items
    gives ``1 - 1/n`` (0.75 for n=4), i.e. twice the area between the Lorenz curve and the
    diagonal, without the ``n / (n - 1)`` small-sample correction. Pass every catalog item,
    zero-exposure ones included, or the inequality is understated. ``nan`` if total exposure is 0.
    """
    c = np.sort(_vector(exposure_counts, "exposure_counts", nonneg=True))
    n, total = c.shape[0], c.sum()
    if total <= 0:
        return math.nan
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2.0 * i - n - 1.0) * c) / (n * total))


def popularity_percentile(lists: Iterable[Iterable[int]], item_popularity: ArrayLike) -> float:
    """Mean popularity percentile of recommended items (every slot of every list counts once).

    An item's percentile is its ascending average rank in ``item_popularity`` (indexed by item)
    divided by the catalog size: the single most popular item scores 1.0, the least 1/n, and a
    catalog of equal popularity about 0.5. ``nan`` when no item was recommended.
    """
    pop = _vector(item_popularity, "item_popularity")
    chosen = [int(i) for items in lists for i in items]
    if not chosen:
        return math.nan
    percentile = _grouped_average_ranks(np.zeros(pop.shape[0], dtype=np.int64), pop) / pop.shape[0]
    return float(np.mean(percentile[chosen]))


def _jaccard_distance(a: frozenset, b: frozenset) -> float:
    union = len(a | b)
    return 0.0 if union == 0 else 1.0 - len(a & b) / union


def intra_list_diversity(
    lists: Iterable[Sequence[Any]], item_tags: Mapping | Sequence
) -> float:
    """Mean pairwise Jaccard distance between items' tag sets within a list, averaged over lists.

    ``item_tags[item]`` gives an item's tags. Two untagged items count as identical (distance 0).
    Lists with fewer than 2 items are skipped; ``nan`` if none is left.
    """
    per_list = []
    for items in lists:
        tags = [frozenset(item_tags[i]) for i in items]
        pairs = [(a, b) for ia, a in enumerate(tags) for b in tags[ia + 1 :]]
        if pairs:
            per_list.append(sum(_jaccard_distance(a, b) for a, b in pairs) / len(pairs))
    return float(np.mean(per_list)) if per_list else math.nan


def new_creator_share(
    lists: Sequence[Iterable[Any]],
    item_creator: Mapping | Sequence,
    seen_creators_per_user: Sequence[Iterable[Hashable]],
) -> float:
    """Share of recommended slots whose creator the viewer never engaged with before.

    ``lists[u]`` is viewer u's list and ``seen_creators_per_user[u]`` the creators they engaged
    with before the list was served. Counted over all slots; ``nan`` when the lists are empty.
    """
    if len(lists) != len(seen_creators_per_user):
        raise ValueError("lists and seen_creators_per_user differ in length")
    is_new = [
        item_creator[item] not in seen
        for items, seen in zip(lists, map(set, seen_creators_per_user))
        for item in items
    ]
    return sum(is_new) / len(is_new) if is_new else math.nan


def topic_entropy(
    topic_counts: ArrayLike | Mapping[Hashable, float], normalized: bool = False
) -> float:
    """Shannon entropy (bits) of the topic distribution given by counts; zero counts add nothing.

    With ``normalized=True`` it is divided by ``log2(n_topics)`` (topics passed, zeros included),
    giving 1.0 for a uniform spread. ``nan`` when the counts sum to 0.
    """
    if isinstance(topic_counts, Mapping):
        topic_counts = list(topic_counts.values())
    c = _vector(topic_counts, "topic_counts", nonneg=True)
    if c.sum() <= 0:
        return math.nan
    p = c[c > 0] / c.sum()
    h = float(-np.sum(p * np.log2(p)))
    if not normalized:
        return h
    return h / math.log2(c.shape[0]) if c.shape[0] > 1 else 0.0
