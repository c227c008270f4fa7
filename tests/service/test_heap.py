"""The server's heap keeper, and the property it relies on: the engine's data, old model
versions included, is freed by reference counting, without the cyclic collector."""

from __future__ import annotations

import pytest

import gc
import time
import weakref

from reelrank.service.heap import HeapKeeper
from reelrank.train.budget import release_free_memory


class _Node:
    def __init__(self):
        self.other = None


def test_freeze_hides_survivors_and_the_full_pass_still_frees_frozen_cycles():
    keeper = HeapKeeper()
    try:
        keeper.full()
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        gone = weakref.ref(a)
        keeper.freeze()
        # In the permanent generation, outside every generation the collector scans. (Not a
        # freeze-count comparison: other threads' frozen objects may be freed meanwhile.)
        assert gc.get_freeze_count() > 0
        assert not any(o is gone() for o in gc.get_objects())
        del a, b
        gc.collect()
        assert gone() is not None  # frozen: a normal full pass does not see it
        keeper.full()
        assert gone() is None and keeper.full_collections == 2 and keeper.freezes == 1
    finally:
        gc.unfreeze()


def test_the_keeper_thread_freezes_periodically_and_stops():
    keeper = HeapKeeper(freeze_every_s=0.01, full_every_s=0.05)
    try:
        keeper.start()
        deadline = time.monotonic() + 10
        while (keeper.freezes < 3 or keeper.full_collections < 1) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        keeper.stop()
        assert keeper.freezes >= 3 and keeper.full_collections >= 1
        assert not keeper._thread.is_alive()
        # Each pass hands free heap memory back, where the C library can (glibc).
        assert keeper.trims >= 4 or not release_free_memory()
    finally:
        gc.unfreeze()


def test_a_live_state_replaced_by_a_rebuild_is_freed_without_the_collector(store):
    """Each erasure rebuilds live state into a new object and takes its contents over; that
    object must hold no reference cycle, or, frozen, it would keep what it held alive."""
    from reelrank.engine import Engine
    from reelrank.types import Event
    from tests.service.test_api import T0, make_item

    engine = Engine(store).load()
    engine.ingest_items([make_item(i) for i in range(10)])
    engine.ingest_events([Event(f"e{u}{k}", u, f"v{k}", T0 + k, "play", watch_ms=5_000)
                          for u in ("keep", "a", "b") for k in range(3)])
    engine.live.trending(5)  # the top lists, which read the state's version
    gc.disable()
    try:
        engine.erase_user("a")
        held = weakref.ref(engine.live.user("keep"))  # as rebuilt from the log
        engine.erase_user("b")  # a second rebuild replaces that one
        assert held() is None
        assert [h.item_id for h in engine.live.user("keep").history] == ["v0", "v1", "v2"]
    finally:
        gc.enable()


def test_the_allocator_is_bounded_unless_the_environment_says_otherwise():
    # In a child process: the settings are process-wide and outlive the test.
    import ctypes.util
    import json
    import os
    import subprocess
    import sys

    if not ctypes.util.find_library("c"):
        pytest.skip("no C library to tune here")
    code = ("import json; from reelrank.train.budget import tune_allocator; "
            "print(json.dumps([tune_allocator(2, 262144), tune_allocator(0, 0)]))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")}

    def run(**extra):
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    assert run() == [{"arena_max": 2, "mmap_threshold": 262144}, {}]
    # An operator's own setting, which glibc read at start, is left alone.
    assert run(MALLOC_ARENA_MAX="4") == [{"mmap_threshold": 262144}, {}]
