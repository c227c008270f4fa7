"""Choices made on held-out viewers after the retrieval model is trained: the held-out split
itself, the measures of a version on it, and the weights of the served score's three priors.

The served score of a candidate (``pipeline/neural.py``) is the retrieval logit plus three
terms that the model does not learn but serving can read from the live state:

- **popularity**: w x log(1 + the video's long views and likes);
- **co-engagement**: w x log(1 + how often the video was enjoyed together with the viewer's
  last positives by other viewers), the live state's item-to-item graph
  (``store/memory.py``, ``_add_co_engagement``), the latest positive counting most;
- **trending**: w x log(1 + the video's positive engagement in the live state's trending
  window, the last day): what is being enjoyed now, where popularity counts every day alike.

Each weight is the one of a small grid that ranks the held-out positives best, so a data set
where a prior does not help gets 0 (``prior_weights``). Each prior is rebuilt from the training
part of the histories (the held-out positives left out, so that a viewer's target cannot count
for itself): ``CoEngagementGraph`` is the live state's item graph, ``RecentEngagement`` the
trending window as it stood when the held-out viewer asked for their page."""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from reelrank.store.live import CO_ENGAGEMENT_SEEDS
from reelrank.types import DAY_MS

if TYPE_CHECKING:
    from reelrank.models.retrieval import ItemInputs, TwoTower
    from reelrank.train.retrieval import SequenceTable

# The live state's graph with its defaults (store/memory.py): each new positive pairs with the
# viewer's last CO_SPAN positives; a repeat of one of the last CO_MEMORY positives adds nothing.
# Serving sums the graph's rows of the viewer's last CO_ENGAGEMENT_SEEDS positives, the latest
# counting most. (The live state also trims a video's row to its CO_ENGAGEMENT_CAP largest
# counts.)
CO_SPAN = 10
CO_MEMORY = 20
CO_ENGAGEMENT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


POPULARITY_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
TRENDING_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)


def hold_out_last_positives(table: SequenceTable, n_users: int, rng: np.random.Generator,
                            tail: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                        list[np.ndarray]]:
    """A seeded sample of at most ``n_users`` viewers with a positive after at least one other
    token: (users, tokens kept before the held-out part, the first held-out positive, and the
    held-out positives as a set). With ``tail`` 0 only the last positive is held out; with
    ``tail`` > 0 every token from the last ``tail`` of the history on (and at least from the
    last positive on) is, and the set holds its distinct positives not seen before the cut.
    The positives of a held-out viewer after the cut feed no training: they are the future."""
    users, keep, target, later = [], [], [], []
    for u in range(len(table)):
        start, stop = table.offsets[u], table.offsets[u + 1]
        pos = np.flatnonzero(table.positive[start:stop])
        if not len(pos) or pos[-1] < 1:
            continue
        cut = int(pos[-1])
        if tail > 0:
            cut = min(cut, max(1, int(math.floor((stop - start) * (1.0 - tail)))))
            after = pos[pos >= cut]
            seen = set(table.item[start:start + cut].tolist())
            items = [i for i in dict.fromkeys(table.item[start + after].tolist()) if i not in seen]
            if not items:
                continue
        else:
            items = [int(table.item[start + cut])]
        first = int(pos[pos >= cut][0])
        users.append(u)
        keep.append(cut)
        target.append(int(table.item[start + first]))
        later.append(np.asarray(items, dtype=np.int64))
    users_a, keep_a, target_a = (np.asarray(x, dtype=np.int64) for x in (users, keep, target))
    if len(users_a) > n_users:
        pick = np.sort(rng.choice(len(users_a), n_users, replace=False))
        users_a, keep_a, target_a = users_a[pick], keep_a[pick], target_a[pick]
        later = [later[i] for i in pick]
    return users_a, keep_a, target_a, later


def held_positives(table: SequenceTable, held) -> np.ndarray:
    """Every positive token of the held-out viewers from their cut on (repeats included): what
    the training part of the histories did not see."""
    parts = [np.zeros(0, dtype=np.int64)]
    for u, k in zip(held[0].tolist(), held[1].tolist()):
        start, stop = table.offsets[u], table.offsets[u + 1]
        part = slice(start + k, stop)
        parts.append(table.item[part][table.positive[part]])
    return np.concatenate(parts)


def validation_metrics(model: TwoTower, catalog: ItemInputs, table: SequenceTable,
                       held: tuple[np.ndarray, np.ndarray, np.ndarray], max_len: int,
                       chunk: int = 512, prior: np.ndarray | None = None,
                       per_viewer: Callable[[np.ndarray], np.ndarray] | None = None,
                       cache: dict | None = None) -> dict:
    """Recall@100 and NDCG@10 of each held-out positive, ranked over the whole catalog minus
    the items the viewer had before it; ``prior`` (I,) is added to every viewer's scores, and
    ``per_viewer(rows)`` (B, I) to the scores of the held-out viewers at those rows. With
    the held-out sets (``hold_out_last_positives``' fourth part), also ``tail_recall@50`` (the
    share of each viewer's set in their top 50, averaged over viewers) and ``tail_ndcg@10``.
    ``cache``: a dict kept across calls with the same model and held-out viewers (the weight
    searches), where the item and user vectors are computed once."""
    users, keep, target = held[:3]
    later = held[3] if len(held) > 3 else None
    from reelrank.train.retrieval import item_matrix

    cache = {} if cache is None else cache
    if "items" not in cache:
        cache["items"] = item_matrix(model, catalog)
    vectors = cache["items"]
    bias = torch.from_numpy(prior).float() if prior is not None else None
    was_training = model.training
    model.eval()
    ranks: list[int] = []
    tail_recall: list[float] = []
    tail_ndcg: list[float] = []
    discount = 1.0 / np.log2(np.arange(10) + 2)
    n_items = vectors.shape[0]
    # Whole chunks at once (a few (B, I) tensors), at most about 8M scores per chunk.
    chunk = min(chunk, max(32, 8_000_000 // max(1, n_items)))
    with torch.no_grad():
        for s in range(0, len(users), chunk):
            part = slice(s, s + chunk)
            if ("users", s, chunk) not in cache:
                h, _ = table.window(users[part], max_len, ends=keep[part], with_targets=False)
                cache["users", s, chunk] = model.user_vectors(h, vectors)
            scores = cache["users", s, chunk] @ vectors.T  # (B, I)
            if bias is not None:
                scores = scores + bias
            if per_viewer is not None:
                scores = scores + torch.from_numpy(per_viewer(np.arange(len(users))[part]))
            rows = torch.arange(scores.shape[0])
            # What each viewer had before their cut, and their held-out positive.
            lengths = keep[part]
            seen = torch.zeros(scores.shape, dtype=torch.bool)
            seen[torch.from_numpy(np.repeat(np.arange(len(lengths)), lengths)),
                 torch.from_numpy(np.concatenate(
                     [table.item[table.offsets[u]:table.offsets[u] + k]
                      for u, k in zip(users[part].tolist(), lengths.tolist())] + [
                         np.zeros(0, dtype=np.int64)]))] = True
            t = torch.from_numpy(target[part])
            # The target's rank among the items not seen before (itself never above itself).
            ranks.extend(((scores > scores[rows, t][:, None]) & ~seen).sum(1).tolist())
            if later is not None:
                # The held-out set holds nothing seen before: the seen items leave the top 50.
                top = torch.topk(scores.masked_fill(seen, float("-inf")),
                                 min(50, n_items), dim=1).indices.numpy()
                for row in range(len(top)):
                    want = later[s + row]
                    hit = np.isin(top[row], want)
                    tail_recall.append(hit.sum() / len(want))
                    ideal = discount[:min(10, len(want))].sum()
                    tail_ndcg.append(float((hit[:10] * discount[:len(hit[:10])]).sum() / ideal))
    model.train(was_training)
    r = np.asarray(ranks)
    out = {"recall@100": float(np.mean(r < 100)) if len(r) else float("nan"),
           "ndcg@10": float(np.mean(np.where(r < 10, 1.0 / np.log2(r + 2), 0.0)))
           if len(r) else float("nan"), "users": int(len(r))}
    if later is not None and tail_recall:
        out["tail_recall@50"] = float(np.mean(tail_recall))
        out["tail_ndcg@10"] = float(np.mean(tail_ndcg))
    return out


class CoEngagementGraph:
    """Symmetric counts of two videos enjoyed by the same viewer within ``CO_SPAN`` positives of
    each other, as the live state counts them, in compressed rows (numpy only)."""

    def __init__(self, table: SequenceTable, ends: np.ndarray, n_items: int):
        a_parts, b_parts = [], []
        for u in range(len(table)):
            start = table.offsets[u]
            part = slice(start, start + int(ends[u]))
            recent = _positives(table.item[part][table.positive[part]].tolist())
            a, b = [], []
            for k, item in enumerate(recent):
                for other in recent[max(0, k - CO_SPAN):k]:
                    a.append(item)
                    b.append(other)
            a_parts.append(np.asarray(a, dtype=np.int64))
            b_parts.append(np.asarray(b, dtype=np.int64))
        a_all = np.concatenate(a_parts) if a_parts else np.zeros(0, dtype=np.int64)
        b_all = np.concatenate(b_parts) if b_parts else np.zeros(0, dtype=np.int64)
        keys, counts = np.unique(np.concatenate([a_all * n_items + b_all, b_all * n_items + a_all]),
                                 return_counts=True)
        self.n_items = n_items
        self.cols = keys % n_items
        self.counts = counts.astype(np.float32)
        self.indptr = np.searchsorted(keys // n_items, np.arange(n_items + 1))

    def scores(self, seeds: list[int]) -> np.ndarray:
        """(I,) log(1 + the recency-weighted sum of the seeds' rows), ``seeds`` oldest first."""
        out = np.zeros(self.n_items, dtype=np.float32)
        cols, values = self.sparse_scores(seeds)
        out[cols] = values
        return out

    def sparse_scores(self, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """``scores`` where they are not 0: (columns, values)."""
        acc = np.zeros(self.n_items, dtype=np.float32)
        for rank, seed in enumerate(reversed(seeds)):
            lo, hi = self.indptr[seed], self.indptr[seed + 1]
            acc[self.cols[lo:hi]] += self.counts[lo:hi] / (1 + rank)  # a row's columns differ
        cols = np.flatnonzero(acc)
        return cols, np.log1p(acc[cols])


def _positives(items: list[int]) -> list[int]:
    """The positives in the order the live state adds them: a repeat of one of the last
    ``CO_MEMORY`` is skipped."""
    recent: deque = deque(maxlen=CO_MEMORY)
    out = []
    for item in items:
        if item in recent:
            continue
        recent.append(item)
        out.append(item)
    return out


def held_seeds(table: SequenceTable, held) -> list[list[int]]:
    """Each held-out viewer's last ``CO_ENGAGEMENT_SEEDS`` positives before their cut, oldest first."""
    out = []
    for u, k in zip(held[0].tolist(), held[1].tolist()):
        start = table.offsets[u]
        part = slice(start, start + k)
        out.append(_positives(table.item[part][table.positive[part]].tolist())[-CO_ENGAGEMENT_SEEDS:])
    return out


class RecentEngagement:
    """The positives of the training part of the histories (each viewer's first ``ends[u]``
    tokens) in time order, to count each video's positives in the trending window before any
    moment, as the live state's trending list stood then. One count per positive, where the
    live state weighs a like or a share above a long view; under the log that is a small
    difference."""

    def __init__(self, table: SequenceTable, ends: np.ndarray, n_items: int,
                 window_ms: int = DAY_MS):
        keep = np.zeros(len(table.item), dtype=bool)
        for u in range(len(table)):
            start = table.offsets[u]
            keep[start:start + int(ends[u])] = True
        keep &= table.positive
        order = np.argsort(table.ts[keep], kind="stable")
        self.ts = table.ts[keep][order]
        self.item = table.item[keep][order]
        self.n_items = n_items
        self.window_ms = window_ms

    def trending(self, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(columns, log(1 + count)) of the videos with positives in [now - window, now)."""
        lo, hi = np.searchsorted(self.ts, [now_ms - self.window_ms, now_ms], side="left")
        cols, counts = np.unique(self.item[lo:hi], return_counts=True)
        return cols, np.log1p(counts.astype(np.float32))


def held_moments(table: SequenceTable, held) -> list[int]:
    """When each held-out viewer asks for their page: the time of their first held-out token."""
    return [int(table.ts[table.offsets[u] + k]) for u, k in zip(held[0].tolist(),
                                                               held[1].tolist())]


PRIORS = ("popularity", "co_engagement", "trending")
GRIDS = {"popularity": POPULARITY_WEIGHTS, "co_engagement": CO_ENGAGEMENT_WEIGHTS,
         "trending": TRENDING_WEIGHTS}


def prior_weights(model: TwoTower, catalog: ItemInputs, table: SequenceTable, held,
                  max_len: int, log_popularity: np.ndarray, recent: RecentEngagement,
                  graph: CoEngagementGraph | None, criteria: dict[str, str],
                  trending: bool = True, cache: dict | None = None) -> dict[str, dict]:
    """The served priors' weights that rank the held-out positives best, for each page size
    (``criteria``: "weight", "weight@50" to the measure each is chosen on): popularity
    (``log_popularity``, (I,): the training part's counts), then co-engagement given it
    (without ``graph``: none), then trending given both (unless ``trending`` is off; each
    held-out viewer's window ends when they asked, at their first held-out token), then
    popularity once more given the others, each from its grid: a recent count says part of
    what the all-time one says. Returns, per prior, the weights and every weight's figures
    ("tried", and the popularity's "tried_again")."""
    n = recent.n_items
    rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {
        "co_engagement": [graph.sparse_scores(seeds) for seeds in held_seeds(table, held)]
        if graph is not None else [],
        "trending": [recent.trending(t) for t in held_moments(table, held)]}
    memo: dict = {}

    def per_viewer(w: dict):
        if not (w["co_engagement"] or w["trending"]):
            return None

        def block(part: np.ndarray) -> np.ndarray:
            out = np.zeros((len(part), n), dtype=np.float32)
            for prior in ("co_engagement", "trending"):
                if w[prior]:
                    for k, r in enumerate(part.tolist()):
                        cols, values = rows[prior][r]
                        out[k, cols] += w[prior] * values
            return out
        return block

    def measure(w: dict) -> dict:
        key = tuple(w[p] for p in PRIORS)
        if key not in memo:
            memo[key] = validation_metrics(
                model, catalog, table, held, max_len, cache=cache, per_viewer=per_viewer(w),
                prior=w["popularity"] * log_popularity if w["popularity"] else None)
        return memo[key]

    steps = ["popularity", *(["co_engagement"] if graph is not None else []),
             *(["trending"] if trending else []), "popularity"]
    out: dict = {p: {"tried": {}} for p in PRIORS if p in steps}
    out["popularity"]["tried_again"] = {}
    for name, criterion in criteria.items():
        w = dict.fromkeys(PRIORS, 0.0)
        for k, prior in enumerate(steps):
            tried = {x: measure({**w, prior: x}) for x in GRIDS[prior]}
            if not all(criterion in m for m in tried.values()):
                break  # a page of 50 needs the held-out sets
            w[prior] = max(GRIDS[prior], key=lambda x: (tried[x][criterion], -x))
            out[prior][name] = w[prior]
            out[prior]["tried_again" if k and prior == "popularity" else "tried"][name] = {
                str(x): {m: round(v, 4) for m, v in f.items()} for x, f in tried.items()}
    return out
