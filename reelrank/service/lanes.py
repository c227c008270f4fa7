"""The feed lanes: how many feeds (and ``/v1/rank``, ``/v1/explain``) the server computes at
once, ``RequestLimits.feed_threads``.

A route declared with plain ``def`` runs on Starlette's thread pool, up to 40 at a time. The
feed pipeline is Python under one interpreter lock, so sixteen feeds at once do not finish
sooner than one after another: they take turns on the lock every few milliseconds, and each
switch costs. Under 16 clients a feed cost half as much CPU again as under one, and the
server gave fewer feeds per second than with a single client
(``benchmarks/results/throughput-lanes.md``). The feed routes therefore hand their work to a
lane of their own, a capacity limiter of a few threads; requests past it wait in the event
loop, in the order they came, holding no thread. Two lanes let one feed run the models, which
release the lock, while another runs Python.

Everything else (events, catalog, settings, erasure) keeps the shared pool: ingestion waits
on the disk, not on the lock.
"""

from __future__ import annotations

import asyncio
from typing import Callable, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

T = TypeVar("T")


class FeedLanes:
    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError("feed_threads must be at least 1")
        self.threads = threads
        self._limiter: CapacityLimiter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _current(self) -> CapacityLimiter:
        # A limiter belongs to the event loop it waits in: one per loop the app runs in
        # (one for the server; a test client may start several, one after another).
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._loop is not loop:
            self._limiter, self._loop = CapacityLimiter(self.threads), loop
        return self._limiter

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on a lane's thread, once one is free."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._current())

    def view(self) -> dict:
        """``GET /v1/stats``: the lanes, and the feeds computing and waiting now."""
        limiter = self._limiter
        return {"threads": self.threads,
                "busy": int(limiter.borrowed_tokens) if limiter is not None else 0,
                "waiting": int(limiter.statistics().tasks_waiting) if limiter is not None else 0}
