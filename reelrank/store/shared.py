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
            events, _ = rebuild_live(store, self.live)
            return events
