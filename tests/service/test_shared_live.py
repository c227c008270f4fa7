"""Two API apps on one PostgreSQL store and one Redis live state (``prepare(live_url=...)``),
in one test process, standing for two API processes: start-up rebuilds an empty shared state
once and never replays the log into a built one; an event taken by one is in the next feed of
the other; controls act whichever serves; an erasure on one leaves nothing of the viewer in
the other's memory, in Redis or in the database."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from reelrank.service.server import prepare, shutdown
from reelrank.store import open_store
from reelrank.types import Event
from tests.pg import throwaway_database
from tests.polling import wait_for
from tests.rd import keys_under, throwaway_prefix
from tests.service.test_api import T0, TOPICS, ev, make_item

redis = pytest.importorskip("redis")


@pytest.fixture
def backends():
    with throwaway_database() as url, throwaway_prefix() as (redis_url, prefix):
        store = open_store(url)
        try:
            store.upsert_items([make_item(i) for i in range(40)])
            # A log from before any API process started (an import).
            store.append_events([Event(f"old{i}", "old", f"v{i}", T0 + i, "play",
                                       watch_ms=15_000) for i in range(5)])
        finally:
            store.close()
        yield url, f"{redis_url}?prefix={prefix}", redis_url, prefix


def app_on(tmp_path, name: str, url: str, live: str):
    app, _ = prepare(tmp_path / name, insecure_no_auth=True, trainer="off", store_url=url,
                     live_url=live)
    return app


@pytest.fixture
def two(backends, tmp_path):
    url, live, redis_url, prefix = backends
    a = app_on(tmp_path, "a", url, live)
    b = app_on(tmp_path, "b", url, live)
    with TestClient(a) as ca, TestClient(b) as cb:
        yield a, b, ca, cb, (url, redis_url, prefix)
    for app in (a, b):
        shutdown(app)


def feed(client, user: str, n: int = 40) -> list[str]:
    r = client.get("/v1/feed", params={"user_id": user, "n": n})
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"]]


def test_start_up_rebuilds_an_empty_shared_state_once_and_never_replays_it(two):
    a, b, _, _, _ = two
    # A found Redis empty and rebuilt it from the log; B found it built and replayed nothing
    # (a replay would have doubled the counters).
    for app in (a, b):
        live = app.state.engine.live
        assert live.item_stats("v0").views == 1
        assert [h.item_id for h in live.user("old").history] == [f"v{i}" for i in range(5)]
        assert live.viewer_count() == 1


def test_an_event_taken_by_one_process_is_in_the_next_feed_of_the_other(two):
    _, b, ca, cb, _ = two
    first = feed(cb, "control")  # what B serves a viewer it knows nothing of
    assert len(first) >= 6
    watched = first[:3]
    r = ca.post("/v1/events", json={"events": [
        ev(f"w{k}", "u2", item, "play", ts=T0 + 100 + k, watch_ms=15_000)
        for k, item in enumerate(watched)] + [
        ev("ni", "u2", first[3], "not_interested", ts=T0 + 200)]})
    assert r.status_code == 200, r.text
    # No waiting: the very next page from B is built on the state A wrote.
    page = feed(cb, "u2")
    assert page and not set(first[:4]) & set(page)
    assert b.state.engine.live.item_stats(watched[0]).views >= 1


def test_controls_set_on_one_process_act_on_the_others_next_page(two):
    _, _, ca, cb, _ = two
    word = TOPICS[0]
    muted = {f"v{i}" for i in range(40) if i % 4 == 0}
    assert set(feed(cb, "m")) & muted
    r = ca.put("/v1/users/m2/settings", json={"muted_keywords": [word]})
    assert r.status_code == 200, r.text
    page = feed(cb, "m2")
    assert page and not set(page) & muted
    r = ca.put("/v1/users/m3/settings", json={"personalization": False})
    assert r.status_code == 200, r.text
    r = cb.get("/v1/feed", params={"user_id": "m3", "n": 10})
    assert r.status_code == 200 and r.json()["mode"] == "non_personalized", r.text


def test_a_feed_plan_of_one_process_ends_with_an_event_the_other_took(two):
    """Plans are each process's own; the viewer's state in Redis says when one is stale."""
    a, _, ca, cb, _ = two
    who = "planned-viewer"
    plans = a.state.engine.pipeline.plans
    first = feed(ca, who, n=5)
    assert who in plans.user_ids() and plans.hits == 0
    second = feed(ca, who, n=5)
    assert plans.hits == 1, plans.usage()["misses_by_reason"]
    assert not set(first) & set(second)
    # A video not served yet (one the plan holds, if any), marked not interested through the
    # other process.
    held = [s.item_id for s in plans._plans[who].scored]
    upcoming = next(i for i in [*held, *sorted(a.state.engine.catalog.ids())]
                    if i not in first and i not in second)
    r = cb.post("/v1/events", json={"events": [
        ev("planned-ni", who, upcoming, "not_interested", ts=T0 + 200)]})
    assert r.status_code == 200, r.text
    third = feed(ca, who, n=5)
    assert plans.hits == 1 and plans.misses["viewer_changed"] == 1
    assert upcoming not in third and not set(third) & (set(first) | set(second))
    # What the other process served is not served again from this one's plan.
    fourth = feed(cb, who, n=5)
    fifth = feed(ca, who, n=5)
    assert plans.hits == 2 and not set(fifth) & set(fourth)


def test_an_erasure_on_one_process_leaves_nothing_of_the_viewer_on_the_other(two):
    a, b, ca, cb, (url, redis_url, prefix) = two
    who = "viewer-to-erase-q7z"
    r = ca.post("/v1/events", json={"events": [
        ev(f"e{k}", who, f"v{k}", "play", ts=T0 + 300 + k, watch_ms=15_000) for k in range(4)]})
    assert r.status_code == 200, r.text
    assert feed(cb, who)  # B serves them: B now holds their traces and vector
    assert b.state.engine.traces.records(who)
    assert who in b.state.engine.effects.held_users(lambda u: u == who)

    r = ca.delete(f"/v1/users/{who}")
    assert r.status_code == 204, r.text
    # B hears of it through the stream (a digest, not the id) and drops what it holds.
    assert wait_for(lambda: not b.state.engine.effects.held_users(lambda u: u == who))
    assert b.state.engine.traces.records(who) == []
    assert who not in b.state.engine.pipeline.plans.user_ids()  # its feed plan too
    assert b.state.engine.live.user(who) is None
    r = cb.get("/v1/explain", params={"user_id": who, "item_id": "v0"})
    assert who not in str(r.json().get("trace") or "")
    # Redis: no key, member or stream message holds the id (after the rebuild's swap too).
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: a.state.runtime._rebuild_thread is None
                 or not a.state.runtime._rebuild_thread.is_alive())
        assert not [k for k in keys_under(client, prefix) if who.encode() in k]
        for key in keys_under(client, prefix):
            kind = client.type(key)
            if kind == b"set":
                assert who.encode() not in client.smembers(key), key
            elif kind == b"zset":
                assert who.encode() not in client.zrange(key, 0, -1), key
            elif kind == b"stream":
                assert not [m for _, m in client.xrange(key) if who.encode() in m[b"m"]]
            elif kind == b"hash":
                assert not [v for v in client.hvals(key) if who.encode() in v], key
    finally:
        client.close()
    store = open_store(url)
    try:
        assert store.count_events(who) == 0
    finally:
        store.close()


def test_an_event_taken_while_another_process_swaps_a_rebuild_in_is_not_lost(two):
    """A's rebuild (after an erasure) catches up with the log and swaps its keys in; an event
    B takes meanwhile waits for the swap (the write gate) instead of reaching the old keys,
    which the swap would drop."""
    a, b, _, cb, _ = two
    ea, eb = a.state.engine, b.state.engine
    at_swap, go_on = threading.Event(), threading.Event()
    swap = ea.live.replace_with

    def held_swap(fresh) -> None:  # the moment between A's catch-up and its swap
        at_swap.set()
        go_on.wait(30)
        swap(fresh)

    ea.live.replace_with = held_swap
    rebuild = threading.Thread(target=ea.rebuild_live)
    rebuild.start()
    answered: list[int] = []
    try:
        assert at_swap.wait(30)
        ingest = threading.Thread(target=lambda: answered.append(cb.post("/v1/events", json={
            "events": [ev("during", "racer", "v7", "play", ts=T0 + 999, watch_ms=15_000)]
        }).status_code))
        ingest.start()
        time.sleep(0.5)
        assert answered == []  # B's write waits for the swap
    finally:
        go_on.set()
        rebuild.join(30)
    ingest.join(30)
    assert answered == [200]
    assert [h.item_id for h in eb.live.user("racer").history] == ["v7"]
    assert ea.live.user("racer") is not None


def test_an_erased_viewer_another_process_only_counted_in_insights_leaves_them(two):
    """B never served the viewer, but its creator insights (a cached table of audiences over
    every viewer in Redis) name them: A's erasure reaches that table too."""
    a, b, ca, _, _ = two
    who = "only-on-a-x9"
    r = ca.post("/v1/events", json={"events": [
        ev(f"o{k}", who, f"v{k}", "play", ts=T0 + 400 + k, watch_ms=15_000) for k in range(3)]})
    assert r.status_code == 200, r.text
    b.state.insights._current_table()  # as a creator's insights page builds it
    assert who in b.state.insights.viewers()
    assert ca.delete(f"/v1/users/{who}").status_code == 204
    assert wait_for(lambda: who not in b.state.insights.viewers())


def test_an_erasure_reaches_a_viewer_only_the_exposure_ledger_still_counts(two):
    """B served the viewer, and its traces of them were evicted since (their budget), but its
    exposure ledger (``/v1/stats``'s topic diversity) still counts their topics by id."""
    a, b, ca, cb, _ = two
    who = "ledger-only-v4"
    assert feed(cb, who)
    engine = b.state.engine
    engine.traces.drop(who)
    engine.pipeline.viewer_vectors.forget(who)
    assert who in b.state.stats.ledger.viewers()
    assert ca.delete(f"/v1/users/{who}").status_code in (204, 404)
    assert wait_for(lambda: who not in b.state.stats.ledger.viewers())


def test_refresh_my_feed_on_one_process_acts_on_the_others_next_page(two):
    """"Refresh my feed" posted to A: the interests in Redis are cleared for B's next page,
    and B drops its traces of the viewer (they explain pages built on the old interests)."""
    _, b, ca, cb, _ = two
    who = "refresher-r2"
    r = ca.post("/v1/events", json={"events": [
        ev(f"r{k}", who, f"v{4 * k}", "play", ts=T0 + 500 + k, watch_ms=15_000)
        for k in range(5)]})  # all "cats"
    assert r.status_code == 200, r.text
    assert b.state.engine.live.user(who).hashtag_affinity
    assert feed(cb, who) and b.state.engine.traces.records(who)
    assert ca.post(f"/v1/users/{who}/reset").status_code == 200
    state = b.state.engine.live.user(who)  # the next page from B reads this
    assert not state.hashtag_affinity and not state.history
    assert {f"v{4 * k}" for k in range(5)} <= set(state.seen)  # what was seen stays seen
    assert wait_for(lambda: not b.state.engine.traces.records(who))
