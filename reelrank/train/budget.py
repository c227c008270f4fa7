"""Memory budgets of the online trainer.

The trainer runs for as long as the server does, and three things it holds would otherwise
grow with time or with the number of viewers (measured on the demo world under the soak's
load: benchmarks/results/soak.md):

- its own live state, one entry per viewer who ever sent an event. ``ViewerBudget`` keeps the
  most recently active ``max_viewers``; a viewer evicted and then active again is rebuilt from
  their events in the log before the event that brings them back, so the features of their
  next impressions are what they would have been (the state is a function of the viewer's
  events and the catalog alone);
- what the impression-outcome join keeps after an example closed early, so that a late
  outcome can correct it (``Joiner._done`` and ``RowStream._emitted``), for a whole window
  (an hour): at 30 impressions/s that is 100,000 examples and their inputs, at 1.2 to 1.6 KB
  each (the inputs' dense features packed as an array; measured with ``tracemalloc``, with the
  history tokens they keep alive) some 150 MB. ``trim_join_memory`` keeps the newest
  ``late_memory`` (10,000 by default, six minutes at that rate): a late outcome for an older
  one is counted as unattributed, and the example stays learned with the labels it had when
  it closed;
- the join's heap of closing times, which keeps a stale entry for every example that settled
  before its window's end, until that end: it is compacted once stale entries dominate.

Two more things held no live data but grew all the same: the heap's freed memory, which glibc
keeps rather than returning it to the system (the trainer frees and allocates tens of MB a
minute copying models for each version: ``release_free_memory`` hands it back now and then),
and the co-engagement graph in the trainer's live state, which serving's candidate source reads
but the trainer never does (``trainer_live_state`` leaves it out: it grows with pairs of videos;
so are each viewer's event history and seen set, which grow with the viewer's past up to some
30 KB, times ``max_viewers``).

The join's memory of event ids (``Joiner.dedupe_memory``, a million ids by default, about
150 bytes each once full) is switched off by the trainer itself (``TrainerConfig``): it reads
the store's log, which holds each event id once, so the join sees no duplicates to drop.

The join (``join.py``) serves evaluation replays too, which need it exact and unbounded, so
the budgets are applied here, from outside, to the trainer's instances only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import heapq
import logging
from collections import OrderedDict
from typing import Any

from reelrank.features import RowStream
from reelrank.store import new_live_state
from reelrank.store.live import Catalog, LiveState
from reelrank.types import Event

log = logging.getLogger(__name__)


def trainer_live_state(catalog: Catalog) -> LiveState:
    """The live state the trainer computes features from: the same viewers and item counters
    as serving's, without what only serving reads: the item-to-item co-engagement graph (the
    candidate source), and each viewer's event history and seen set (explanations, insights
    and the feed's filter). What features and the models read (tokens, affinities, counters,
    follows) is the same as serving's."""
    return new_live_state(catalog, co_engagement=False, viewer_history=False)


class ViewerBudget:
    """At most ``max_viewers`` viewers in ``live``, the least recently active out first;
    ``store`` gives an evicted viewer's events back when they return."""

    def __init__(self, live: LiveState, store, max_viewers: int):
        if max_viewers < 1:
            raise ValueError("max_viewers must be at least 1")
        self.live = live
        self.store = store
        self.max_viewers = max_viewers
        self._order: OrderedDict[str, None] = OrderedDict()
        self.evicted = 0
        self.rebuilt = 0

    def __len__(self) -> int:
        return len(self._order)

    def before(self, seq: int, event: Event, floors: dict[str, int]) -> None:
        """Call before the event at ``seq`` is applied. ``floors``: each viewer's "refresh my
        feed" point (events at or before it rebuild no interests, as in the trainer's replay)."""
        user = event.user_id
        order = self._order
        if user in order:
            order.move_to_end(user)
            return
        # Only a viewer evicted before can be missing with events behind them; until the
        # first eviction an unknown viewer is a new one and costs no read of the store.
        if self.evicted and self.live.user(user) is None:
            self._rebuild(user, seq, floors.get(user, 0))
        order[user] = None
        while len(order) > self.max_viewers:
            old, _ = order.popitem(last=False)
            self.live.forget_user(old)
            self.evicted += 1

    def forget(self, user_id: str) -> None:
        """Erasure: the viewer is gone from the state and from the order."""
        self._order.pop(user_id, None)

    def _rebuild(self, user_id: str, before_seq: int, floor: int) -> None:
        """Replay the viewer's events before ``before_seq`` through a scratch state over the
        same catalog and keep the viewer's part of it (the rest is discarded: item counters and
        trending already hold those events)."""
        scratch = self.live.empty_like()
        events = self.store.iter_events(user_id=user_id)
        try:
            for seq, event in events:
                if seq >= before_seq:
                    break
                scratch.apply(event, interests=seq > floor)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # no read left open on the store
        state = scratch.user(user_id)
        if state is not None:
            self.live.put_user(state)
            self.rebuilt += 1


def trim_join_memory(rows: RowStream, late_memory: int) -> int:
    """Keep at most ``late_memory`` closed examples (and their inputs) for late corrections,
    the oldest out first, and compact the join's heap; returns how many examples went."""
    joiner = rows.joiner
    dropped = 0
    while len(joiner._done) > late_memory:
        joiner._done.popitem(last=False)
        dropped += 1
    while len(rows._emitted) > late_memory:
        rows._emitted.popitem(last=False)
    # Every early close leaves the example's window-end entry behind in the heap (it is
    # skipped when popped); rebuilding from the live entries costs one pass, so it waits
    # until stale ones are most of the heap.
    live = joiner._due
    if len(joiner._expiry) > 2 * len(live) + 1024:
        joiner._expiry = [entry for entry in joiner._expiry if live.get(entry[2]) == entry[0]]
        heapq.heapify(joiner._expiry)
    return dropped


def join_memory(rows: RowStream) -> dict:
    """What the join holds now, for the trainer's status."""
    joiner = rows.joiner
    return {"open_examples": len(joiner._open), "late_examples": len(joiner._done),
            "late_inputs": len(rows._emitted), "pending_inputs": len(rows._pending),
            "closing_heap": len(joiner._expiry), "event_ids": len(joiner._seen_ids)}


_malloc_trim: Any = None  # the C function, False where there is none, None until looked up


def release_free_memory() -> bool:
    """Return the C heap's free memory to the system (glibc's ``malloc_trim``); False where
    there is no such call (another C library, another system)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError, TypeError):
            _malloc_trim = False
            log.debug("no malloc_trim here: the trainer's freed heap stays with it")
    if not _malloc_trim:
        return False
    _malloc_trim(0)
    return True


# glibc's mallopt parameters (malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# The API server's threshold. At 128 KB a feed's ranker tensors each got a mapping of their
# own, made and handed back on every request: about 1,300 page faults and 4 ms of CPU per
# feed, a third of it. At 2 MB, under 200 faults and the CPU of glibc's defaults
# (benchmarks/results/throughput-lanes.md); the blocks above it still go back when freed.
SERVER_MMAP_THRESHOLD = 2 * 1024 * 1024


def tune_allocator(arenas: int = 2, mmap_threshold: int = 128 * 1024) -> dict[str, int]:
    """Bound what the C heap keeps of freed memory in a long-running server; returns what it
    set. glibc gives each thread that allocates its own arena (up to 8 per core), and every
    arena keeps its own free space between requests; and after a large block is freed it raises
    its threshold for serving large blocks from the heap instead of from fresh mappings, so a
    request's tensors are carved from, and fragment, the heaps. ``arenas`` bounds the first,
    and a fixed ``mmap_threshold`` keeps blocks of that size or more in their own mappings,
    handed back when freed (the soak benchmark, ``benchmarks/results/soak.md``). A parameter
    the environment already sets (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``) is left as
    it is; where there is no glibc, nothing is set."""
    import os

    wanted = {"arena_max": (_M_ARENA_MAX, arenas, "MALLOC_ARENA_MAX"),
              "mmap_threshold": (_M_MMAP_THRESHOLD, mmap_threshold, "MALLOC_MMAP_THRESHOLD_")}
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError, TypeError):
        return {}
    done = {}
    for name, (param, value, env) in wanted.items():
        if value > 0 and env not in os.environ and mallopt(param, value) == 1:
            done[name] = value
    return done
