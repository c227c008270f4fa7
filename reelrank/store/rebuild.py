"""Rebuild a live state from the durable store: the catalog, then the event log replayed into a
fresh state that replaces the old one's contents.

This is what makes a shared live state (Redis) safe to lose: everything it holds but what feeds
sent is derived from the log, so ``reelrank rebuild-live`` after a Redis restart (or a flush)
gives back the same state an API process would have built in memory from the same log. Events
from before a viewer's "refresh my feed" are replayed without their interests, as the engine's
start-up replay does.
"""

from __future__ import annotations

import contextlib
import logging
import time

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


def rebuild_live(store: Store, live: LiveState, gate=None) -> tuple[int, int]:
    """Replace ``live``'s contents with the log's (into ``live.empty_like()``, which on Redis
    writes in large pipelines, then ``replace_with``); the catalog must be loaded. Events
    appended meanwhile are caught up before the swap. ``gate``: a shared state's
    ``WriteGate`` (``store/shared.py``), held for the catch-up and the swap so that no API
    process applies an event in between. Returns (events, last seq)."""
    started = time.perf_counter()
    fresh = live.empty_like()
    n, last = replay(store, fresh)
    with gate.swapping() if gate is not None else contextlib.nullcontext():
        more, last = replay(store, fresh, after_seq=last)
        live.replace_with(fresh)
    log.info("live state rebuilt from %d events (through seq %d) in %.1f s", n + more, last,
             time.perf_counter() - started)
    return n + more, last
