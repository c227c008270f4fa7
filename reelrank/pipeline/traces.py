"""The traces of recently served pages, kept to explain them (``GET /v1/explain``).

A side effect of serving: every page's trace is kept, a few per viewer, and dropped when the
viewer is erased or resets their feed. Past the byte budget or the number of viewers, the least
recently served viewers' traces go first (their explanations fall back to scoring the item
afresh).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Iterable

from reelrank.pipeline.feed import FeedResult
from reelrank.pipeline.trace_record import TraceRecord
from reelrank.pipeline.side_effects import SideEffect

DEFAULT_TRACE_BUDGET_BYTES = 64 * 1024 * 1024  # about 10,000 pages of 6 KB


class TraceKeeper(SideEffect):
    def __init__(
        self,
        per_user: int = 5,
        max_users: int = 10_000,
        budget_bytes: int = DEFAULT_TRACE_BUDGET_BYTES,
    ) -> None:
        self._traces: OrderedDict[str, deque[TraceRecord]] = OrderedDict()
        self.per_user = per_user
        self.max_users = max_users
        self.budget_bytes = budget_bytes
        self._bytes = 0
        self._count = 0
        self._evicted = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "TraceKeeper()"

    def on_feed(self, result: FeedResult) -> None:
        trace = result.trace
        record = trace.record()
        with self._lock:
            q = self._traces.get(trace.user_id)
            if q is None:
                q = self._traces[trace.user_id] = deque()
            self._traces.move_to_end(trace.user_id)
            q.append(record)
            self._bytes += record.nbytes
            self._count += 1
            if len(q) > self.per_user:
                self._forget([q.popleft()])
            # The newest viewer's traces stay even alone over a tiny budget: explain must work
            # for the page just served.
            while len(self._traces) > 1 and (
                len(self._traces) > self.max_users or self._bytes > self.budget_bytes
            ):
                _, oldest = self._traces.popitem(last=False)
                self._forget(oldest)
                self._evicted += 1

    def on_erase(self, user_id: str) -> None:
        self.drop(user_id)

    def on_reset(self, user_id: str) -> None:
        self.drop(user_id)

    def held_users(self) -> list[str]:
        with self._lock:
            return list(self._traces)

    def records(self, user_id: str) -> list[TraceRecord]:
        """The viewer's kept traces, oldest first."""
        with self._lock:
            return list(self._traces.get(user_id, ()))

    def drop(self, user_id: str) -> None:
        with self._lock:
            self._forget(self._traces.pop(user_id, ()))

    def _forget(self, records: Iterable[TraceRecord]) -> None:
        for r in records:
            self._bytes -= r.nbytes
            self._count -= 1

    def usage(self) -> dict:
        """What the kept traces hold against their budget (``GET /v1/stats``)."""
        with self._lock:
            return {
                "viewers": len(self._traces),
                "traces": self._count,
                "bytes": self._bytes,
                "budget_bytes": self.budget_bytes,
                "traces_per_viewer": self.per_user,
                "max_viewers": self.max_users,
                "viewers_evicted": self._evicted,
            }
