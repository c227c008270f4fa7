"""The in-memory live state's bound on viewers with events (``max_viewers``): the least
recently active leave memory; forgetting and rebuilding keep the count right. Bringing one
back from the log is the engine's (tests/service/test_memory_budget.py)."""

from __future__ import annotations

import pytest

from reelrank.store import new_catalog, new_live_state
from tests.store.test_live_contract import ev, item


def _state(**options):
    catalog = new_catalog()
    catalog.upsert([item(i) for i in range(6)])
    return new_live_state(catalog, **options)


def _with_events(live) -> set[str]:
    return {u for u in live.user_ids() if live.user(u).counts}


def test_at_most_max_viewers_with_events_the_least_recently_active_out_first():
    live = _state(max_viewers=3)
    for k, user in enumerate(["a", "b", "c"]):
        live.apply(ev(k, user, "v1", "like"))
    live.user_snapshot("a")  # a request for a: active again
    live.apply(ev(10, "d", "v2", "like"))
    assert _with_events(live) == {"a", "c", "d"} and live.viewers_evicted == 1
    live.apply(ev(11, "c", "v3", "like"))
    live.apply(ev(12, "e", "v3", "like"))
    assert _with_events(live) == {"c", "d", "e"} and live.viewers_evicted == 2
    # Feed-only viewers have their own bound and do not push viewers with events out.
    for k in range(5):
        live.record_served(f"f{k}", ["v1"])
    assert _with_events(live) == {"c", "d", "e"} and live.viewers_evicted == 2
    # The item counters keep every event, evicted viewers' too.
    assert live.item_stats("v1").likes == 3


def test_unbounded_by_default_and_a_bound_must_hold_one():
    live = _state()
    for k in range(50):
        live.apply(ev(k, f"u{k}", "v1", "like"))
    assert len(_with_events(live)) == 50 and live.viewers_evicted == 0
    with pytest.raises(ValueError):
        _state(max_viewers=0)


def test_erasure_forget_and_put_keep_the_bound_right():
    live = _state(max_viewers=2)
    live.apply(ev(1, "a", "v1", "like"))
    live.apply(ev(2, "b", "v1", "like"))
    state_a = live.user_snapshot("a")
    live.apply(ev(3, "c", "v1", "like"))  # a goes
    live.forget_user("a")  # erasing a viewer not held is fine
    live.forget_user("b")  # erasing a held one frees its place...
    live.apply(ev(4, "d", "v1", "like"))
    assert _with_events(live) == {"c", "d"} and live.viewers_evicted == 1  # ... no eviction
    live.put_user(state_a)  # brought back from the log: most recently active, c goes
    assert _with_events(live) == {"a", "d"} and live.viewers_evicted == 2
    # A rebuild from the log holds the most recently active by the log, and counts the rest.
    fresh = live.empty_like()
    assert fresh.max_viewers == 2
    for k, user in enumerate(["a", "c", "d"]):
        fresh.apply(ev(20 + k, user, "v2", "like"))
    live.replace_with(fresh)
    assert _with_events(live) == {"c", "d"} and live.viewers_evicted == 3
    live.apply(ev(30, "e", "v2", "like"))
    assert _with_events(live) == {"d", "e"}
