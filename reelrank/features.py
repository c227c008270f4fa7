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
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

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
