"""Rebuild a live state from the durable store: the catalog, then the event log replayed into a
fresh state that replaces the old one's contents.

This is what makes a shared live state (Redis) safe to lose: everything it holds but what feeds
sent is derived from the log, so ``reelrank rebuild-live`` after a Redis restart (or a flush)
gives back the same state an API process would have built in memory from the same log. Events
from before a viewer's "refresh my feed" are replayed without their interests, as the engine's
start-up replay does. ``catch_up`` folds in the batches a process stored but died before
folding in (the store's outbox).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from typing import Callable, ContextManager

from reelrank.store.base import Store
from reelrank.store.live import LiveState

log = logging.getLogger(__name__)


def load_catalog(store: Store, live: LiveState, batch: int = 10_000) -> int:
    """Upsert every stored item into the live state's catalog; returns how many."""
    items, n = [], 0
    for item in store.iter_items():
        items.append(item)
        if len(items) >= batch:
            live.catalog.upsert(items)
            n, items = n + len(items), []
    live.catalog.upsert(items)
    return n + len(items)


def replay(store: Store, live: LiveState, after_seq: int = 0) -> tuple[int, int]:
    """Apply the log after ``after_seq`` to ``live``; returns (events, last seq)."""
    floors = {s.user_id: s.interests_reset_seq for s in store.iter_settings()
              if s.interests_reset_seq}
    n, last = 0, after_seq
    for seq, event in store.iter_events(after_seq=after_seq):
        live.apply(event, interests=seq > floors.get(event.user_id, 0))
        n, last = n + 1, seq
    return n, last


def restore_viewer(store: Store, live: LiveState, user_id: str,
                   unapplied: set[str] | None = None) -> None:
    """Bring back a viewer that ``live`` let go (its ``max_viewers`` bound) from their events
    in the log, before their next request or event. Under the engine's ingest lock, which makes
    a store append and its live apply one step, so the log holds exactly the events applied so
    far, less ``unapplied`` (those of the batch being applied). What feeds sent them is memory
    only and is not brought back: a video sent but never reported as an impression may come
    again."""
    held = live.user(user_id)
    if held is not None and held.counts:
        return  # back already: another request restored them
    floor = store.get_settings(user_id).interests_reset_seq or 0
    scratch = live.empty_like()
    for seq, event in store.iter_events(user_id=user_id):
        if not unapplied or event.event_id not in unapplied:
            scratch.apply(event, interests=seq > floor)
    state = scratch.user(user_id)
    if state is not None:
        if held is not None:
            state.served = held.served
        live.put_user(state)


def rebuild_live(store: Store, live: LiveState,
                 swapping: Callable[[], ContextManager] = contextlib.nullcontext
                 ) -> tuple[int, int]:
    """Replace ``live``'s contents with the log's (into ``live.empty_like()``, which on Redis
    writes in large pipelines, then ``replace_with``); the catalog must be loaded. Events
    appended meanwhile are caught up before the swap, under ``swapping()``: the engine's
    ingest step, or a shared state's ``WriteGate.swapping`` (``store/shared.py``), so that no
    process applies an event in between. Returns (events, last seq)."""
    started = time.perf_counter()
    fresh = live.empty_like()
    n, last = replay(store, fresh)
    with swapping():
        more, last = replay(store, fresh, after_seq=last)
        live.replace_with(fresh)
    store.outbox_done_through(last)  # every batch through ``last`` is in the new state
    log.info("live state rebuilt from %d events (through seq %d) in %.1f s", n + more, last,
             time.perf_counter() - started)
    return n + more, last


def catch_up(store: Store, live: LiveState, older_than_ms: int,
             writes: Callable[[], ContextManager] = contextlib.nullcontext) -> tuple[int, int]:
    """Fold into a shared ``live`` the outbox's batches pending for ``older_than_ms`` or more
    (``store/base.py``'s ``LiveOutbox``): their process died between committing and folding
    them in. The viewers it had folded in are marked and skipped (``apply_many``'s
    ``batch``); the others get the batch's events as a replay would (``interests`` after a
    reset only). Each batch under ``writes()`` (the engine's ingest step). Returns (batches
    read back from the log, events of theirs folded in now)."""
    batches = events = read = 0
    for first, last in store.outbox_pending(older_than_ms):
        with writes():
            rows = []
            with contextlib.closing(store.iter_events(after_seq=first - 1)) as scan:  # type: ignore[type-var]
                for seq, event in scan:
                    if seq > last:
                        break
                    rows.append((seq, event))
            floors = {u: store.get_settings(u).interests_reset_seq or 0
                      for u in {e.user_id for _, e in rows}}
            events += live.apply_many(  # type: ignore[attr-defined]
                [e for _, e in rows], [seq > floors[e.user_id] for seq, e in rows], batch=first)
        store.outbox_done([first])
        batches, read = batches + 1, read + len(rows)
    if batches:
        log.log(logging.WARNING if events else logging.INFO,
                "live state: %d stored batches (%d events) left pending by a stopped process "
                "read back; %d of their events had not been folded in, now are",
                batches, read, events)
    return batches, events


class MarkFloor:
    """The floor below which a viewer's outbox marks can go (``RedisLiveState.mark_floor``):
    the oldest pending batch as the store reported it at least ``lag_s`` ago. A catch-up that
    listed a batch as pending just before another process finished it may fold it in a while
    later; its viewers' marks must still be there then."""

    def __init__(self, lag_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.lag_s = lag_s
        self.clock = clock
        self._seen: deque[tuple[float, int]] = deque()

    def update(self, low: int) -> int | None:
        """Record the store's ``outbox_low`` now; the floor to use, None while too young."""
        now = self.clock()
        self._seen.append((now, low))
        while len(self._seen) > 1 and self._seen[1][0] <= now - self.lag_s:
            self._seen.popleft()
        at, floor = self._seen[0]
        return floor if at <= now - self.lag_s else None
