"""From events to labelled examples: the join of each impression with what followed it.

The same ``Joiner`` runs offline (evaluation, batch training over the event log) and online (the
trainer tailing the log), so a model learns from exactly the labels it is evaluated on.

An impression opens an example for (viewer, video). Outcome events for the same pair that arrive
within ``window_ms`` of it are attributed to it: the longest view, like, share, comment, follow,
not-interested / report. When the window closes (event time passes it) or the same pair is shown
again, the example is emitted; an impression with no outcome becomes a negative example. Events
with no open impression (late beyond the window, or never shown) are counted, not attributed.
Duplicates (a known ``event_id``) are ignored.

Online, waiting an hour for every window would make the model an hour late. With ``settle_ms``
the example closes ``settle_ms`` after the view ended (the ``play`` or ``skip`` carrying the watch
time: in a feed the viewer has swiped on by then, and the likes and shares of that swipe arrive
with it). An outcome that arrives later but still inside the window is a *late* event: it updates
the emitted example, which is emitted again as a correction (``revision`` > 0) if a label changed.
An impression with no outcome still waits for the whole window before it counts as a negative.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import operator
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Callable, Iterable, Iterator

import numpy as np

from reelrank.store.live import length_class
from reelrank.topics import topic_of
from reelrank.types import LABEL_TASKS, Event, Token, is_long_view

TASKS = LABEL_TASKS  # the labels of an example, in order (types.py)
# Outcomes that show the video was on screen: with ``Joiner.imply`` they open an example.
IMPLYING = frozenset({"play", "skip", "rewatch", "like", "share", "comment", "follow"})


@dataclass(slots=True)
class Example:
    user_id: str
    item_id: str
    ts: int
    duration_ms: int
    request_id: str | None = None
    position: int | None = None
    device: str | None = None
    region: str | None = None
    source: str | None = None
    session_id: str | None = None
    watch_ms: int = 0
    like: int = 0
    follow: int = 0
    comment: int = 0
    share: int = 0
    negative: int = 0
    outcomes: int = 0  # how many outcome events were attributed
    ended_ts: int | None = None  # when the view ended (play/skip with a watch time), if it did
    revision: int = 0  # 0 when first emitted; +1 for each correction by a late event
    implied: bool = False  # opened by an outcome with no impression before it (``imply``)

    @property
    def long_view(self) -> int:
        return int(is_long_view(self.watch_ms, self.duration_ms) and self.watch_ms > 0)

    @property
    def watch_ratio(self) -> float:
        return self.watch_ms / self.duration_ms if self.duration_ms > 0 else 0.0

    def label(self, task: str) -> int:
        return getattr(self, task)


@dataclass
class JoinStats:
    impressions: int = 0
    attributed: int = 0
    unattributed: int = 0  # outcome with no open impression (late, or never shown)
    implied: int = 0  # examples opened by an outcome with no impression (``Joiner.imply``)
    duplicates: int = 0
    emitted: int = 0
    late: int = 0  # outcomes for an example already emitted early (settle_ms), within the window
    corrections: int = 0  # late outcomes that changed a label: the example was emitted again


@dataclass
class Joiner:
    """Incremental impression-outcome join over a time-ordered event stream."""

    duration_of: Callable[[str], int | None]
    window_ms: int = 3_600_000
    dedupe_memory: int = 1_000_000
    settle_ms: int | None = None  # close this long after the view ended (online); None: window
    stats: JoinStats = field(default_factory=JoinStats)
    # Many apps send plays, likes and completions but no impressions. With ``imply`` an outcome
    # with no impression open for its pair opens an example of its own (``implied``): the
    # video was evidently shown. Such examples carry no negative (nothing records what was
    # shown and not watched), so they feed the viewer's history for retrieval, not the ranker.
    imply: bool = False

    def __post_init__(self) -> None:
        self._open: dict[tuple[str, str], Example] = {}
        self._due: dict[tuple[str, str], int] = {}  # open key -> when it closes
        self._expiry: list[tuple[int, int, tuple[str, str]]] = []  # (close_at, seq, key)
        # Examples emitted early, kept until their window ends for late outcomes.
        self._done: OrderedDict[tuple[str, str], Example] = OrderedDict()
        self._seq = 0
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self.clock = 0

    def add(self, event: Event) -> list[Example]:
        """Feed one event; returns the examples whose window closed because of it."""
        if event.event_id in self._seen_ids:
            self.stats.duplicates += 1
            return []
        self._seen_ids[event.event_id] = None
        if len(self._seen_ids) > self.dedupe_memory:
            self._seen_ids.popitem(last=False)
        self.clock = max(self.clock, event.ts)
        out = self.flush(self.clock)
        key = (event.user_id, event.item_id)
        if event.type == "impression":
            previous = self._open.pop(key, None)
            if previous is not None:
                del self._due[key]
                out.append(self._emit(previous))
            self._done.pop(key, None)  # shown again: late outcomes now belong to the new one
            duration = self.duration_of(event.item_id)
            if duration is None:
                return out
            self.stats.impressions += 1
            self._open[key] = Example(
                event.user_id, event.item_id, event.ts, duration, event.request_id,
                event.position, event.device, event.region, event.source, event.session_id)
            self._schedule(key, event.ts + self.window_ms)
            return out
        ex = self._open.get(key)
        if ex is None:
            done = self._done.get(key)
            if done is not None and event.ts <= done.ts + self.window_ms:
                self.stats.late += 1
                before = _labels(done)
                _attribute(done, event)
                if _labels(done) != before:
                    done.revision += 1
                    self.stats.corrections += 1
                    out.append(dataclasses.replace(done))
                return out
            if self.imply and event.type in IMPLYING:
                return out + self._open_implied(key, event)
            self.stats.unattributed += 1
            return out
        if event.ts > ex.ts + self.window_ms:
            self.stats.unattributed += 1
            return out
        self.stats.attributed += 1
        _attribute(ex, event)
        if (self.settle_ms is not None and event.type in ("play", "skip")
                and event.watch_ms is not None):
            ex.ended_ts = event.ts if ex.ended_ts is None else max(ex.ended_ts, event.ts)
            close_at = max(ex.ended_ts, ex.ts) + self.settle_ms
            if close_at < self._due[key]:
                self._schedule(key, close_at)
        return out

    def _open_implied(self, key: tuple[str, str], event: Event) -> list[Example]:
        duration = self.duration_of(event.item_id)
        if duration is None:
            self.stats.unattributed += 1
            return []
        self.stats.implied += 1
        self.stats.attributed += 1
        ex = self._open[key] = Example(
            event.user_id, event.item_id, event.ts, duration, event.request_id, event.position,
            event.device, event.region, event.source, event.session_id, implied=True)
        _attribute(ex, event)
        self._schedule(key, event.ts + self.window_ms)
        return []

    def _schedule(self, key: tuple[str, str], close_at: int) -> None:
        self._due[key] = close_at
        self._seq += 1
        heapq.heappush(self._expiry, (close_at, self._seq, key))

    def flush(self, now: int | None = None) -> list[Example]:
        """Emit examples whose window closed by ``now`` (all of them when ``now`` is None)."""
        out = []
        while self._expiry and (now is None or self._expiry[0][0] < now):
            close_at, _, key = heapq.heappop(self._expiry)
            # The heap may hold stale entries: a pair shown again, or closed earlier since.
            if self._due.get(key) == close_at:
                ex = self._open.pop(key)
                del self._due[key]
                out.append(self._emit(ex))
                if self.settle_ms is not None and now is not None:
                    self._done[key] = dataclasses.replace(ex)  # the caller keeps its own
        if self._done:
            horizon = None if now is None else now - self.window_ms
            # Oldest emitted first (roughly by impression time): stop at the first one still
            # inside its window.
            while self._done:
                key, ex = next(iter(self._done.items()))
                if horizon is not None and ex.ts >= horizon:
                    break
                del self._done[key]
        return out

    def _emit(self, ex: Example) -> Example:
        self.stats.emitted += 1
        return ex

    def open_ended_since(self) -> int | None:
        """The earliest view end among examples not yet emitted (online freshness watermark)."""
        ends = [ex.ended_ts for ex in self._open.values() if ex.ended_ts is not None]
        return min(ends) if ends else None

    def forget_user(self, user_id: str) -> int:
        """Drop pending examples of a user (erasure); returns how many."""
        keys = [k for k in self._open if k[0] == user_id]
        for k in keys:
            del self._open[k]
            del self._due[k]
        for k in [k for k in self._done if k[0] == user_id]:
            del self._done[k]
        return len(keys)


def _labels(ex: Example) -> tuple:
    return (ex.watch_ms, ex.like, ex.follow, ex.comment, ex.share, ex.negative)


def _attribute(ex: Example, event: Event) -> None:
    """Fold one outcome event into its example."""
    ex.outcomes += 1
    t = event.type
    if t in ("play", "skip", "rewatch") and event.watch_ms is not None:
        ex.watch_ms = max(ex.watch_ms, event.watch_ms)
    elif t == "like":
        ex.like = 1
    elif t == "unlike":
        ex.like = 0
    elif t == "follow":
        ex.follow = 1
    elif t == "comment":
        ex.comment = 1
    elif t == "share":
        ex.share = 1
    elif t in ("not_interested", "report"):
        ex.negative = 1


def join_events(events: Iterable[Event], duration_of: Callable[[str], int | None],
                window_ms: int = 3_600_000) -> Iterator[Example]:
    """All examples of a time-ordered event stream, in the order their windows close."""
    joiner = Joiner(duration_of, window_ms)
    for e in events:
        yield from joiner.add(e)
    yield from joiner.flush()


# -- history tokens: what the user tower reads -------------------------------------------------

def token_from_example(ex: Example) -> Token:
    kind = "long_view" if ex.long_view else ("play" if ex.watch_ms > 0 else "impression")
    return Token(ex.item_id, ex.ts, kind, ex.watch_ratio if ex.watch_ms > 0 else None,
                 ex.like, ex.share, ex.comment, ex.follow, ex.negative)


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
        # Inputs of rows emitted early, kept while a late outcome may still correct them.
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
            if got is None and ex.revision:
                got = self._emitted.get(key)
            if got is None and ex.implied:
                got = (None, ())
            if got is None:
                continue
            if early:
                self._emitted[key] = got
                self._emitted.move_to_end(key)
            out.append(RankingRow(ex, got[0], got[1], (ex.ts // 3_600_000) % 24))
        if early:
            horizon = self.joiner.clock - self.joiner.window_ms
            while self._emitted and next(iter(self._emitted))[2] < horizon:
                self._emitted.popitem(last=False)
        return out
