"""Short full collections in a long-running server.

CPython's cyclic garbage collector scans every tracked object of the oldest generation in one
pass that holds the interpreter lock: every request in flight waits. A server accumulates such
objects as it runs (new viewers' live state, each model version's modules), so the pauses grow
with uptime: at 100,000 videos they reached 200 ms after a few thousand new viewers.

``HeapKeeper`` moves the objects that survived so far out of the collector's sight
(``gc.freeze``) every few seconds, so a full pass only scans what is newer, and once an hour
runs one real full collection over everything (``gc.unfreeze``, ``gc.collect``) so that
cyclic garbage frozen by mistake is still freed, at the price of one longer pause an hour.
Frozen objects are still freed by reference counting, which is how the engine's data dies:
tests check that a swapped-out model version and a live state replaced by a rebuild are freed
without the collector.

Each pass also hands the C heap's free memory back to the system (glibc's ``malloc_trim``, as
the online trainer does): a rebuild after an erasure builds a whole new live state on its own
thread and frees the old one, and the freed space otherwise stays in the process, scattered
over the allocator's per-thread arenas, for as long as it runs.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from reelrank.train.budget import release_free_memory

log = logging.getLogger(__name__)


class HeapKeeper:
    def __init__(self, freeze_every_s: float = 10.0, full_every_s: float = 3600.0):
        self.freeze_every_s = freeze_every_s
        self.full_every_s = full_every_s
        self.freezes = 0
        self.trims = 0
        self.trim_ms = 0.0  # how long the last trim took
        self.full_collections = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "HeapKeeper":
        """The periodic work, on a thread (``full`` once after loading, before this)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="heap-keeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def freeze(self) -> None:
        """Collect the young generations, then freeze whatever survived."""
        gc.collect(1)
        gc.freeze()
        self.freezes += 1
        self.trim()

    def trim(self) -> None:
        """Return the heap's free memory to the system (where the C library can)."""
        started = time.perf_counter()
        if release_free_memory():
            self.trims += 1
            self.trim_ms = (time.perf_counter() - started) * 1000

    def full(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.full_collections += 1
        # DEBUG: routine housekeeping, not a start-up step an operator needs to read.
        log.debug("full garbage collection: %d objects freed in %.0f ms", found,
                  (time.perf_counter() - started) * 1000)
        self.trim()

    def _run(self) -> None:
        last_full = time.monotonic()
        while not self._stop.wait(self.freeze_every_s):
            if time.monotonic() - last_full >= self.full_every_s:
                self.full()
                last_full = time.monotonic()
            else:
                self.freeze()
