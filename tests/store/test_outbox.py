"""The store's outbox and ``Engine.catch_up_live``: a batch that a process stored but did not
fold into the shared live state (it died in between, or part-way) is folded in by another
process, each event once, so that Redis ends up holding what a replay of the log gives."""

from __future__ import annotations

import pytest

from reelrank.engine import Engine
from reelrank.store import new_catalog, new_live_state
from reelrank.store.rebuild import MarkFloor, load_catalog
from tests.rd import throwaway_prefix
from tests.store.test_rebuild_live import a_store, assert_same, world

pytest.importorskip("redis")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_batches_stored_but_not_folded_in_are_caught_up_once(kind, tmp_path):
    items, events = world()
    with a_store(kind, tmp_path) as (_, store), throwaway_prefix() as (url, prefix):
        store.upsert_items(items)
        red = new_live_state(new_catalog(), url=f"{url}?prefix={prefix}",
                             trending_refresh_events=1)
        engine = Engine(store, live=red).load(replay=False)
        for k in range(0, 600, 100):
            engine.ingest_events(events[k:k + 100])
        assert engine.catch_up_live(grace_s=0) == (0, 0)  # all folded in: only marked done
        assert store.outbox_pending() == []

        # A process stored a batch and died before folding any of it in; another stored one
        # and died after folding in half of its viewers.
        lost = store.append_events(events[600:700], outbox=True)
        half = store.append_events(events[700:800], outbox=True)
        viewers = sorted({e.user_id for e in half.accepted})
        folded = set(viewers[:len(viewers) // 2])
        red.apply_many([e for e in half.accepted if e.user_id in folded], batch=half.batch)
        for k in range(800, 1500, 100):
            engine.ingest_events(events[k:k + 100])

        assert engine.catch_up_live(grace_s=60) == (0, 0)  # still within their grace period
        assert [b for b, _ in store.outbox_pending()] == [lost.batch, half.batch]
        # Two batches read back; of the half-folded one, only the viewers not marked.
        not_folded = 100 + sum(e.user_id not in folded for e in half.accepted)
        assert engine.catch_up_live(grace_s=0) == (2, not_folded)
        assert store.outbox_pending() == []
        assert engine.catch_up_live(grace_s=0) == (0, 0)

        # The same events folded into memory in the order they reached Redis: late ones land
        # late in the viewer's history (and in the newest trending bucket), as any event
        # delayed on its way would; each one counts once.
        mem = new_live_state(new_catalog(), trending_refresh_events=1)
        load_catalog(store, mem)
        for k in range(0, 600, 100):
            fold(mem, events[k:k + 100])
        fold(mem, [e for e in half.accepted if e.user_id in folded])
        for k in range(800, 1500, 100):
            fold(mem, events[k:k + 100])
        fold(mem, lost.accepted)
        fold(mem, [e for e in half.accepted if e.user_id not in folded])
        assert_same(mem, red, items)  # the half folded in twice would count twice here


def fold(live, events) -> None:
    """As ``apply_many`` folds a batch: each viewer's events together, in order."""
    by_user: dict[str, list] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    for batch in by_user.values():
        for e in batch:
            live.apply(e)


def test_a_viewers_marks_keep_the_batches_that_may_be_folded_again():
    from reelrank.store.redis_codec import MARKS_KEPT, has_mark, with_mark

    marks = ""
    for batch in range(1, MARKS_KEPT + 11):  # a viewer in every batch, no floor yet
        marks = with_mark(marks.encode(), batch)
    assert not has_mark(None, 1) and not has_mark(marks, 10) and has_mark(marks, 11)
    assert has_mark(marks, MARKS_KEPT + 10) and not has_mark(marks, 1)
    assert not has_mark("123", 12)  # whole numbers, not digits of one
    assert len(marks.split(",")) == MARKS_KEPT
    marks = with_mark(marks, 900, floor=MARKS_KEPT + 5)  # batches below the floor are done
    assert marks.split(",") == [str(b) for b in range(MARKS_KEPT + 5, MARKS_KEPT + 11)] + ["900"]


def test_the_mark_floor_lags_the_oldest_pending_batch():
    now = [0.0]
    floor = MarkFloor(lag_s=60.0, clock=lambda: now[0])
    assert floor.update(10) is None  # nothing seen a minute ago yet
    now[0] = 30.0
    assert floor.update(50) is None
    now[0] = 60.0
    assert floor.update(80) == 10
    now[0] = 95.0
    assert floor.update(90) == 50  # what was pending at 30 s, the newest seen 60 s before
