"""Explicit memory budgets: feed traces kept packed within a byte budget, and what holds memory
reported in ``GET /v1/stats``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.pipeline.context import FeedRequest
from reelrank.service import create_app
from tests.service.test_api import T0, make_item


def _engine(store, **kw) -> Engine:
    e = Engine(store, **kw).load()
    e.ingest_items([make_item(i) for i in range(40)])
    return e


def test_traces_stay_within_their_byte_budget(store):
    engine = _engine(store)
    engine.feed(FeedRequest("probe", n=5))
    one = engine.trace_usage()["bytes"]
    assert 0 < one < 20_000
    engine.traces.budget_bytes = one * 10  # room for about ten pages
    for k in range(100):  # feeds for 100 ids never seen before: what an attacker can ask
        engine.feed(FeedRequest(f"new{k}", n=5))
        usage = engine.trace_usage()
        assert usage["bytes"] <= engine.traces.budget_bytes
    assert usage["viewers"] < 15 and usage["viewers_evicted"] > 80
    assert usage["traces"] == usage["viewers"]
    # The latest viewers' pages still explain themselves from their traces...
    result = engine.feed(FeedRequest("last", n=5))
    explained = engine.explain("last", result.items[0].item_id)
    assert explained["shown"] and explained["request_id"] == result.request_id
    # ... and an evicted viewer's explain falls back to scoring the item afresh.
    assert engine.explain("new0", result.items[0].item_id)["request_id"] is None


def test_per_viewer_and_erasure_accounting(store):
    engine = _engine(store, traces_per_user=3)
    for _ in range(7):
        engine.feed(FeedRequest("u1", n=3))
    engine.feed(FeedRequest("u2", n=3))
    usage = engine.trace_usage()
    assert usage["viewers"] == 2 and usage["traces"] == 4
    total = usage["bytes"]
    engine.erase_user("u1")
    usage = engine.trace_usage()
    assert usage["viewers"] == 1 and usage["traces"] == 1 and 0 < usage["bytes"] < total / 3


def test_packed_traces_explain_what_the_live_trace_says(store):
    engine = _engine(store)
    result = engine.feed(FeedRequest("u1", n=5))
    live = result.trace
    record = live.record()
    assert record.nbytes < 20_000
    for item_id in live.proposals:
        explained = record.explain(item_id)
        assert explained["sources"] == [{"source": c.source, "score": c.score}
                                        for c in live.proposals[item_id]]
        assert explained["shown"] == (item_id in live.served)
        scored = live.scored.get(item_id)
        assert explained["score"] == (scored.score if scored else None)
    assert record.items.keys() == {*result.trace.proposals, *result.trace.removed,
                                   *result.trace.scored, *result.trace.rerank_notes}


def test_stats_report_memory_and_the_request_guard(store):
    engine = _engine(store, trace_budget_bytes=1 << 20)
    with TestClient(create_app(engine, None)) as client:
        for k in range(3):
            assert client.get("/v1/feed", params={"user_id": f"u{k}"}).status_code == 200
        client.get("/v1/feed", params={"user_id": "u\t"})
        view = client.get("/v1/stats").json()
    memory = view["memory"]
    assert memory["traces"]["viewers"] == 3 and memory["traces"]["budget_bytes"] == 1 << 20
    assert 0 < memory["traces"]["bytes"] <= 1 << 20
    assert memory["live_state"]["viewers"] == 3
    assert memory["rss_bytes"] is None or memory["rss_bytes"] > 10 << 20
    assert memory["trainer"] is None  # this engine runs none
    assert view["requests"]["limits"]["max_body_bytes"] == 8 << 20
    assert view["requests"]["in_flight"] == 1  # the stats request itself


@pytest.mark.parametrize("budget", [0, -1])
def test_a_budget_must_leave_room_for_one_page(store, budget):
    engine = _engine(store, trace_budget_bytes=budget)
    engine.feed(FeedRequest("u1", n=3))
    # The page just served is kept even over a zero budget: explain works for it.
    assert engine.trace_usage()["traces"] == 1


def test_viewers_known_only_from_feeds_are_bounded_and_viewers_with_events_stay(store):
    from reelrank.types import Event

    engine = _engine(store)
    live = engine.live
    live.max_feed_only_viewers = 5
    engine.ingest_events([Event(f"f{k}", "fan", f"v{k}", T0 + k, "play", watch_ms=9_000)
                          for k in range(3)])
    engine.feed(FeedRequest("fan", n=3))
    engine.feed(FeedRequest("late-fan", n=3))  # served first, then sends an event
    engine.ingest_events([Event("g1", "late-fan", "v5", T0 + 10, "play", watch_ms=9_000)])
    for k in range(50):  # feeds for ids never seen before, as anyone with a token can ask
        engine.feed(FeedRequest(f"new{k}", n=3))
        assert live.feed_only_viewers() <= 5
    assert live.feed_only_evicted == 45
    assert set(live.user_ids()) == {"fan", "late-fan", *(f"new{k}" for k in range(45, 50))}
    assert len(live.user("fan").tokens) == 3 and live.user("late-fan").tokens
    # A rebuild from the log (every erasure starts one) keeps what feeds sent the viewers it
    # cannot find in the log, so their next pages do not repeat.
    served = list(live.user("new49").served)
    engine.rebuild_live()
    assert list(live.user("new49").served) == served and live.feed_only_viewers() == 5
    page = engine.feed(FeedRequest("new49", n=3))
    assert not {i.item_id for i in page.items} & set(served)
    # An evicted one just starts again, as a viewer never seen: nothing durable was held.
    assert engine.feed(FeedRequest("new0", n=3)).items
    with TestClient(create_app(engine, None)) as client:
        state = client.get("/v1/stats").json()["memory"]["live_state"]
    assert state["max_viewers_feed_only"] == 5 and state["viewers_feed_only"] == 5
    assert state["viewers_with_events"] == 2 and state["max_viewers_with_events"] is None
    assert state["viewers"] == 7 and state["viewers_feed_only_evicted"] == 46


def test_prepare_passes_the_memory_budgets_on(tmp_path):
    from reelrank.service.server import prepare

    app, _ = prepare(tmp_path / "d", trainer="thread", max_feed_only_viewers=7, max_viewers=5,
                     trainer_budgets={"max_viewers": 9, "late_examples": 11})
    engine, runtime = app.state.engine, app.state.runtime
    try:
        assert engine.live.max_feed_only_viewers == 7 and engine.live.max_viewers == 5
        assert (runtime.trainer.cfg.max_viewers, runtime.trainer.cfg.late_memory) == (9, 11)
    finally:
        runtime.stop()
        engine.store.close()
    app, _ = prepare(tmp_path / "e", trainer="process", trainer_budgets={"max_viewers": 5})
    engine, runtime = app.state.engine, app.state.runtime
    try:
        assert runtime.trainer.max_viewers == 5 and runtime.trainer.late_examples is None
    finally:
        runtime.stop()
        engine.store.close()


def _viewer(state) -> dict:
    """A viewer's state without what feeds sent (memory only, never rebuilt)."""
    fields = {k: v for k, v in vars(state).items() if k != "served"}
    return {k: list(v) if hasattr(v, "maxlen") else v for k, v in fields.items()}


def test_viewers_with_events_are_bounded_and_brought_back_from_the_log(store, tmp_path):
    from reelrank.store import new_live_state, open_store
    from reelrank.types import Event

    def events(user: str, start: int, n: int) -> list[Event]:
        return [Event(f"{user}-{start + k}", user, f"v{(start + k) % 40}", T0 + start + k,
                      "play" if k % 3 else "impression", watch_ms=4_000 * k) for k in range(n)]

    bounded = _engine(store, live=new_live_state(max_viewers=2))
    unbounded = _engine(open_store(tmp_path / "unbounded"))
    for engine in (bounded, unbounded):
        engine.ingest_events(events("a", 0, 12))
        engine.reset_interests("a")  # events before this add no interests, also when replayed
        engine.ingest_events(events("a", 12, 6) + events("b", 0, 5) + events("c", 0, 5))
    live = bounded.live
    assert live.user("a") is None and live.viewers_evicted == 1  # b and c came after a
    # Their next request brings them back from the log, as an unbounded state holds them.
    ctx = bounded.context(FeedRequest("a", n=5))
    assert _viewer(ctx.user) == _viewer(unbounded.live.user("a"))
    assert live.user("b") is None  # one of the other two made room
    # ... and so does their next event, applied after the older ones (one batch, two viewers
    # not held, the first pushing the second out of memory while the batch is applied).
    batch = events("b", 5, 4) + events("c", 5, 4) + events("b", 9, 2)
    for engine in (bounded, unbounded):
        engine.ingest_events(batch)
    for user in ("b", "c"):
        held = live.user(user) or bounded.context(FeedRequest(user, n=5)).user
        assert _viewer(held) == _viewer(unbounded.live.user(user))
    # A viewer never seen stays new, and pages are served while viewers come and go.
    assert bounded.context(FeedRequest("nobody", n=5)).user is None
    assert bounded.feed(FeedRequest("a", n=5)).items
    unbounded.store.close()


def test_an_evicted_viewer_can_be_erased(store):
    from reelrank.privacy import export_user
    from reelrank.store import new_live_state
    from reelrank.types import Event

    engine = _engine(store, live=new_live_state(max_viewers=1))
    engine.ingest_events([Event("e1", "gone", "v1", T0, "play", watch_ms=9_000)])
    engine.ingest_events([Event("e2", "other", "v2", T0 + 1, "play", watch_ms=9_000)])
    assert engine.live.user("gone") is None and engine.live.viewers_evicted == 1
    assert engine.erase_user("gone") == 1
    # Nothing of theirs is left to bring back: they come back as a viewer never seen.
    assert engine.context(FeedRequest("gone", n=5)).user is None
    assert engine.live.item_stats("v1").views == 0 and engine.live.user("other") is not None
    # What reads a viewer outside a request (their data export) brings them back too.
    engine.ingest_events([Event("e3", "third", "v3", T0 + 2, "play", watch_ms=9_000)])
    assert engine.live.user("other") is None
    export = export_user(engine, "other")
    assert [e["event_id"] for e in export["events"]] == ["e2"]
    assert [i["item_id"] for i in export["inferred_interests"]["recent_items"]] == ["v2"]
    with TestClient(create_app(engine, None)) as client:
        state = client.get("/v1/stats").json()["memory"]["live_state"]
    assert state["max_viewers_with_events"] == 1 and state["viewers_with_events_evicted"] >= 1
