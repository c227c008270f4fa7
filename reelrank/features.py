"""From events to labelled examples: the join of each impression with what followed it.

The same ``Joiner`` runs offline (evaluation, batch training over the event log) and online (the
trainer tailing the log), so a model learns from exactly the labels it is evaluated on.

An impression opens an example for (viewer, video). Outcome events for the same pair that arrive
within ``window_ms`` of it are attributed to it: the longest view, like, share, comment, follow,
not-interested / report. When the window closes (event time passes it) or the same pair is shown
again, the example is emitted; an impression with no outcome becomes a negative example. Events
with no open impression (late beyond the window, or never shown) are counted, not attributed.
Duplicates (a known ``event_id``) are ignored.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from reelrank.store.memory import length_class
from reelrank.types import Event, Token, is_long_view

TASKS = ("long_view", "like", "follow", "comment", "share", "negative")


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
    duplicates: int = 0
    emitted: int = 0


@dataclass
class Joiner:
    """Incremental impression-outcome join over a time-ordered event stream."""

    duration_of: Callable[[str], int | None]
    window_ms: int = 3_600_000
    dedupe_memory: int = 1_000_000
    stats: JoinStats = field(default_factory=JoinStats)

    def __post_init__(self) -> None:
        self._open: dict[tuple[str, str], Example] = {}
        self._expiry: list[tuple[int, int, tuple[str, str]]] = []  # (close_at, seq, key)
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
                out.append(self._emit(previous))
            duration = self.duration_of(event.item_id)
            if duration is None:
                return out
            self.stats.impressions += 1
            self._open[key] = Example(
                event.user_id, event.item_id, event.ts, duration, event.request_id,
                event.position, event.device, event.region, event.source, event.session_id)
            self._seq += 1
            heapq.heappush(self._expiry, (event.ts + self.window_ms, self._seq, key))
            return out
        ex = self._open.get(key)
        if ex is None or event.ts > ex.ts + self.window_ms:
            self.stats.unattributed += 1
            return out
        self.stats.attributed += 1
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
        return out

    def flush(self, now: int | None = None) -> list[Example]:
        """Emit examples whose window closed by ``now`` (all of them when ``now`` is None)."""
        out = []
        while self._expiry and (now is None or self._expiry[0][0] < now):
            close_at, _, key = heapq.heappop(self._expiry)
            ex = self._open.get(key)
            # The heap may hold a stale entry for a pair shown again since.
            if ex is not None and ex.ts + self.window_ms == close_at:
                del self._open[key]
                out.append(self._emit(ex))
        return out

    def _emit(self, ex: Example) -> Example:
        self.stats.emitted += 1
        return ex

    def forget_user(self, user_id: str) -> int:
        """Drop pending examples of a user (erasure); returns how many."""
        keys = [k for k in self._open if k[0] == user_id]
        for k in keys:
            del self._open[k]
        return len(keys)


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
    "item_log_duration_s",
)


def user_aggregates(user) -> tuple[float, float] | None:
    """The viewer-wide sums ``dense_features`` divides by: computed once per request, not once
    per candidate."""
    if user is None:
        return None
    tag_total = sum(abs(v) for v in user.hashtag_affinity.values()) + 5.0
    all_views = sum(user.length_views.values())
    overall = (sum(user.length_long_views.values()) + 1.5) / (all_views + 5)
    return tag_total, overall


def dense_features(user, item, stats, now: int, aggregates=None) -> list[float]:
    """The ranker's counters for one (viewer, video) at time ``now``, from a ``UserState`` (or
    None for a new viewer) and the video's ``ItemStats``. Rates are smoothed towards priors so
    a handful of events cannot make them extreme. ``aggregates`` is ``user_aggregates(user)``
    when the caller scores many videos for one viewer.

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
    else:
        creator_aff = tag_aff = length_lift = 0.0
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
    ]


@dataclass(slots=True)
class RankingRow:
    """One impression with what the ranker knew when it was shown, and what followed."""

    example: Example
    dense: list[float]
    history: tuple[Token, ...]  # the viewer's tokens before the impression, oldest first
    hour: int  # UTC hour of the impression


def ranking_rows(events: Iterable[Event], live, *, history_len: int = 30,
                 window_ms: int = 3_600_000) -> Iterator[RankingRow]:
    """Replay time-ordered events through a fresh ``LiveState`` (``live``), capturing the
    ranker's inputs at each impression *before* it is applied, and joining each impression with
    its outcomes. This is the code path serving uses (the same live state, the same
    ``dense_features``), so training sees exactly what serving will see."""
    catalog = live.catalog
    joiner = Joiner(lambda i: catalog.get(i).duration_ms if catalog.get(i) else None, window_ms)
    pending: dict[tuple[str, str, int], tuple[list[float], tuple[Token, ...]]] = {}

    def finish(closed: list[Example]) -> Iterator[RankingRow]:
        for ex in closed:
            got = pending.pop((ex.user_id, ex.item_id, ex.ts), None)
            if got is not None:
                yield RankingRow(ex, got[0], got[1], (ex.ts // 3_600_000) % 24)

    for e in events:
        if e.type == "impression":
            item = catalog.get(e.item_id)
            if item is not None:
                user = live.user(e.user_id)
                history = tuple(list(user.tokens)[-history_len:]) if user is not None else ()
                pending[(e.user_id, e.item_id, e.ts)] = (
                    dense_features(user, item, live.item_stats(e.item_id), e.ts), history)
        yield from finish(joiner.add(e))
        live.apply(e)
    yield from finish(joiner.flush())
