"""What one process holds of a deployment's shared live state (``reelrank serve --live URL``).

Several API processes (``--workers N``, or on several hosts) serve one PostgreSQL store and one
Redis live state. Each process has:

- its own in-memory catalog, wrapped in a ``SharedCatalog`` whose upserts reach the others
  through the fan-out stream (``store/fanout.py``);
- a ``RedisLiveState`` over it that adds each applied event's message to the stream;
- a ``Subscriber`` thread that reads the others' messages: cached item counters are dropped,
  catalog upserts taken, and erasures and resets (a digest of the viewer's id) handed to
  ``on_erase`` / ``on_reset``, which drop what this process holds of that viewer in memory.

Start-up never replays the log into the shared state (every process would add the whole log
to the counters again): ``ensure_built`` rebuilds it only when Redis holds nothing under the
prefix and the store has events (a first start, or Redis lost without persistence), under a
lock, so that of several processes starting at once one rebuilds and the others wait for it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Callable, Iterator

import redis

from reelrank.store.base import Store
from reelrank.store.fanout import Fanout, SharedCatalog, Subscriber, live_handler
from reelrank.store.live import Catalog
from reelrank.store.redis_codec import parse_live_url
from reelrank.store.redis_live import RedisLiveState

log = logging.getLogger(__name__)

DigestHandler = Callable[[str], None]


class SharedLive:
    """``SharedLive(url, catalog, **options)``: ``live`` and ``catalog`` to build an engine on,
    ``start`` once it is loaded, ``stop`` at the end. ``options``: ``RedisLiveState``'s."""

    def __init__(self, url: str, catalog: Catalog, **options) -> None:
        self.url = url
        target, prefix = parse_live_url(url)
        self._target = target
        self.prefix = prefix
        self.client = redis.Redis.from_url(target)
        self.fanout = Fanout(self.client, prefix)
        self.catalog = SharedCatalog(catalog, self.fanout)
        self.live = RedisLiveState(self.catalog, self.client, prefix=prefix, fanout=self.fanout,
                                   **options)
        self.subscriber: Subscriber | None = None
        self._on_erase: list[DigestHandler] = []
        self._on_reset: list[DigestHandler] = []

    def digest(self, user_id: str) -> str:
        """The viewer's id as this deployment's erase and reset messages carry it."""
        return self.fanout.digest(user_id)

    def on_erase(self, handler: DigestHandler) -> None:
        """Call ``handler(digest)`` for each viewer another process erases."""
        self._on_erase.append(handler)

    def on_reset(self, handler: DigestHandler) -> None:
        """Call ``handler(digest)`` for each viewer whose interests another process reset."""
        self._on_reset.append(handler)

    def _erased(self, digest: str) -> None:
        for handler in list(self._on_erase):
            handler(digest)

    def _reset(self, digest: str) -> None:
        for handler in list(self._on_reset):
            handler(digest)

    def start(self) -> "SharedLive":
        """Read the others' messages from now on (in a thread, on a connection of its own)."""
        if self.subscriber is None:
            self.subscriber = Subscriber(
                redis.Redis.from_url(self._target), self.fanout,
                live_handler(self.live, self.catalog, on_erase=self._erased,
                             on_reset=self._reset)).start()
        return self

    def stop(self) -> None:
        if self.subscriber is not None:
            self.subscriber.stop()
            self.subscriber.client.close()
            self.subscriber = None
        self.client.close()

    @contextlib.contextmanager
    def lock(self, name: str, timeout_s: float = 3600.0,
             wait_s: float | None = None) -> Iterator[None]:
        """A lock across every process of the deployment (a Redis lock under the prefix,
        released after ``timeout_s`` if its holder dies). ``wait_s``: how long to wait for it
        (None: as long as it takes); ``TimeoutError`` past that."""
        lock = self.client.lock(self.prefix + "lock:" + name, timeout=timeout_s,
                                blocking_timeout=wait_s)
        if not lock.acquire():
            raise TimeoutError(f"the {name!r} lock of {self.prefix!r} is held elsewhere")
        try:
            yield
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:  # expired: someone else may hold it now
                log.warning("the %r lock expired before it was released", name)

    def gate(self) -> "WriteGate":
        """The gate between writes to the shared state and a rebuild's swap (``WriteGate``)."""
        return WriteGate(self.client, self.prefix)

    def is_empty(self) -> bool:
        """Nothing was ever applied under this prefix (every write raises its version)."""
        return not self.client.exists(self.prefix + "version")

    def ensure_built(self, store: Store) -> int:
        """Rebuild the shared state from the store's log when it holds nothing and the log
        holds events; returns the events replayed (0: it was there already, or the log is
        empty). The catalog must be loaded. Of several processes starting together, one
        rebuilds (under the ``rebuild`` lock) and the others find it built."""
        from reelrank.store.rebuild import rebuild_live

        if not self.is_empty() or store.last_seq() == 0:
            return 0
        with self.lock("rebuild"):
            if not self.is_empty():
                return 0
            log.info("the shared live state under %r is empty: rebuilding it from the log",
                     self.prefix)
            events, _ = rebuild_live(store, self.live, swapping=self.gate().swapping)
            return events


# Enter a write section unless a swap is under way: the section's token is kept, with the time
# past which it counts as abandoned (its process died), in a sorted set. Keys (both under the
# prefix's "lock:", which a swap keeps): the swap flag, the sorted set. Args: token, ttl ms.
_ENTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# Count the write sections still in flight, dropping the abandoned ones.
_IN_FLIGHT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class WriteGate:
    """Many writers or one swap, across every process of a deployment.

    A rebuild (after an erasure or a retention purge) replays the log into a scratch namespace
    and swaps it in; an event another process applied during the final catch-up and the swap
    would reach the old keys only, and be lost with them. So ingestion (and every other write
    to the shared state) runs in a ``writing`` section, and the rebuild's catch-up and swap in
    ``swapping``: a swap waits for the sections in flight to end and new ones wait for the swap
    (polling every few ms), so an event is either in the log before the catch-up reads it or
    applied after the swap, never in between. Two round trips per section; a section whose
    process died stops counting after ``ttl_s``."""

    def __init__(self, client, prefix: str, ttl_s: float = 30.0, poll_s: float = 0.005,
                 wait_s: float = 60.0) -> None:
        self.client = client
        self.flag = prefix + "lock:swapping"
        self.sections = prefix + "lock:writing"
        self.ttl_ms = int(ttl_s * 1000)
        self.poll_s = poll_s
        self.wait_s = wait_s
        self._enter = client.register_script(_ENTER)
        self._count = client.register_script(_IN_FLIGHT)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_s
        while not self._enter(keys=[self.flag, self.sections], args=[token, self.ttl_ms]):
            if time.monotonic() > deadline:
                raise TimeoutError("the shared live state has been swapping for "
                                   f"{self.wait_s:.0f} s")
            time.sleep(self.poll_s)
        try:
            yield
        finally:
            self.client.zrem(self.sections, token)

    @contextlib.contextmanager
    def swapping(self) -> Iterator[None]:
        self.client.set(self.flag, "1", px=self.ttl_ms * 2)
        try:
            deadline = time.monotonic() + self.ttl_ms / 1000
            while self._count(keys=[self.sections]):
                if time.monotonic() > deadline:  # cannot happen unless sections hang
                    log.warning("swapping with write sections still in flight")
                    break
                time.sleep(self.poll_s)
            yield
        finally:
            self.client.delete(self.flag)
