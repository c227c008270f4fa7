"""Live state in process memory: the ``Catalog`` and ``LiveState`` of ``store/live.py``, kept
current in this process.

Two parts, both derived from the event log and rebuilt from it at start-up:

- ``MemoryCatalog`` (``store/memory_catalog.py``): the items by id, the newest first, and each
  creator's items;
- ``MemoryLiveState``: per viewer the recent history, what they were shown, counters and
  affinities; per item the windowed engagement that drives "trending"; and item-to-item
  co-engagement from viewers' recent positive events. Its top lists are ``store/toplists.py``.

Every accepted event goes through ``apply`` right after the store commits it, so the next feed
request of that viewer sees it. The clock is the event time of the newest event seen (not the
wall clock), so replays of historical logs behave as they did live.

Outside ``store/`` nothing imports this module but entry points: the rest types against
``store/live.py`` and builds states with ``reelrank.store.new_live_state``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import Counter, OrderedDict, deque
from itertools import repeat
from operator import itemgetter
from typing import Iterable

from reelrank.store import live
from reelrank.store.live import (CO_ENGAGEMENT_CAP, HistoryEntry, ItemStats, UserState,
                                 length_class)
from reelrank.store.memory_catalog import MemoryCatalog
from reelrank.store.toplists import TopLists, version_reader
from reelrank.topics import topic_of
from reelrank.types import (DAY_MS, HOUR_MS, NEGATIVE_TYPES, POSITIVE_TYPES, Event, Token,
                            is_long_view)

__all__ = ["ENGAGEMENT_WEIGHTS", "MemoryCatalog", "MemoryLiveState"]

log = logging.getLogger(__name__)

# How much each kind of event says about an item's appeal, for trending and affinities.
ENGAGEMENT_WEIGHTS: dict[str, float] = {
    "long_view": 1.0, "like": 2.0, "share": 3.0, "comment": 2.0, "follow": 3.0, "rewatch": 1.0,
    "profile_visit": 0.5, "skip": -0.3, "not_interested": -3.0, "report": -5.0,
}


_NO_STATS = ItemStats()  # what ``item_stats_many`` gives for a video nobody has seen yet


def _update_tokens(tokens: deque, event: Event, iid: str, ratio: float | None,
                   long: bool) -> None:
    """Fold an event into the viewer's token list: consecutive events on one video make one
    token (the longest view, and every flag), as the impression-outcome join does offline."""
    last = tokens[-1] if tokens else None
    if last is None or last.item_id != iid:
        last = Token(iid, event.ts, "impression", None)
        tokens.append(last)
    t = event.type
    change: dict = {}
    if t in ("play", "skip", "rewatch") and ratio is not None:
        if last.watch_ratio is None or ratio > last.watch_ratio:
            change["watch_ratio"] = ratio
            change["event_type"] = "long_view" if long or last.event_type == "long_view" else "play"
    elif t in ("like", "share", "comment", "follow"):
        change[t] = 1
    elif t == "unlike":
        change["like"] = 0
    elif t in NEGATIVE_TYPES:
        change["negative"] = 1
    if change:
        tokens[-1] = dataclasses.replace(last, **change)


# Counters below hold float weights (typeshed types a Counter's values as int: hence the
# "type: ignore" where a weight is added).
class MemoryLiveState:
    """Per-viewer and per-item state, updated by every accepted event.

    ``co_engagement=False`` leaves out the item-to-item graph, which only serving's candidate
    source reads (the online trainer's state: the graph grows with pairs of videos); the
    viewer's own recent positives are kept, so each viewer's state is the same either way.
    ``viewer_history=False`` leaves out viewers' ``history`` and ``seen`` (``train.budget``)."""

    def __init__(self, catalog: live.Catalog, *, trending_window_ms: int = DAY_MS,
                 co_engagement_span: int = 10, served_memory: int = 500,
                 trending_refresh_events: int = 1000,
                 trending_refresh_seconds: float = 2.0,
                 background_refresh: bool = False,
                 max_feed_only_viewers: int = 10_000, viewer_history: bool = True,
                 co_engagement: bool = True, max_viewers: int | None = None) -> None:
        self.catalog = catalog
        self.co_engagement, self.viewer_history = co_engagement, viewer_history
        self.trending_window_ms = trending_window_ms
        self.co_engagement_span = co_engagement_span
        self.served_memory = served_memory
        self.clock = 0  # newest event time seen, ms
        self._users: dict[str, UserState] = {}
        # Viewers a feed was served to who have no event here, least recently served first.
        # Their state is only what feeds sent them (memory only by design), so any id anyone
        # asks a feed for would otherwise hold about 5 KB until a restart: past the bound the
        # least recently served go, and lose nothing the log could give back.
        self.max_feed_only_viewers = max_feed_only_viewers
        self._feed_only: OrderedDict[str, None] = OrderedDict()
        self.feed_only_evicted = 0
        # Viewers with events, least recently active (an event, or their state read for a
        # request) first, kept only with ``max_viewers``: past it the least recently active
        # leave memory. Whoever holds the log brings one back before their next request or
        # event (``Engine``), so what is lost is only what feeds sent them.
        if max_viewers is not None and max_viewers < 1:
            raise ValueError("max_viewers must be at least 1")
        self.max_viewers = max_viewers
        self._active: OrderedDict[str, None] = OrderedDict()
        self.viewers_evicted = 0
        self._items: dict[str, ItemStats] = {}
        self._creator_impressions: Counter = Counter()  # the sum over each creator's videos
        self._co: dict[str, Counter] = {}
        # Trending: engagement in hourly buckets; a running sum over the window.
        self._buckets: deque[tuple[int, Counter]] = deque()
        self._trending: Counter = Counter()
        self._popular: Counter = Counter()  # all-time positive engagement, the cold fallback
        self.background_refresh = background_refresh
        self.trending_refresh_events = trending_refresh_events
        self.trending_refresh_seconds = trending_refresh_seconds
        self._regional: dict[str, Counter] = {}  # viewer region -> all-time engagement
        self._version = 0
        self._lock = threading.RLock()
        # The version read without a reference back to this state (see ``version_reader``).
        self._tops = TopLists(self._lock, version_reader(self))

    def empty_like(self) -> MemoryLiveState:
        """A new, empty state over the same catalog with the same settings."""
        return MemoryLiveState(self.catalog, trending_window_ms=self.trending_window_ms,
                         co_engagement_span=self.co_engagement_span,
                         served_memory=self.served_memory,
                         trending_refresh_events=self.trending_refresh_events,
                         trending_refresh_seconds=self.trending_refresh_seconds,
                         background_refresh=self.background_refresh,
                         max_feed_only_viewers=self.max_feed_only_viewers,
                         co_engagement=self.co_engagement, max_viewers=self.max_viewers,
                         viewer_history=self.viewer_history)

    # -- writes ---------------------------------------------------------------------------------
    def apply(self, event: Event, interests: bool = True) -> None:
        """Fold one accepted event into the state. Events for unknown items are ignored here
        (they are stored; the item may arrive later and a rebuild picks them up).

        ``interests=False`` (events from before the viewer asked to refresh their feed) keeps
        what is not an inferred interest (seen, not interested, following, watch time, the
        item's own counters) and leaves out the viewer's history, tokens and affinities."""
        item = self.catalog.get(event.item_id)
        if item is None:
            return
        # The catalog's own string for the id: what the state keeps (seen sets, histories,
        # counters' keys) then shares one object per video instead of one per event parsed.
        iid = item.item_id
        with self._lock:
            self._version += 1
            if event.ts > self.clock:
                self.clock = event.ts
            u = self._users.get(event.user_id)
            if u is None:
                u = self._users[event.user_id] = UserState(event.user_id)
            elif self._feed_only:
                self._feed_only.pop(event.user_id, None)  # now rebuilt from the log too
            u.grow()
            self._touch(event.user_id)
            s = self._items.get(iid)
            if s is None:
                s = self._items[iid] = ItemStats()
            ratio = None
            if event.watch_ms is not None and item.duration_ms > 0:
                ratio = event.watch_ms / item.duration_ms
            t = event.type
            u.counts[t] += 1
            u.last_ts = max(u.last_ts, event.ts)
            u.region, u.device = event.region or u.region, event.device or u.device
            if self.viewer_history and t in ("impression", "play", "skip", "rewatch"):
                u.seen.add(iid)  # the feed's filter: the trainer's state has no use for it
            if t == "impression":
                s.impressions += 1
                self._creator_impressions[item.creator_id] += 1
                return  # an impression says nothing about taste yet
            if interests:
                assert isinstance(u.history, deque) and isinstance(u.tokens, deque)  # grown
                if self.viewer_history:
                    u.history.append(HistoryEntry(iid, t, event.ts, event.watch_ms, ratio))
                _update_tokens(u.tokens, event, iid, ratio,
                               is_long_view(event.watch_ms, item.duration_ms))
            signal = ENGAGEMENT_WEIGHTS.get(t, 0.0)
            if t in ("play", "skip", "rewatch"):
                s.views += 1
                if event.watch_ms:
                    day = event.ts // DAY_MS
                    u.watch_ms_by_day[day] = u.watch_ms_by_day.get(day, 0) + event.watch_ms
                    if len(u.watch_ms_by_day) > 8:  # a week is enough for limits and export
                        del u.watch_ms_by_day[min(u.watch_ms_by_day)]
                topic = topic_of(item) if interests else None
                if t != "rewatch" and interests:
                    u.length_views[length_class(item.duration_ms)] += 1
                    if topic is not None:
                        u.topic_views[topic] += 1
                s.watch_ratio_sum += min(ratio or 0.0, 2.0)
                if t == "play" and is_long_view(event.watch_ms, item.duration_ms):
                    s.long_views += 1
                    u.counts["long_view"] += 1
                    if interests:
                        u.hashtag_long_views.update(item.hashtags)
                        u.creator_long_views[item.creator_id] += 1
                        u.length_long_views[length_class(item.duration_ms)] += 1
                        if topic is not None:
                            u.topic_long_views[topic] += 1
                    signal = ENGAGEMENT_WEIGHTS["long_view"]
                elif t == "play":
                    signal = 0.0
            if t == "like":
                s.likes += 1
            elif t == "unlike":
                s.likes = max(0, s.likes - 1)
                signal = -ENGAGEMENT_WEIGHTS["like"]
            elif t == "share":
                s.shares += 1
            elif t == "follow":
                u.following.add(item.creator_id)
            elif t == "unfollow":
                u.following.discard(item.creator_id)
            if t in NEGATIVE_TYPES:
                s.negatives += 1
                u.not_interested.add(iid)
            if signal:
                if interests:
                    u.creator_affinity[item.creator_id] += signal  # type: ignore[assignment]
                    for tag in item.hashtags:
                        u.hashtag_affinity[tag] += signal  # type: ignore[assignment]
                self._add_trending(iid, event.ts, max(signal, 0.0))
                if signal > 0 and u.region:
                    self._regional.setdefault(u.region, Counter())[iid] += signal  # type: ignore[assignment]
            if signal > 0 and (t in POSITIVE_TYPES or t == "play") and interests:
                self._add_co_engagement(u, iid)

    def _add_co_engagement(self, u: UserState, item_id: str) -> None:
        positives = u.positives
        assert isinstance(positives, deque)  # the fold grew the viewer first
        if item_id in positives:
            return
        if not self.co_engagement:
            positives.append(item_id)
            return
        co, cap = self._co, CO_ENGAGEMENT_CAP
        for other in list(positives)[-self.co_engagement_span:]:
            co.setdefault(item_id, Counter())[other] += 1
            theirs = co.setdefault(other, Counter())
            theirs[item_id] += 1
            if len(theirs) > 2 * cap:
                co[other] = Counter(dict(theirs.most_common(cap)))
        mine = co.get(item_id)
        if mine is not None and len(mine) > 2 * cap:
            co[item_id] = Counter(dict(mine.most_common(cap)))
        positives.append(item_id)

    def _add_trending(self, item_id: str, ts: int, weight: float) -> None:
        if weight <= 0:
            return
        bucket = ts // HOUR_MS
        if self._buckets and self._buckets[-1][0] >= bucket:
            # Late events land in the newest bucket: trending is about recency, not exact hours.
            self._buckets[-1][1][item_id] += weight  # type: ignore[assignment]
        else:
            self._buckets.append((bucket, Counter({item_id: weight})))
        self._trending[item_id] += weight  # type: ignore[assignment]
        self._popular[item_id] += weight  # type: ignore[assignment]
        self._expire_trending()

    def _expire_trending(self) -> None:
        oldest = (self.clock - self.trending_window_ms) // HOUR_MS
        while self._buckets and self._buckets[0][0] < oldest:
            _, counts = self._buckets.popleft()
            self._trending.subtract(counts)
            for k in [k for k, _ in counts.items() if self._trending[k] <= 1e-9]:
                del self._trending[k]

    def record_served(self, user_id: str, item_ids: list[str]) -> None:
        """Remember what a feed response sent, so the next page does not repeat it even before
        the app reports impressions. Memory only: impressions are the durable record."""
        with self._lock:
            u = self._users.get(user_id)
            if u is None:
                u = self._users[user_id] = UserState(user_id)
                self._feed_only[user_id] = None
            elif user_id in self._feed_only:
                self._feed_only.move_to_end(user_id)
            for i in item_ids:
                u.served[i] = None
                u.served.move_to_end(i)
            while len(u.served) > self.served_memory:
                u.served.popitem(last=False)
            while len(self._feed_only) > self.max_feed_only_viewers:
                old, _ = self._feed_only.popitem(last=False)
                self._users.pop(old, None)
                self.feed_only_evicted += 1

    def _touch(self, user_id: str) -> None:
        """The viewer (with events) is the most recently active; past ``max_viewers`` the
        least recently active leaves memory. Under the lock; nothing without a bound."""
        limit = self.max_viewers
        if limit is None:
            return
        active = self._active
        active[user_id] = None
        active.move_to_end(user_id)
        while len(active) > limit:
            old, _ = active.popitem(last=False)
            self._users.pop(old, None)
            self.viewers_evicted += 1

    def forget_user(self, user_id: str) -> None:
        with self._lock:
            self._users.pop(user_id, None)
            self._feed_only.pop(user_id, None)
            self._active.pop(user_id, None)

    def put_user(self, state: UserState) -> None:
        """Install a viewer's state rebuilt from their events (a holder that bounds its
        viewers, such as the online trainer, brings an evicted one back this way)."""
        with self._lock:
            self._users[state.user_id] = state
            self._feed_only.pop(state.user_id, None)
            self._touch(state.user_id)
            self._version += 1

    def feed_only_viewers(self) -> int:
        return len(self._feed_only)

    def reset_interests(self, user_id: str) -> None:
        """Forget what was inferred about the viewer's taste; keep what they said and did
        explicitly (following, not interested), what they have seen, and their watch time."""
        with self._lock:
            u = self._users.get(user_id)
            if u is None:
                return
            for name in ("history", "tokens", "positives", "creator_affinity", "hashtag_affinity",
                         "hashtag_long_views", "creator_long_views", "length_views",
                         "length_long_views", "topic_views", "topic_long_views"):
                getattr(u, name).clear()
            self._version += 1

    def replace_with(self, other: MemoryLiveState) -> None:
        """Take over the contents of a state rebuilt from the log (after erasure or a retention
        purge changed it), keeping this object, which other components hold. What the log does
        not record (what feeds sent) is carried over."""
        with self._lock, other._lock:
            for uid, u in self._users.items():
                fresh = other._users.get(uid)
                if fresh is not None:
                    fresh.served = u.served
            # Viewers with no event are not in the log: keep what feeds sent them, or every
            # rebuild (each erasure starts one) would let their next pages repeat.
            kept: OrderedDict[str, None] = OrderedDict()
            for uid in self._feed_only:
                held = self._users.get(uid)
                if held is not None and uid not in other._users:
                    other._users[uid] = held
                    kept[uid] = None
            self._feed_only = kept
            # The rebuild kept the most recently active by the log; those it let go count.
            self._active = other._active
            self.viewers_evicted += other.viewers_evicted
            self.clock = max(self.clock, other.clock)
            self._users, self._items, self._co = other._users, other._items, other._co
            self._creator_impressions = other._creator_impressions
            self._buckets, self._trending = other._buckets, other._trending
            self._popular, self._regional = other._popular, other._regional
            self._tops.invalidate()
            self._version += 1

    # -- reads ----------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """Grows with every change: components that cache what they derive from live state
        (the exploration pool) compare it to decide when to recompute."""
        return self._version

    def user(self, user_id: str) -> UserState | None:
        """The live object (changes as events arrive); see ``user_snapshot`` for requests."""
        return self._users.get(user_id)

    def user_snapshot(self, user_id: str) -> UserState | None:
        with self._lock:
            u = self._users.get(user_id)
            if u is not None and self.max_viewers is not None and user_id in self._active:
                self._active.move_to_end(user_id)  # a request for them: active
            return u.snapshot() if u is not None else None

    def user_ids(self) -> list[str]:
        return list(self._users)

    def viewer_count(self) -> int:
        return len(self._users)

    def item_stats(self, item_id: str) -> ItemStats:
        return self._items.get(item_id) or ItemStats()

    def creator_impressions(self, creator_id: str) -> int:
        """Impressions of all of a creator's videos (kept as events arrive: summing the
        videos' counters costs a lookup per video)."""
        return self._creator_impressions.get(creator_id, 0)

    def item_stats_many(self, item_ids: Iterable[str]) -> list[ItemStats]:
        """``item_stats`` for many ids in one C-level pass. Read-only: ids without stats
        share one empty ``ItemStats``."""
        return list(map(self._items.get, item_ids, repeat(_NO_STATS)))

    def trending(self, n: int) -> list[tuple[str, float]]:
        """Top items by engagement in the window ending at the clock."""
        return self._top("trending", self._trending, n)

    def trending_many(self, item_ids: Iterable[str]) -> list[float]:
        return list(map(self._trending.get, item_ids, repeat(0.0)))

    def popular(self, n: int) -> list[tuple[str, float]]:
        """Top items by all-time engagement (for when the trending window is empty)."""
        return self._top("popular", self._popular, n)

    def popular_in_region(self, region: str, n: int) -> list[tuple[str, float]]:
        """Top items by all-time engagement of viewers in a (coarse) region."""
        counts = self._regional.get(region)
        if not counts:
            return []
        return self._top(("region", region), counts, n)

    def _top(self, key, counts: Counter, n: int) -> list[tuple[str, float]]:
        return self._tops.top(key, counts, n, refresh_events=self.trending_refresh_events,
                              refresh_seconds=self.trending_refresh_seconds,
                              background=self.background_refresh)

    def co_engaged(self, item_id: str, n: int) -> list[tuple[str, int]]:
        counts = self._co.get(item_id)
        if not counts:
            return []
        if 4 * n < len(counts):
            return counts.most_common(n)
        # The same list (most_common's ties keep insertion order, as a stable sort does), in
        # one C sort: the served score's prior asks for whole rows, where most_common's heap
        # costs 1 ms for a row of 2,000.
        return sorted(counts.items(), key=itemgetter(1), reverse=True)[:n]
