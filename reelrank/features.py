"""What the ranker reads: dense counters computed from live state (``dense_features``,
``dense_matrix``), and the rows that pair each impression's inputs with its joined outcome
(``ranking_rows``, ``RowStream``), offline and online alike.

The rows come from replaying events through a live state and the impression-outcome join
(``reelrank.join``), the code path serving uses, so training sees what serving will see.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Iterable, Iterator

import numpy as np

from reelrank.join import Example, Joiner
from reelrank.store.live import length_class
from reelrank.topics import topic_of
from reelrank.types import Event, Token

# -- dense counters for the ranker: computed from live state, offline and online alike ---------

DENSE_FEATURES = (
    "user_creator_long_views", "user_creator_affinity", "user_tag_affinity", "follows_creator",
    "user_length_lift", "item_log_impressions", "item_long_view_rate", "item_like_rate",
    "item_share_rate", "item_negative_rate", "item_mean_watch_ratio", "item_log_age_hours",
    "item_log_duration_s", "item_same_region", "user_topic_lift",
)
# Models trained before a feature was appended read the first ``n_dense`` columns: new features
# go at the end.


# ``user_topic_lift``: the viewer's long-view rate on videos of this topic (reelrank.topics),
# smoothed towards their overall rate with this many views' weight, minus that overall rate. It
# moves from a viewer's first views: one long view of a topic lifts the topic's other videos.
TOPIC_PRIOR = 3.0


def user_aggregates(user) -> tuple[float, float] | None:
    """The viewer-wide sums ``dense_features`` divides by: computed once per request, not once
    per candidate."""
    if user is None:
        return None
    tag_total = sum(abs(v) for v in user.hashtag_affinity.values()) + 5.0
    all_views = sum(user.length_views.values())
    overall = (sum(user.length_long_views.values()) + 1.5) / (all_views + 5)
    return tag_total, overall


def dense_features(user, item, stats, now: int, aggregates=None,
                   region: str | None = None) -> list[float]:
    """The ranker's counters for one (viewer, video) at time ``now``, from a ``UserState`` (or
    None for a new viewer) and the video's ``ItemStats``. Rates are smoothed towards priors so
    a handful of events cannot make them extreme. ``aggregates`` is ``user_aggregates(user)``
    when the caller scores many videos for one viewer. ``region``: the request's (else the
    viewer's) region; ``item_same_region`` is 1 for a video posted there (its language is
    likelier to be the viewer's), 0 otherwise or when either is unknown.

    Every feature depends on the video (alone or with the viewer). Counters of the viewer alone
    (how much they watch, their overall long-view rate) are left out on purpose: they are the
    same for every candidate of a request, so they cannot change a feed's order, and because
    they drift within a viewer's day they make the per-viewer ranking (GAUC) worse offline.
    """
    views = stats.views
    shown = max(stats.impressions, views)
    if user is not None:
        tag_total, overall = aggregates if aggregates is not None else user_aggregates(user)
        creator_aff = user.creator_affinity.get(item.creator_id, 0.0)
        tag_aff = sum(user.hashtag_affinity.get(t, 0.0) for t in item.hashtags) / tag_total
        creator_long = user.creator_long_views.get(item.creator_id, 0)
        follows = 1.0 if item.creator_id in user.following else 0.0
        k = length_class(item.duration_ms)
        in_class = (user.length_long_views.get(k, 0) + 5 * overall) / (user.length_views.get(k, 0) + 5)
        length_lift = in_class - overall
        topic = topic_of(item)
        topic_lift = ((user.topic_long_views.get(topic, 0) + TOPIC_PRIOR * overall)
                      / (user.topic_views.get(topic, 0) + TOPIC_PRIOR) - overall) if topic else 0.0
    else:
        creator_aff = tag_aff = length_lift = topic_lift = 0.0
        creator_long = 0
        follows = 0.0
    return [
        math.log1p(creator_long),
        math.tanh(creator_aff / 5.0),
        math.tanh(3.0 * tag_aff),
        follows,
        length_lift,
        math.log1p(shown),
        (stats.long_views + 0.3 * 10) / (views + 10),
        (stats.likes + 0.02 * 50) / (shown + 50),
        (stats.shares + 0.005 * 100) / (shown + 100),
        (stats.negatives + 0.01 * 100) / (shown + 100),
        (stats.watch_ratio_sum + 0.5 * 10) / (views + 10),
        math.log1p(max(0, now - item.created_at) / 3_600_000),
        math.log1p(item.duration_ms / 1000),
        1.0 if region is not None and item.region == region else 0.0,
        topic_lift,
    ]


_STAT_COLUMNS = operator.attrgetter("impressions", "views", "long_views", "likes", "shares",
                                     "negatives", "watch_ratio_sum")
_LENGTH_LIMITS = np.array([10_000, 20_000, 40_000, 80_000, 160_000], dtype=np.float64)


def dense_matrix(user, items: list, stats: list, now: int, aggregates=None,
                 region: str | None = None) -> np.ndarray:
    """``dense_features`` for many videos and one viewer at once: (N, F) float32. Serving uses
    this; ``dense_features`` is the reference it is tested against.

    Per-item work is kept to C-level passes (``map`` with ``dict.get``, ``attrgetter``); the
    arithmetic is done on arrays. Ranking 500 candidates spends more time here than in most of
    the network, so the difference shows in the rank latency."""
    N = len(items)
    out = np.zeros((N, len(DENSE_FEATURES)), dtype=np.float64)
    if N == 0:
        return out.astype(np.float32)
    # One pass over the items for every attribute read below: the objects are touched once.
    creators, duration, created, hashtags, regions = zip(*map(_ITEM_COLUMNS, items))
    duration = np.array(duration, dtype=np.float64)
    if user is not None:
        tag_total, overall = aggregates if aggregates is not None else user_aggregates(user)
        cl, ca, ha = user.creator_long_views, user.creator_affinity, user.hashtag_affinity
        lv, llv, following = user.length_views, user.length_long_views, user.following
        lift = np.array([(llv.get(k, 0) + 5 * overall) / (lv.get(k, 0) + 5) - overall
                         for k in range(6)])
        out[:, 0] = np.log1p(np.fromiter(map(cl.get, creators, repeat(0)), np.float64, N))
        out[:, 1] = np.tanh(np.fromiter(map(ca.get, creators, repeat(0.0)), np.float64, N) / 5.0)
        if ha:
            # Every item's tags in one flat pass, summed back per item.
            lengths = np.fromiter(map(len, hashtags), dtype=np.int64, count=N)
            values = np.fromiter(map(ha.get, chain.from_iterable(hashtags), repeat(0.0)),
                                 dtype=np.float64, count=int(lengths.sum()))
            tags = np.bincount(np.repeat(np.arange(N), lengths), weights=values, minlength=N)
            out[:, 2] = np.tanh(3.0 * tags / tag_total)
        if following:
            out[:, 3] = np.fromiter(map(following.__contains__, creators), np.float64, N)
        out[:, 4] = lift[np.searchsorted(_LENGTH_LIMITS, duration, side="right")]
        if user.topic_views:
            topics = list(map(topic_of, items))
            t_views = np.fromiter(map(user.topic_views.get, topics, repeat(0)), np.float64, N)
            t_long = np.fromiter(map(user.topic_long_views.get, topics, repeat(0)), np.float64, N)
            known = np.fromiter(map(bool, topics), np.float64, N)
            out[:, 14] = known * ((t_long + TOPIC_PRIOR * overall) / (t_views + TOPIC_PRIOR)
                                  - overall)
    counts = np.fromiter(chain.from_iterable(map(_STAT_COLUMNS, stats)), dtype=np.float64,
                         count=7 * N).reshape(N, 7)
    imp, views, long_, likes, shares, neg, ratio_sum = counts.T
    shown = np.maximum(imp, views)
    out[:, 5] = np.log1p(shown)
    out[:, 6] = (long_ + 0.3 * 10) / (views + 10)
    out[:, 7] = (likes + 0.02 * 50) / (shown + 50)
    out[:, 8] = (shares + 0.005 * 100) / (shown + 100)
    out[:, 9] = (neg + 0.01 * 100) / (shown + 100)
    out[:, 10] = (ratio_sum + 0.5 * 10) / (views + 10)
    created = np.array(created, dtype=np.float64)
    out[:, 11] = np.log1p(np.maximum(0.0, now - created) / 3_600_000)
    out[:, 12] = np.log1p(duration / 1000)
    if region is not None:
        out[:, 13] = np.fromiter(map(operator.eq, regions, repeat(region)), np.float64, N)
    return out.astype(np.float32)


_ITEM_COLUMNS = operator.attrgetter("creator_id", "duration_ms", "created_at", "hashtags",
                                    "region")


@dataclass(slots=True)
class RankingRow:
    """One impression with what the ranker knew when it was shown, and what followed."""

    example: Example
    dense: list[float] | None  # None: an implied example (no impression), not a ranker row
    history: tuple[Token, ...]  # the viewer's tokens before the impression, oldest first
    hour: int  # UTC hour of the impression


def ranking_rows(events: Iterable[Event], live, *, history_len: int = 30,
                 window_ms: int = 3_600_000, implied: bool = False) -> Iterator[RankingRow]:
    """Replay time-ordered events through a fresh ``LiveState`` (``live``), capturing the
    ranker's inputs at each impression *before* it is applied, and joining each impression with
    its outcomes. This is the code path serving uses (the same live state, the same
    ``dense_features``), so training sees exactly what serving will see.

    ``implied``: also yield the examples that outcomes with no impression open (``Joiner.imply``),
    as rows with ``dense`` None: they belong in the viewers' histories, not in the ranker's
    training rows."""
    rows = RowStream(live, history_len=history_len, window_ms=window_ms, implied=implied)
    for e in events:
        yield from rows.add(e)
    yield from rows.flush()


class RowStream:
    """``ranking_rows`` one event at a time, for the online trainer: ``add`` returns the rows
    whose examples closed. With ``settle_ms`` (see ``Joiner``) rows close soon after the view
    ends, and a late outcome yields the same row again with corrected labels."""

    def __init__(self, live, *, history_len: int = 30, window_ms: int = 3_600_000,
                 settle_ms: int | None = None, implied: bool = False):
        self.live = live
        self.history_len = history_len
        catalog = live.catalog
        self.joiner = Joiner(lambda i: catalog.get(i).duration_ms if catalog.get(i) else None,
                             window_ms, settle_ms=settle_ms, imply=implied)
        self._pending: dict[tuple[str, str, int], tuple[list[float], tuple[Token, ...]]] = {}
        # Inputs of rows emitted early, kept while a late outcome may still correct them: the
        # dense features as an ``array('d')`` (8 bytes a value, exact) rather than a list of
        # float objects (32), since the trainer keeps thousands of them (``train.budget``).
        self._emitted: OrderedDict[tuple[str, str, int], tuple] = OrderedDict()

    def add(self, event: Event, interests: bool = True) -> list[RankingRow]:
        """``interests=False``: an event from before the viewer's "refresh my feed", which
        counts for the video but not for the viewer's history (``LiveState.apply``)."""
        if event.type == "impression":
            item = self.live.catalog.get(event.item_id)
            if item is not None:
                user = self.live.user(event.user_id)
                history = tuple(list(user.tokens)[-self.history_len:]) if user is not None else ()
                region = event.region or (user.region if user is not None else None)
                self._pending[(event.user_id, event.item_id, event.ts)] = (
                    dense_features(user, item, self.live.item_stats(event.item_id), event.ts,
                                   region=region),
                    history)
        out = self._finish(self.joiner.add(event))
        self.live.apply(event, interests=interests)
        return out

    def flush(self, now: int | None = None) -> list[RankingRow]:
        return self._finish(self.joiner.flush(now))

    def forget_user(self, user_id: str) -> int:
        """Drop everything pending about a viewer (erasure); returns the examples dropped."""
        for store in (self._pending, self._emitted):
            for k in [k for k in store if k[0] == user_id]:
                del store[k]
        self.live.forget_user(user_id)
        return self.joiner.forget_user(user_id)

    def _finish(self, closed: list[Example]) -> list[RankingRow]:
        out = []
        early = self.joiner.settle_ms is not None
        for ex in closed:
            key = (ex.user_id, ex.item_id, ex.ts)
            got = self._pending.pop(key, None)
            if got is not None:
                dense, history = got
                if early:
                    self._emitted[key] = (array("d", dense), history)
                    self._emitted.move_to_end(key)
            elif ex.revision and (kept := self._emitted.get(key)) is not None:
                dense, history = kept[0].tolist(), kept[1]
                self._emitted.move_to_end(key)
            elif ex.implied:
                dense, history = None, ()
            else:
                continue
            out.append(RankingRow(ex, dense, history, (ex.ts // 3_600_000) % 24))
        if early:
            horizon = self.joiner.clock - self.joiner.window_ms
            while self._emitted and next(iter(self._emitted))[2] < horizon:
                self._emitted.popitem(last=False)
        return out
