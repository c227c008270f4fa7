"""Baseline recommenders, each a ``Recommender`` over ``Interactions``, and the engine as one.

- ``RandomRecommender``: seeded noise; the floor every model must clear.
- ``PopularityRecommender``: all-time interaction counts of the training period.
- ``RecentPopularityRecommender``: counts over the last ``days`` of the training period (default
  1 day: short-video interest moves within a day), ties broken by all-time counts.
- ``ItemKNNRecommender``: item-to-item cosine over who interacted with what
  (``sim(i, j) = |users(i) & users(j)| / sqrt(|users(i)| |users(j)|)``, self-similarity 0),
  optionally keeping only each item's ``neighbors`` most similar items; a user's score for j is
  the sum of ``sim(i, j)`` over the distinct items i of their history. Sparse, numpy only.
- ``EngineRecommender``: ReelRank's serving engine (``reelrank.engine.Engine``) built on a
  temporary SQLite store loaded with the training period's raw events. Impressions are scored with
  ``engine.rank`` (the scorer the feed uses); retrieval lists are the engine's own feed
  (``engine.feed``: candidate sources, filters, scorer, re-ranker), 200 items a user, and every
  item outside the feed scores ``-inf`` (not retrieved).

Optional methods the harness looks for (beyond the ``Recommender`` protocol):
``fit_events(train, items, events)`` (learn from raw events instead of ``fit``),
``score_pairs(users, items)`` (scores for given user/item pairs) and
``predict_tasks(users, items) -> {task: probabilities}`` (enables LogLoss).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from reelrank.eval.data import Interactions
from reelrank.types import DAY_MS, Event, Item

logger = logging.getLogger(__name__)


class RandomRecommender:
    """Uniform random scores, reproducible per (seed, user) whatever the chunking."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.n_items = 0
        self.settings = {"seed": seed}

    def fit(self, train: Interactions) -> None:
        self.n_items = train.n_items

    def score_users(self, users: np.ndarray) -> np.ndarray:
        out = np.empty((len(users), self.n_items), dtype=np.float32)
        for row, u in enumerate(users):
            out[row] = np.random.default_rng([self.seed, int(u)]).random(self.n_items)
        return out


class PopularityRecommender:
    """Every user gets the items ordered by their training interaction count."""

    name = "pop"

    def __init__(self) -> None:
        self.scores = np.zeros(0, dtype=np.float32)

    def fit(self, train: Interactions) -> None:
        self.scores = train.item_popularity().astype(np.float32)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores, (len(users), len(self.scores))).copy()


class RecentPopularityRecommender(PopularityRecommender):
    """Counts over the last ``days`` days before the newest training interaction; ties (many
    items have no recent count) are broken by all-time counts, which add less than 1."""

    name = "pop_recent"

    def __init__(self, days: float = 1.0):
        super().__init__()
        self.days = days
        self.settings = {"days": days, "tie_break": "all-time count"}

    def fit(self, train: Interactions) -> None:
        all_time = train.item_popularity().astype(np.float64)
        if len(train) == 0:
            self.scores = all_time.astype(np.float32)
            return
        since = int(train.ts.max()) - int(self.days * DAY_MS)
        recent = np.bincount(train.item[train.ts > since], minlength=train.n_items)
        self.scores = (recent + all_time / (all_time.max() + 1.0)).astype(np.float64)


class ItemKNNRecommender:
    """Item-based collaborative filtering with cosine similarity over binary interactions."""

    name = "itemknn"

    def __init__(self, neighbors: int | None = 200, max_pairs: int = 5_000_000):
        self.neighbors = neighbors
        self.max_pairs = max_pairs  # bound on the (i, j) pairs materialised at once while fitting
        self.n_items = 0
        self.settings = {"similarity": "cosine", "neighbors": neighbors}

    def fit(self, train: Interactions) -> None:
        self.n_items = n = train.n_items
        pairs = np.unique(np.stack([train.user, train.item], 1).astype(np.int64), axis=0)
        self.history = _csr(pairs[:, 0], pairs[:, 1], np.ones(len(pairs)), train.n_users)
        counts = np.bincount(pairs[:, 1], minlength=n).astype(np.float64)
        rows, cols, co = _cooccurrence(self.history, self.max_pairs)
        sim = co / np.sqrt(counts[rows] * counts[cols])
        if self.neighbors is not None:
            # Each row keeps its `neighbors` most similar items (ties: the lower item index).
            order = np.lexsort((cols, -sim, rows))
            rows, cols, sim = rows[order], cols[order], sim[order]
            starts = np.searchsorted(rows, rows, side="left")
            keep = np.arange(len(rows)) - starts < self.neighbors
            rows, cols, sim = rows[keep], cols[keep], sim[keep]
        self.sim = _csr(rows, cols, sim, n)
        self.settings["item_pairs"] = int(len(sim))
        logger.info("itemknn: %d item pairs kept", len(sim))

    def score_users(self, users: np.ndarray) -> np.ndarray:
        h_ptr, h_idx, _ = self.history
        users = np.asarray(users, dtype=np.int64)
        hist_len = h_ptr[users + 1] - h_ptr[users]
        hist, _ = _gather_rows(h_ptr, h_idx, h_idx, users)  # the chunk's history items
        cols, vals = _gather_rows(*self.sim, hist)
        # The output row of every gathered (column, value): its history item's user.
        per_hist = self.sim[0][hist + 1] - self.sim[0][hist]
        rows = np.repeat(np.repeat(np.arange(len(users)), hist_len), per_hist)
        flat = np.bincount(rows * self.n_items + cols, weights=vals,
                           minlength=len(users) * self.n_items)
        return flat.reshape(len(users), self.n_items).astype(np.float32)


def _csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int):
    order = np.lexsort((cols, rows))
    indptr = np.searchsorted(rows[order], np.arange(n_rows + 1))
    return indptr, cols[order].astype(np.int64), vals[order].astype(np.float64)


def _gather_rows(indptr, indices, values, rows):
    """Concatenated (columns, values) of the given CSR rows."""
    lengths = indptr[rows + 1] - indptr[rows]
    starts = np.repeat(indptr[rows] - np.cumsum(lengths) + lengths, lengths)
    flat = starts + np.arange(lengths.sum())
    return indices[flat], values[flat]


def _cooccurrence(history, max_pairs: int):
    """(rows, cols, counts) of ``X^T X`` off the diagonal, X the binary user-item matrix,
    accumulated over user blocks holding at most ``max_pairs`` pairs (or one user)."""
    indptr, items, _ = history
    lengths = np.diff(indptr)
    cost = lengths.astype(np.int64) ** 2
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    n_items = int(items.max()) + 1 if len(items) else 1
    start = 0
    cum = np.cumsum(cost)
    while start < len(lengths):
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + max_pairs, side="right")), start + 1)
        users = np.arange(start, stop)
        lens = lengths[users]
        sq = lens * lens
        # For every interaction p of user u, pair it with each of u's interactions.
        left = np.repeat(np.arange(indptr[start], indptr[stop]), np.repeat(lens, lens))
        first = np.repeat(indptr[users], sq)
        within = np.arange(len(left)) - np.repeat(np.cumsum(sq) - sq, sq)
        right = first + within % np.repeat(lens, sq)
        a, b = items[left], items[right]
        off = a != b
        keys, counts = np.unique(a[off] * n_items + b[off], return_counts=True)
        parts.append((keys, counts))
        start = stop
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    keys = np.concatenate([k for k, _ in parts])
    counts = np.concatenate([c for _, c in parts])
    keys, inverse = np.unique(keys, return_inverse=True)
    total = np.bincount(inverse.ravel(), weights=counts)
    return keys // n_items, keys % n_items, total


# --- the engine ---------------------------------------------------------------------------------


def scratch_dir() -> tempfile.TemporaryDirectory:
    """A temporary directory for a throw-away store, in RAM (/dev/shm) where there is one:
    the store commits every batch with fsync, which is free there."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="reelrank-eval-", dir=base)


def build_engine(items: list[Item], events: list[Event], directory: Path,
                 progress: bool = False, batch_size: int = 20_000):
    """An ``Engine`` on a fresh SQLite store in ``directory`` holding ``items`` and ``events``,
    written through the engine's own ingest path (so live state is exactly what serving has)."""
    from reelrank.engine import Engine
    from reelrank.store import open_store

    engine = Engine(open_store(directory)).for_offline()
    for k in range(0, len(items), batch_size):
        engine.ingest_items(items[k:k + batch_size])
    with tqdm(total=len(events), desc="engine: ingest train events", unit=" events",
              disable=not progress, dynamic_ncols=True) as bar:
        for k in range(0, len(events), batch_size):
            engine.ingest_events(events[k:k + batch_size])
            bar.update(min(batch_size, len(events) - k))
    return engine


class EngineRecommender:
    """ReelRank's serving engine, built from the raw training events."""

    name = "engine"

    def __init__(self, feed_size: int = 200, progress: bool = False):
        self.feed_size = feed_size
        self.progress = progress
        self.max_ranking_users: int | None = None
        self.settings: dict = {"feed_size": feed_size}
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.engine = None
        self._last = None

    def fit(self, train: Interactions) -> None:
        raise TypeError("the engine learns from raw events: call fit_events")

    def fit_events(self, train: Interactions, items: list[Item], events: list[Event]) -> None:
        self.close()
        self.user_ids, self.item_ids = train.user_ids, train.item_ids
        self.item_of = {x: k for k, x in enumerate(train.item_ids)}
        self._tmp = scratch_dir()
        self.engine = build_engine(items, events, Path(self._tmp.name), self.progress)
        self.settings.update(scorer=self.engine.pipeline.scorer.version,
                             max_ranking_users=self.max_ranking_users,
                             retrieval="engine.feed (sources, filters, scorer, re-ranker)",
                             impressions="engine.rank")

    def close(self) -> None:
        if self.engine is not None:
            self.engine.store.close()
            self.engine = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # The harness may pass each impression's logged (device, region, source) as the rank
    # request's context, as a client replaying it through ``POST /v1/rank`` would.
    takes_context = True

    def _rank(self, users: np.ndarray, items: np.ndarray, contexts: np.ndarray | None = None):
        """Per pair (score, predictions), with one ``engine.rank`` call per user (per user and
        context when ``contexts``, (N, 3) device / region / source, is given). The harness
        asks for scores and predictions of the same pairs in turn: the last answer is kept."""
        key = (np.asarray(users).tobytes(), np.asarray(items).tobytes(),
               None if contexts is None else id(contexts))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for k, u in enumerate(users):
            groups[(int(u),) if contexts is None else (int(u), *contexts[k])].append(k)
        scores = np.zeros(len(users), dtype=np.float64)
        preds: dict[str, np.ndarray] = {}
        for group, rows in groups.items():
            u = group[0]
            device, region, source = group[1:] if contexts is not None else (None, None, None)
            ids = [self.item_ids[items[k]] for k in rows]
            ranked = self.engine.rank(self.user_ids[u], list(dict.fromkeys(ids)), region=region,
                                      device=device, source=source)
            result = {s.item_id: s for s in ranked.items}
            for k, item_id in zip(rows, ids):
                s = result[item_id]
                scores[k] = s.score
                for task, p in s.predictions.items():
                    preds.setdefault(task, np.full(len(users), np.nan))[k] = p
        self._last = (key, (scores, preds))
        return scores, preds

    def score_pairs(self, users: np.ndarray, items: np.ndarray,
                    contexts: np.ndarray | None = None) -> np.ndarray:
        return self._rank(users, items, contexts)[0]

    def predict_tasks(self, users: np.ndarray, items: np.ndarray,
                      contexts: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return self._rank(users, items, contexts)[1]

    def score_users(self, users: np.ndarray) -> np.ndarray:
        from reelrank.pipeline.context import FeedRequest

        out = np.full((len(users), len(self.item_ids)), -np.inf, dtype=np.float32)
        for row, u in enumerate(users):
            feed = self.engine.feed(FeedRequest(user_id=self.user_ids[u], n=self.feed_size))
            for rank, it in enumerate(feed.items):
                col = self.item_of.get(it.item_id)
                if col is not None:
                    out[row, col] = self.feed_size - rank
        return out

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to clean reliably
            pass
