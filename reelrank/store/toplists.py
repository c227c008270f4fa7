"""Cached top-n lists over the live state's counters (trending, popular, popular in a region).

Ranking all items on every request would cost O(catalog), so a list is recomputed only when the
state moved by ``refresh_events`` events or the list is older than ``refresh_seconds``. With
``background`` (a server) a stale list is still served while a thread recomputes it: at 100,000
videos a ranking takes tens of milliseconds, which the request that found it stale used to wait
for. Part of the in-memory backend (``store/memory.py``), which owns the lock and the version.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from typing import Any, Callable, Hashable

import numpy as np

log = logging.getLogger(__name__)


def version_reader(state: Any) -> Callable[[], int]:
    """A reader of ``state._version`` that holds ``state`` weakly. ``lambda: self._version``
    would make every state a reference cycle, which only the cyclic collector frees, and a
    server keeps long-lived objects out of its sight (``service/heap.py``): each state rebuilt
    after an erasure then outlived its ``replace_with``, with all it held, until the hourly
    full collection (1.4 GB after 1,500 requests of the soak's mix, 75 of them erasures)."""
    ref = weakref.ref(state)

    def version() -> int:
        held = ref()
        return held._version if held is not None else -1

    return version


class TopLists:
    """Key ("trending", "popular" or ("region", r)) -> (state version, wall time, length, list).

    ``lock`` is the state's own lock (the counters change under it) and ``version`` reads the
    state's change counter."""

    def __init__(self, lock: threading.RLock, version: Callable[[], int]) -> None:
        self._lock = lock
        self._version = version
        self._cache: dict[Hashable, tuple[int, float, int, list[tuple[str, float]]]] = {}
        self._generation = 0  # bumped by ``invalidate``: older computations are dropped
        self._refresh_lock = threading.Lock()
        self._refreshing: set = set()

    def invalidate(self) -> None:
        """Drop every list (the state's contents were replaced); call under the state's lock."""
        self._cache = {}
        self._generation += 1

    def top(
        self,
        key: Hashable,
        counts: Counter,
        n: int,
        *,
        refresh_events: int,
        refresh_seconds: float,
        background: bool,
    ) -> list[tuple[str, float]]:
        cached = self._cache.get(key)
        now_version = self._version()
        if cached is not None and cached[2] >= n:
            version, made_at, _, top = cached
            if version == now_version or (
                now_version - version < refresh_events
                and time.monotonic() - made_at < refresh_seconds
            ):
                return top[:n]
            if background:
                self._refresh_later(key, counts, cached[2])
                return top[:n]
        return self._compute(key, counts, max(n, 500))[:n]

    def _compute(self, key: Hashable, counts: Counter, size: int) -> list[tuple[str, float]]:
        """``counts.most_common(size)`` (same order, ties in insertion order), with the
        ranking done by NumPy outside the lock: only the copy holds it."""
        with self._lock:
            generation, version = self._generation, self._version()
            keys = list(counts)
            values = np.fromiter(counts.values(), dtype=np.float64, count=len(keys))
        order = np.argsort(-values, kind="stable")[:size]
        top = list(zip([keys[i] for i in order.tolist()], values[order].tolist()))
        with self._lock:
            if generation == self._generation:  # not from before a rebuild's swap
                self._cache[key] = (version, time.monotonic(), size, top)
        return top

    def _refresh_later(self, key: Hashable, counts: Counter, size: int) -> None:
        with self._refresh_lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def run() -> None:
            try:
                self._compute(key, counts, size)
            except Exception:  # the stale list keeps serving; the next request retries
                log.exception("recomputing a top list failed")
            finally:
                with self._refresh_lock:
                    self._refreshing.discard(key)

        threading.Thread(target=run, name="live-top", daemon=True).start()
