"""The live state's interface: what the feed path, features, training and evaluation may ask of
the catalog in memory and of the per-viewer and per-item state derived from the event log.

``store/memory.py`` is the one backend today (process memory, rebuilt from the log at start-up);
a shared one (Redis, for several serving processes) implements the same two Protocols and must
pass the contract suite in ``tests/store/test_live_contract.py`` unchanged. Modules outside
``store/`` type against these Protocols and never import a backend: entry points choose one
(``reelrank.store.new_live_state``), and the process-local scratch states that training and
replays build for themselves come from the same factory.

The value types a backend hands out (``UserState``, ``ItemStats``, ``HistoryEntry``) live here
too, with ``length_class``, so that readers need nothing from a backend's module.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Self, runtime_checkable

from reelrank.types import Event, Item


# Neighbours kept per video in the co-engagement graph. Each positive adds a pair with each of
# the viewer's last few positives, so without a bound a popular video's neighbours grow with the
# log (MovieLens latest-small: 1.4 million pairs, 1,566 at most for one film). A video whose
# neighbours pass twice this keeps this many, those with the highest counts (among equal counts
# either backend may keep different ones); newcomers get room to build up a count before the
# next trim. Serving reads a few dozen per video.
CO_ENGAGEMENT_CAP = 1000
# The served score's co-engagement prior sums the rows of the viewer's last this many positives
# (pipeline/neural.py; train/validation.py chooses its weight on the same definition).
CO_ENGAGEMENT_SEEDS = 10


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    item_id: str
    type: str
    ts: int
    watch_ms: int | None
    watch_ratio: float | None


HISTORY_LEN, POSITIVES_LEN, TOKENS_LEN = 200, 20, 100


@dataclass
class UserState:
    """What the engine knows about one viewer right now. ``history``, ``positives`` and
    ``tokens`` start as one shared empty tuple and become bounded deques at the viewer's first
    event (``grow``): a viewer known only from the feeds they asked for, most of an open
    server's viewers, holds none (three empty deques are 2.3 KB)."""

    user_id: str
    history: deque | tuple = ()  # of HistoryEntry, at most HISTORY_LEN
    seen: set = field(default_factory=set)  # items with an impression or a view
    served: OrderedDict[str, None] = field(default_factory=OrderedDict)  # sent in feeds
    not_interested: set = field(default_factory=set)
    following: set = field(default_factory=set)  # creator ids
    counts: Counter = field(default_factory=Counter)  # by event type, plus "long_view"
    creator_affinity: Counter = field(default_factory=Counter)
    hashtag_affinity: Counter = field(default_factory=Counter)
    hashtag_long_views: Counter = field(default_factory=Counter)  # for "you watched 3 #x ..."
    creator_long_views: Counter = field(default_factory=Counter)
    length_views: Counter = field(default_factory=Counter)  # by length_class(duration)
    length_long_views: Counter = field(default_factory=Counter)
    topic_views: Counter = field(default_factory=Counter)  # by reelrank.topics.topic_of
    topic_long_views: Counter = field(default_factory=Counter)
    positives: deque | tuple = ()  # recent positive items, at most POSITIVES_LEN
    tokens: deque | tuple = ()  # of Token: model input, at most TOKENS_LEN
    last_ts: int = 0
    region: str | None = None
    device: str | None = None
    watch_ms_by_day: dict[int, int] = field(default_factory=dict)  # UTC day -> ms watched

    def grow(self) -> None:
        """The bounded deques in place of the empty tuples, once."""
        if not isinstance(self.history, deque):
            self.history = deque(self.history, maxlen=HISTORY_LEN)
            self.positives = deque(self.positives, maxlen=POSITIVES_LEN)
            self.tokens = deque(self.tokens, maxlen=TOKENS_LEN)

    def watch_ms_on(self, day: int) -> int:
        return self.watch_ms_by_day.get(day, 0)

    def is_new(self) -> bool:
        return not self.history

    def snapshot(self) -> UserState:
        """A copy a request can read while new events keep changing the original."""
        copies = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, deque):
                value = deque(value, maxlen=value.maxlen)
            elif isinstance(value, (set, Counter, OrderedDict, dict)):
                value = value.copy()
            copies[f.name] = value
        return UserState(**copies)


@dataclass(slots=True)
class ItemStats:
    impressions: int = 0
    views: int = 0
    long_views: int = 0
    likes: int = 0
    shares: int = 0
    negatives: int = 0
    watch_ratio_sum: float = 0.0


def length_class(duration_ms: int) -> int:
    """Coarse video length: <10 s, <20 s, <40 s, <80 s, <160 s, longer."""
    for k, limit in enumerate((10_000, 20_000, 40_000, 80_000, 160_000)):
        if duration_ms < limit:
            return k
    return 5


@runtime_checkable
class CatalogView(Protocol):
    """The catalog as the feed path reads it."""

    @property
    def version(self) -> int:
        """Grows with every upsert: lets readers tell the catalog is unchanged."""
        ...

    def get(self, item_id: str) -> Item | None: ...
    def get_many(self, item_ids: Iterable[str]) -> list[Item | None]: ...
    def __contains__(self, item_id: object) -> bool: ...
    def __len__(self) -> int: ...
    def ids(self) -> list[str]: ...

    def newest(self, n: int, created_after: int | None = None) -> list[Item]:
        """Up to ``n`` items, newest first, optionally only those created after a time."""
        ...

    def by_creator(self, creator_id: str) -> set[str]: ...


@runtime_checkable
class Catalog(CatalogView, Protocol):
    """The catalog with its one write: the store stays the durable copy."""

    def upsert(self, items: list[Item]) -> None: ...


@runtime_checkable
class LiveState(Protocol):
    """Per-viewer and per-item state, updated by every accepted event.

    Its clock is the event time of the newest event seen (not the wall clock), so replays of
    historical logs behave as they did live."""

    catalog: Catalog
    clock: int
    # Top lists (trending, popular) may be this stale in wall-clock seconds; offline runs set
    # it to infinity so that only the number of events moves them.
    trending_refresh_seconds: float
    # Viewers held who were served feeds but sent no event; past it the least recently served
    # go (their state is only what feeds sent them).
    max_feed_only_viewers: int
    feed_only_evicted: int
    # Viewers with events let go from this process's memory so far (a backend that holds every
    # viewer keeps 0). While it is 0 a viewer not held has no events; once it is not, whoever
    # holds the log brings a missing viewer back from it (``Engine``).
    viewers_evicted: int

    @property
    def version(self) -> int:
        """Grows with every change: what derives from live state compares it to recompute."""
        ...

    # -- writes ---------------------------------------------------------------------------------
    def apply(self, event: Event, interests: bool = True) -> None:
        """Fold one accepted event in (events for unknown items are ignored). With
        ``interests=False`` (events before a "refresh my feed") the viewer's inferred interests
        are left out; what they did explicitly and the item's counters are kept."""
        ...

    def record_served(self, user_id: str, item_ids: list[str]) -> None:
        """Remember what a feed response sent, so that the next page does not repeat it."""
        ...

    def forget_user(self, user_id: str) -> None: ...

    def put_user(self, state: UserState) -> None:
        """Install a viewer's state rebuilt from their events."""
        ...

    def reset_interests(self, user_id: str) -> None:
        """Forget what was inferred about the viewer's taste; keep what they did explicitly."""
        ...

    def empty_like(self) -> Self:
        """A new, empty state over the same catalog with the same settings."""
        ...

    def replace_with(self, other: Self) -> None:
        """Take over the contents of a state rebuilt from the log, keeping this object and what
        the log does not record (what feeds sent)."""
        ...

    # -- reads ----------------------------------------------------------------------------------
    def user(self, user_id: str) -> UserState | None:
        """The viewer's state as held (may change as events arrive)."""
        ...

    def user_snapshot(self, user_id: str) -> UserState | None:
        """A copy a request can read while new events arrive."""
        ...

    def user_ids(self) -> list[str]: ...

    def viewer_count(self) -> int:
        """``len(user_ids())`` without listing them (a shared state holds millions)."""
        ...

    def feed_only_viewers(self) -> int: ...
    def item_stats(self, item_id: str) -> ItemStats: ...

    def item_stats_many(self, item_ids: Iterable[str]) -> list[ItemStats]:
        """``item_stats`` for many ids; read-only (unseen ids may share one empty value)."""
        ...

    def creator_impressions(self, creator_id: str) -> int: ...

    def trending(self, n: int) -> list[tuple[str, float]]:
        """Top items by positive engagement in the window ending at the clock."""
        ...

    def trending_many(self, item_ids: Iterable[str]) -> list[float]:
        """Each item's positive engagement in the trending window (0.0 for none)."""
        ...

    def popular(self, n: int) -> list[tuple[str, float]]:
        """Top items by all-time positive engagement."""
        ...

    def popular_in_region(self, region: str, n: int) -> list[tuple[str, float]]: ...

    def co_engaged(self, item_id: str, n: int) -> list[tuple[str, int]]:
        """Items most often engaged with near this one by the same viewers (at most
        ``CO_ENGAGEMENT_CAP`` to ``2 x CO_ENGAGEMENT_CAP`` of them are kept)."""
        ...
