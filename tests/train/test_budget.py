"""The online trainer's memory budgets: viewers evicted and rebuilt exactly from the log, the
join's late-correction memory bounded, and the heap of closing times compacted."""

from __future__ import annotations

import random

import pytest

from reelrank.features import RowStream
from reelrank.store import open_store
from reelrank.store import new_catalog, new_live_state
from reelrank.store.live import Catalog
from reelrank.train.budget import (ViewerBudget, join_memory, trainer_live_state,
                                   release_free_memory, trim_join_memory)
from reelrank.types import Event, Item

H = 3_600_000


def _catalog(n=30) -> Catalog:
    catalog = new_catalog()
    catalog.upsert([Item(f"v{k}", f"c{k % 4}", 10_000 + 1_000 * (k % 7), 0,
                         hashtags=(f"t{k % 5}", f"t{k % 3}")) for k in range(n)])
    return catalog


def _stream(n_users=12, n=600, seed=0) -> list[Event]:
    """Impressions each followed by a play, a like now and then, for many viewers in turn."""
    rng = random.Random(seed)
    events, ts = [], 1_000_000
    for k in range(n):
        user, item = f"u{rng.randrange(n_users)}", f"v{rng.randrange(30)}"
        ts += 1_000
        events.append(Event(f"e{k}i", user, item, ts, "impression", region="US"))
        events.append(Event(f"e{k}p", user, item, ts + 500, "play",
                            watch_ms=rng.randrange(500, 20_000)))
        if rng.random() < 0.2:
            events.append(Event(f"e{k}l", user, item, ts + 600, "like"))
    return events


def _rows(rows):
    return [(r.example.user_id, r.example.item_id, r.example.ts, r.example.revision, r.dense,
             tuple((t.item_id, t.event_type, t.watch_ratio, t.like) for t in r.history))
            for r in rows]


def test_evicted_viewers_come_back_rebuilt_and_every_row_is_as_without_a_bound(tmp_path):
    store = open_store(tmp_path / "data")
    catalog = _catalog()
    store.upsert_items([catalog.get(i) for i in catalog.ids()])
    store.append_events(_stream())
    logged = list(store.iter_events())
    floors = {"u3": logged[300][0]}  # u3 refreshed their feed part way through

    def run(bound: int | None):
        live = trainer_live_state(catalog) if bound else new_live_state(catalog)
        rows = RowStream(live, history_len=30, window_ms=H, settle_ms=0)
        budget = ViewerBudget(live, store, bound) if bound else None
        out, sizes = [], []
        for seq, event in logged:
            if budget is not None:
                budget.before(seq, event, floors)
            out += rows.add(event, interests=seq > floors.get(event.user_id, 0))
            sizes.append(len(live.user_ids()))
        return out + rows.flush(None), live, budget, sizes

    reference, ref_live, _, _ = run(None)
    bounded, live, budget, sizes = run(3)
    assert max(sizes) <= 3 and len(budget) <= 3  # the bound held at every event
    assert budget.evicted > 100 and budget.rebuilt > 100  # and was exercised
    # Every training row, features and history included, is what it is with no bound.
    assert len(reference) > 500 and _rows(bounded) == _rows(reference)
    for user in live.user_ids():
        mine, theirs = live.user(user), ref_live.user(user)
        assert list(mine.tokens) == list(theirs.tokens)
        assert mine.hashtag_affinity == theirs.hashtag_affinity
        assert mine.following == theirs.following and mine.topic_views == theirs.topic_views
        # Nor what only serving reads: the history of events and the seen set.
        assert not mine.history and not mine.seen and theirs.history and theirs.seen
    # The trainer's state keeps no co-engagement graph (serving's source; features never read it).
    assert live._co == {} and ref_live._co
    store.close()


def test_an_erased_viewer_is_not_rebuilt(tmp_path):
    store = open_store(tmp_path / "data")
    catalog = _catalog()
    store.upsert_items([catalog.get(i) for i in catalog.ids()])
    events = [Event(f"a{k}", "gone", f"v{k}", 1_000 + k, "play", watch_ms=9_000)
              for k in range(5)]
    events += [Event(f"b{k}", f"w{k}", "v1", 2_000 + k, "play", watch_ms=9_000)
               for k in range(3)]
    store.append_events(events)
    live = trainer_live_state(catalog)
    budget = ViewerBudget(live, store, 2)
    for seq, event in store.iter_events():
        budget.before(seq, event, {})
        live.apply(event)
    assert live.user("gone") is None and budget.evicted >= 1
    store.erase_user("gone")
    budget.forget("gone")
    later = Event("c1", "gone", "v2", 9_000, "impression")
    budget.before(store.last_seq() + 1, later, {})
    assert live.user("gone") is None  # nothing of theirs left to rebuild from


def test_late_memory_keeps_the_newest_examples_and_a_dropped_one_is_harmless():
    catalog = _catalog()
    rows = RowStream(trainer_live_state(catalog), history_len=5, window_ms=H, settle_ms=0)
    rows.joiner.dedupe_memory = 100
    ts, closed = 0, []
    for k in range(1_500):  # each settles at once and is kept for its window
        ts += 10
        closed += rows.add(Event(f"i{k}", f"u{k}", "v1", ts, "impression"))
        closed += rows.add(Event(f"p{k}", f"u{k}", "v1", ts + 1, "play", watch_ms=3_000))
    closed += rows.flush(ts + 100)
    assert len(closed) == 1_500
    before = join_memory(rows)
    assert before["late_examples"] == 1_500 and before["closing_heap"] >= 1_500
    assert before["event_ids"] <= 101  # the dedupe memory follows its budget
    dropped = trim_join_memory(rows, 200)
    after = join_memory(rows)
    assert dropped == 1_300 and after["late_examples"] == 200 and after["late_inputs"] == 200
    assert after["closing_heap"] == 0  # every entry left was stale: compacted away
    # A late like for a kept example still corrects it, with the inputs it was shown with.
    (fixed,) = rows.add(Event("late-new", "u1499", "v1", ts + 200, "like"))
    assert fixed.example.like == 1 and fixed.example.revision == 1 and fixed.dense is not None
    # One for an example let go is counted as unattributed: no row, no error.
    unattributed = rows.joiner.stats.unattributed
    assert rows.add(Event("late-old", "u0", "v1", ts + 300, "like")) == []
    assert rows.joiner.stats.unattributed == unattributed + 1


def test_a_budget_needs_room_for_one_viewer(tmp_path):
    with pytest.raises(ValueError):
        ViewerBudget(new_live_state(new_catalog()), None, 0)


def test_release_free_memory_never_raises():
    assert release_free_memory() in (True, False)
