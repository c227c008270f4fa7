"""The server's heap keeper, and the property it relies on: the engine's data, old model
versions included, is freed by reference counting, without the cyclic collector."""

from __future__ import annotations

import gc
import time
import weakref

from reelrank.service.heap import HeapKeeper


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
    finally:
        gc.unfreeze()
