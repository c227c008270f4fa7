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
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator


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
