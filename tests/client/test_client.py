"""``reelrank.client`` against a real server on a loopback port: every endpoint, batching,
retries that cannot double-count, and the error shape as exceptions."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from reelrank.client import (
    AsyncReelRankClient, AuthenticationError, ConflictError, Event, EventContext, InvalidInputError, Item,
    NotFoundError, PermissionDeniedError, ReelRankClient, RetryPolicy, ServerError,
)
from reelrank.engine import Engine
from reelrank.service import create_app
from tests.client.conftest import T0, serving

FAST = RetryPolicy(retries=3, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def admin(live_server):
    with ReelRankClient(live_server.base_url, live_server.keys["admin"], retry=FAST) as c:
        yield c


def plays(user: str, n: int, start: int = 0) -> list[Event]:
    return [Event(user_id=user, item_id=f"v{(start + i) % 30}", type="play", ts=T0 + i * 1000,
                  watch_ms=14_000, context=EventContext(device="phone", region="US"))
            for i in range(n)]


def test_events_are_split_into_batches_and_get_ids_once(live_server, admin):
    events = plays("u1", 7)
    result = admin.send_events(events, batch_size=3)
    assert (result.accepted, result.duplicates, result.batches) == (7, 0, 3)
    assert live_server.faults.seen["/v1/events"] == 3
    assert len(set(result.event_ids)) == 7
    assert live_server.engine.store.count_events("u1") == 7
    # The same Event objects again: each got its id in the client's copy, not in the caller's
    # frozen object, so a fresh send is a fresh set of events...
    again = admin.send_events(events, batch_size=3)
    assert again.accepted == 7
    # ...while re-sending the ids the client assigned is a no-op.
    stored = [{**e.to_json(), "event_id": i} for e, i in zip(events, result.event_ids)]
    replay = admin.send_events(stored)
    assert (replay.accepted, replay.duplicates, replay.batches) == (0, 7, 1)
    assert live_server.engine.store.count_events("u1") == 14


def test_a_lost_answer_is_retried_with_the_same_ids_and_counted_once(live_server, admin):
    # The server stores the batch, then its answer is replaced by a 503 twice: the client
    # cannot know the batch was stored and sends it again, with the same event ids.
    live_server.faults.fail_after["/v1/events"] = 2
    result = admin.send_events(plays("u2", 5))
    assert live_server.faults.seen["/v1/events"] == 3
    assert result.accepted == 0 and result.duplicates == 5
    assert live_server.engine.store.count_events("u2") == 5


def test_retries_give_up_with_the_servers_error(live_server):
    with ReelRankClient(live_server.base_url, live_server.keys["admin"],
                        retry=RetryPolicy(retries=1, backoff_s=0.01)) as c:
        live_server.faults.fail_after["/v1/events"] = 5
        with pytest.raises(ServerError) as err:
            c.send_events(plays("u3", 2))
    assert err.value.status == 503 and err.value.code == "service_unavailable"
    assert live_server.faults.seen["/v1/events"] == 2
    assert live_server.engine.store.count_events("u3") == 2  # stored once, not twice


class _RefuseFirst(httpx.BaseTransport):
    """A transport whose first ``n`` connections are refused, then the real one."""

    def __init__(self, n: int):
        self.n, self.tries = n, 0
        self.real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.tries += 1
        if self.tries <= self.n:
            raise httpx.ConnectError("connection refused", request=request)
        return self.real.handle_request(request)


def test_connection_errors_are_retried(live_server):
    transport = _RefuseFirst(2)
    with ReelRankClient(live_server.base_url, live_server.keys["admin"], retry=FAST,
                        transport=transport) as c:
        # Even a call that is never resent once it may have arrived (minting a token) is
        # resent when the connection was refused: the server never saw it.
        token = c.mint_user_token("u4")
    assert transport.tries == 3 and token
    refusing = _RefuseFirst(10)
    with ReelRankClient(live_server.base_url, retry=FAST, transport=refusing) as c:
        with pytest.raises(httpx.ConnectError):
            c.health()
    assert refusing.tries == 4  # the first try and 3 retries


def test_a_call_that_would_act_twice_is_not_resent_after_a_503(live_server, admin):
    live_server.faults.fail_after["/v1/users/u5/not_interested"] = 1
    with pytest.raises(ServerError):
        admin.not_interested("u5", "v1")
    assert live_server.faults.seen["/v1/users/u5/not_interested"] == 1


def test_an_invalid_element_names_its_field_and_index_in_the_whole_list(live_server, admin):
    events = plays("u6", 5)
    bad = {**events[4].to_json(), "type": "teleport"}
    with pytest.raises(InvalidInputError) as err:
        admin.send_events([*events[:4], bad], batch_size=2)
    e = err.value
    assert e.status == 422 and e.code == "invalid_input"
    assert e.fields == ["events[0].type"]  # the field, as the server names it in its batch
    assert e.indexes == [4]  # the element, counted in the caller's list
    assert e.sent_before == 4
    assert "events[0].type" in str(e)
    # The two batches before the refused one are stored; nothing of the refused one.
    assert live_server.engine.store.count_events("u6") == 4


def test_batch_size_must_fit_the_api(admin):
    with pytest.raises(ValueError):
        admin.send_events(plays("u7", 1), batch_size=10_001)


def test_auth_errors(live_server):
    with ReelRankClient(live_server.base_url, retry=FAST) as anonymous:
        with pytest.raises(AuthenticationError) as err:
            anonymous.feed("u1")
        assert err.value.status == 401
        assert anonymous.health().status == "ok"  # open to everyone
    with ReelRankClient(live_server.base_url, live_server.keys["ingest"], retry=FAST) as ingest:
        with pytest.raises(PermissionDeniedError):
            ingest.stats()


def test_items_catalog_and_feed(live_server, admin):
    items = [Item(item_id=f"n{i}", creator_id="cx", duration_ms=9_000, created_at=T0,
                  caption="new #cats", hashtags=["cats"]) for i in range(5)]
    assert admin.upsert_items(items, batch_size=2).upserted == 5
    lookup = admin.get_items(["n1", "nope"])
    assert [i.item_id for i in lookup.items] == ["n1"] and lookup.missing == ["nope"]
    assert lookup.items[0].hashtags == ("cats",)
    admin.send_events(plays("u8", 6))
    page = admin.feed("u8", n=4, region="US", device="phone")
    assert len(page.items) == 4 and page.user_id == "u8" and page.request_id
    assert all(r.text for i in page.items for r in i.reasons)
    assert not set(page.item_ids) & {f"v{i}" for i in range(6)}  # seen videos do not return
    ranked = admin.rank("u8", ["v10", "v11", "v12"])
    assert sorted(i.item_id for i in ranked.items) == ["v10", "v11", "v12"]
    assert [i.score for i in ranked.items] == sorted((i.score for i in ranked.items),
                                                     reverse=True)
    story = admin.explain("u8", page.item_ids[0])
    assert story["item_id"] == page.item_ids[0]
    with pytest.raises(InvalidInputError) as err:
        admin.rank("u8", ["v1", "no-such-video"])
    assert err.value.fields


def test_viewer_controls_with_a_viewers_own_token(live_server, admin):
    admin.send_events(plays("u9", 4))
    token = admin.mint_user_token("u9")
    with ReelRankClient(live_server.base_url, token, retry=FAST) as me:
        assert me.get_settings("u9").personalization is True
        changed = me.update_settings("u9", personalization=False, muted_keywords=["cats"],
                                     daily_limit_minutes=30)
        assert (changed.personalization, changed.muted_keywords,
                changed.daily_limit_minutes) == (False, ["cats"], 30)
        # Only what is given changes; None removes the limit.
        assert me.update_settings("u9", daily_limit_minutes=None).muted_keywords == ["cats"]
        assert me.get_settings("u9").daily_limit_minutes is None
        hidden = me.not_interested("u9", "v2", scope="creator")
        assert hidden.hidden_creators == ["c2"]
        assert me.feed("u9", n=3).mode == "non_personalized"
        export = me.export_data("u9")
        assert len(export["events"]) == 5  # 4 plays and the not_interested
        assert any(e["action"] == "exported data" for e in me.access_log("u9"))
        me.reset("u9")
        with pytest.raises(PermissionDeniedError):
            me.get_settings("someone-else")
        me.erase("u9")
    assert live_server.engine.store.count_events("u9") == 0
    with pytest.raises(AuthenticationError):  # the erased viewer's token went with them
        ReelRankClient(live_server.base_url, token, retry=FAST).get_settings("u9")


def test_operations_endpoints(live_server, admin):
    admin.send_events(plays("u10", 20) + plays("u11", 20, start=7))
    assert admin.creator_insights("c1")["creator_id"] == "c1"
    with pytest.raises(NotFoundError):
        admin.creator_insights("nobody")
    stats = admin.stats()
    assert {"events_per_second", "feed_latency_ms", "online"} <= set(stats)
    assert admin.transparency()["signals"]
    assert "reelrank_http_requests" in admin.metrics()
    assert "serving" in admin.trainer_status()
    assert admin.demo_status() == {"demo": False, "auth": True}
    with pytest.raises(NotFoundError):
        admin.demo_directory()
    job_id = admin.train()
    job = admin.wait_for_job(job_id, poll_s=0.2, timeout_s=120)
    assert job.status == "done", job.error
    assert job.model_version and admin.health().model_version == job.model_version
    with pytest.raises(NotFoundError):
        admin.job("no-such-job")


def test_minting_a_token_with_auth_off_is_a_conflict(store):
    with serving(create_app(Engine(store).load(), None)) as base_url:
        with ReelRankClient(base_url, retry=FAST) as c:
            with pytest.raises(ConflictError) as err:
                c.mint_user_token("u1")
    assert err.value.status == 409 and err.value.code == "conflict"


def test_the_async_client_speaks_the_same_api(live_server):
    async def session() -> tuple:
        async with AsyncReelRankClient(live_server.base_url, live_server.keys["admin"],
                                       retry=FAST) as c:
            live_server.faults.fail_after["/v1/events"] = 1
            sent = await c.send_events(plays("a1", 5), batch_size=2)
            page = await c.feed("a1", n=3)
            with pytest.raises(InvalidInputError) as err:
                await c.send_events([{"user_id": "a1", "item_id": "v1", "type": "play",
                                      "watch_ms": -1}])
            settings = await c.update_settings("a1", muted_keywords=["football"])
            return sent, page, err.value, settings

    sent, page, err, settings = asyncio.run(session())
    # The first batch was stored, its answer lost and resent: its 2 events come back as
    # duplicates, never as 2 more.
    assert (sent.accepted, sent.duplicates, sent.batches) == (3, 2, 3)
    assert live_server.engine.store.count_events("a1") == 5
    assert len(page.items) == 3
    assert err.fields == ["events[0].watch_ms"] and err.indexes == [0]
    assert settings.muted_keywords == ["football"]


def test_backoff_doubles_with_jitter_and_follows_retry_after():
    import random

    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=4.0, rng=random.Random(1))
    waits = [policy.delay(k, None) for k in range(6)]
    for k, wait in enumerate(waits):
        base = min(0.5 * 2 ** k, 4.0)
        assert base / 2 <= wait <= base  # jitter never waits longer than the plain backoff
    assert waits[5] <= 4.0
    asked = httpx.Response(429, headers={"Retry-After": "2"})
    assert policy.delay(0, asked) == 2.0
    assert policy.delay(0, httpx.Response(503, headers={"Retry-After": "120"})) == 4.0  # capped
