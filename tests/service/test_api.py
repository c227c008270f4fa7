"""The HTTP contract (shared/API.md) through FastAPI's TestClient on a real engine and store."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.service import Authenticator, create_app, ensure_service_keys
from reelrank.types import Item

T0 = 1_700_000_000_000
N_ITEMS = 40
N_CREATORS = 8
TOPICS = ("cats", "cooking", "football", "music")


def make_item(i: int) -> Item:
    return Item(item_id=f"v{i}", creator_id=f"c{i % N_CREATORS}", duration_ms=15_000,
                created_at=T0 - i * 60_000, caption=f"video {i} about {TOPICS[i % 4]}",
                hashtags=(TOPICS[i % 4],), language="en", region="US")


def creator_of(item_id: str) -> str:
    return f"c{int(item_id[1:]) % N_CREATORS}"


def ev(event_id: str, user: str, item: str, type: str = "play", ts: int = T0, **kw) -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item, "ts": ts, "type": type, **kw}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def engine(store):
    e = Engine(store).load()
    e.ingest_items([make_item(i) for i in range(N_ITEMS)])
    return e


@pytest.fixture
def client(engine, keys):
    with TestClient(create_app(engine, Authenticator(engine.store))) as c:
        yield c


@pytest.fixture
def api(client, keys):
    """The client acting as the app's backend with the admin token (reaches everything)."""
    client.headers.update(bearer(keys["admin"]))
    return client


def feed_ids(api, user: str, n: int = 10, **params) -> list[str]:
    r = api.get("/v1/feed", params={"user_id": user, "n": n, **params})
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"]]


def assert_error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    return body["error"]


# -- ingestion ------------------------------------------------------------------------------------
def test_items_upsert_answers_count(api, store):
    r = api.post("/v1/items", json={"items": [
        {"item_id": "new1", "creator_id": "c9", "duration_ms": 9000, "created_at": T0,
         "hashtags": ["x"], "attributes": {"topic": "pets", "n": 3, "w": 0.5}, "region": "CN-BJ"},
        {"item_id": "v1", "creator_id": "c1", "duration_ms": 9000, "created_at": T0,
         "visible": False},
    ]})
    assert r.status_code == 200, r.text
    assert r.json() == {"upserted": 2}
    assert store.count_items() == N_ITEMS + 1
    assert store.get_items(["new1"])["new1"].attributes == {"topic": "pets", "n": 3, "w": 0.5}
    assert store.get_items(["v1"])["v1"].visible is False


def test_events_are_idempotent(api, store):
    batch = {"events": [ev(f"e{i}", "u1", f"v{i}", watch_ms=5000,
                           context={"device": "ios", "region": "US", "session_id": "s1"})
                        for i in range(3)]}
    first = api.post("/v1/events", json=batch)
    assert first.status_code == 200 and first.json() == {"accepted": 3, "duplicates": 0}
    again = api.post("/v1/events", json=batch)
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicates": 3}
    assert store.count_events() == 3
    stored = [e for _, e in store.iter_events()]
    assert stored[0].device == "ios" and stored[0].region == "US" and stored[0].watch_ms == 5000


def test_invalid_element_rejects_the_whole_batch(api, store):
    batch = {"events": [ev("e0", "u1", "v0"), ev("e1", "u1", "v1"),
                        ev("e2", "u1", "v2", type="teleport")]}
    err = assert_error(api.post("/v1/events", json=batch), 422, "invalid_input")
    assert any(d["field"] == "events[2].type" and d["index"] == 2 for d in err["details"])
    assert store.count_events() == 0


def test_unknown_item_rejects_the_whole_batch(api, store):
    batch = {"events": [ev("e0", "u1", "v0"), ev("e1", "u1", "nope")]}
    err = assert_error(api.post("/v1/events", json=batch), 422, "invalid_input")
    assert [(d["field"], d["index"]) for d in err["details"]] == [("events[1].item_id", 1)]
    assert store.count_events() == 0


@pytest.mark.parametrize("bad, field", [
    ({"watchms": 5}, "events[0].watchms"),                      # unknown field: named
    ({"watch_ms": -1}, "events[0].watch_ms"),
    ({"ts": "1700000000000"}, "events[0].ts"),                  # strict: a string is no int
    ({"user_id": ""}, "events[0].user_id"),
    ({"user_id": "u" * 129}, "events[0].user_id"),
    ({"context": {"region": "203.0.113.7"}}, "events[0].context.region"),   # an IP
    ({"context": {"region": "37.7749,-122.4194"}}, "events[0].context.region"),
    ({"context": {"ip": "203.0.113.7"}}, "events[0].context.ip"),
    ({"ts": int(time.time() * 1_000_000)}, "events[0].ts"),        # microseconds by mistake
])
def test_event_field_rules(api, store, bad, field):
    err = assert_error(api.post("/v1/events", json={"events": [{**ev("e0", "u1", "v0"), **bad}]}),
                       422, "invalid_input")
    assert [(d["field"], d["index"]) for d in err["details"]] == [(field, 0)]
    assert store.count_events() == 0


@pytest.mark.parametrize("bad, field", [
    ({"duration_ms": 0}, "items[0].duration_ms"),
    ({"attributes": {"flag": True}}, "items[0].attributes.flag"),
    ({"hashtags": "cats"}, "items[0].hashtags"),
    ({"item_id": 7}, "items[0].item_id"),
])
def test_item_field_rules(api, store, bad, field):
    item = {"item_id": "x", "creator_id": "c", "duration_ms": 1, "created_at": T0, **bad}
    err = assert_error(api.post("/v1/items", json={"items": [item]}), 422, "invalid_input")
    assert [d["field"] for d in err["details"]] == [field]
    assert store.count_items() == N_ITEMS


def test_batch_size_limits(api):
    err = assert_error(api.post("/v1/events", json={"events": []}), 422, "invalid_input")
    assert err["details"][0]["field"] == "events"
    big = {"events": [ev(f"e{i}", "u", "v0") for i in range(10_001)]}
    err = assert_error(api.post("/v1/events", json=big), 422, "invalid_input")
    assert err["details"][0]["field"] == "events"


@pytest.mark.parametrize("body", [b'{"events": [', b"not json", b'{"events": [}]}'])
def test_malformed_json_is_a_4xx_with_the_error_shape(api, body):
    r = api.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["code"] in ("invalid_input", "bad_request")


def test_a_body_not_sent_as_json_says_so(api):
    r = api.post("/v1/events", content=json.dumps({"events": [ev("e0", "u1", "v0")]}),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})  # curl -d
    err = assert_error(r, 422, "invalid_input")
    assert "application/json" in err["details"][0]["message"]


def test_body_over_the_cap_is_413(engine):
    with TestClient(create_app(engine, None, max_body_bytes=1000)) as c:
        r = c.post("/v1/events", json={"events": [ev(f"e{i}", "u", "v0") for i in range(50)]})
    assert_error(r, 413, "request_entity_too_large")


# -- auth -----------------------------------------------------------------------------------------
def test_missing_and_unknown_tokens_are_401(client):
    r = client.get("/v1/feed", params={"user_id": "u1"})
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.get("/v1/feed", params={"user_id": "u1"}, headers=bearer("made-up"))
    assert_error(r, 401, "unauthorized")
    # Malformed JSON from an anonymous caller is still a 401, not a parse error.
    r = client.post("/v1/events", content=b"{", headers={"Content-Type": "application/json"})
    assert_error(r, 401, "unauthorized")


def test_scopes(client, keys, store):
    ingest, serve = bearer(keys["ingest"]), bearer(keys["serve"])
    assert_error(client.get("/v1/feed", params={"user_id": "u1"}, headers=ingest), 403, "forbidden")
    r = client.post("/v1/events", json={"events": [ev("e0", "u1", "v0")]}, headers=serve)
    assert_error(r, 403, "forbidden")
    assert store.count_events() == 0
    assert client.post("/v1/events", json={"events": [ev("e0", "u1", "v0")]},
                       headers=ingest).status_code == 200
    assert client.get("/v1/feed", params={"user_id": "u1"}, headers=serve).status_code == 200
    assert client.post("/v1/rank", json={"user_id": "u1", "item_ids": ["v0"]},
                       headers=serve).status_code == 200
    # Settings belong to the viewer (and the operator), not to the serving backend.
    assert_error(client.get("/v1/users/u1/settings", headers=serve), 403, "forbidden")
    assert_error(client.post("/v1/admin/users/u1/token", headers=serve), 403, "forbidden")


def test_user_tokens_reach_only_their_user(client, keys, store):
    r = client.post("/v1/admin/users/alice/token", headers=bearer(keys["admin"]))
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == "alice"
    alice = bearer(r.json()["token"])
    assert store.find_key(r.json()["token"]) is None  # only the hash is kept

    assert client.get("/v1/users/alice/settings", headers=alice).status_code == 200
    r = client.put("/v1/users/alice/settings", json={"muted_keywords": ["cats"]}, headers=alice)
    assert r.status_code == 200 and r.json()["muted_keywords"] == ["cats"]
    assert client.get("/v1/feed", params={"user_id": "alice"}, headers=alice).status_code == 200
    assert client.get("/v1/explain", params={"user_id": "alice", "item_id": "v0"},
                      headers=alice).status_code == 200

    assert_error(client.get("/v1/users/bob/settings", headers=alice), 403, "forbidden")
    assert_error(client.put("/v1/users/bob/settings", json={"personalization": False},
                            headers=alice), 403, "forbidden")
    assert_error(client.get("/v1/feed", params={"user_id": "bob"}, headers=alice), 403, "forbidden")
    for twice in ("user_id=alice&user_id=bob", "user_id=bob&user_id=alice"):
        assert_error(client.get(f"/v1/feed?{twice}", headers=alice), 403, "forbidden")
    assert_error(client.post("/v1/rank", json={"user_id": "alice", "item_ids": ["v0"]},
                             headers=alice), 403, "forbidden")
    # Events: its own viewer's only (tests/service/test_user_ingest.py has the whole rule).
    assert_error(client.post("/v1/events", json={"events": [ev("e0", "bob", "v0")]},
                             headers=alice), 403, "forbidden")
    assert client.post("/v1/events", json={"events": [ev("e0", "alice", "v0")]},
                       headers=alice).status_code == 200


def test_service_keys_file_is_private_and_kept(store, tmp_path, keys):
    path = tmp_path / "keys" / "keys.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert set(keys) == {"ingest", "serve", "admin"}
    assert ensure_service_keys(store, tmp_path / "keys") == path
    assert json.loads(path.read_text()) == keys
    assert store.count_keys() == 3
    assert all(store.find_key(t) is None for t in keys.values())  # hashes only


def test_prepare_generates_keys_once(tmp_path):
    from reelrank.service.server import prepare

    app, path = prepare(tmp_path / "d", trainer="off")
    try:
        tokens = json.loads(path.read_text())
        with TestClient(app) as c:
            assert c.get("/v1/feed", params={"user_id": "u"}).status_code == 401
            r = c.get("/v1/feed", params={"user_id": "u"}, headers=bearer(tokens["serve"]))
            assert r.status_code == 200
    finally:
        app.state.engine.store.close()
    app, again = prepare(tmp_path / "d", trainer="off")
    app.state.engine.store.close()
    assert again == path and json.loads(path.read_text()) == tokens
    app, none = prepare(tmp_path / "e", insecure_no_auth=True, trainer="off")
    app.state.engine.store.close()
    assert none is None and app.state.auth is None


def test_no_auth_mode_needs_no_token(engine):
    with TestClient(create_app(engine, None)) as c:
        assert c.get("/v1/feed", params={"user_id": "u1"}).status_code == 200
        assert c.post("/v1/events", json={"events": [ev("e0", "u1", "v0")]}).status_code == 200
        assert_error(c.post("/v1/admin/users/u1/token"), 409, "conflict")


# -- feed -----------------------------------------------------------------------------------------
def test_feed_shape_cold_start_reasons_and_creator_spacing(api):
    r = api.get("/v1/feed", params={"user_id": "never-seen", "n": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"request_id", "user_id", "model_version", "mode", "items", "notices"} <= set(body)
    assert body["user_id"] == "never-seen" and body["mode"] == "personalized"
    assert isinstance(body["notices"], list)
    assert len(body["items"]) == 12
    for it in body["items"]:
        assert set(it) >= {"item_id", "score", "source", "reasons"}
        assert it["reasons"] and all(r["code"] and r["text"] for r in it["reasons"])
    creators = [creator_of(it["item_id"]) for it in body["items"]]
    assert all(a != b for a, b in zip(creators, creators[1:]))


def test_next_page_excludes_what_was_served(api):
    pages = [feed_ids(api, "u1", n=10) for _ in range(3)]
    served = [i for p in pages for i in p]
    assert all(pages) and len(served) == len(set(served))


def test_feed_excludes_reported_impressions(api):
    shown = [f"v{i}" for i in range(35)]
    events = [ev(f"imp{i}", "u2", item, type="impression") for i, item in enumerate(shown)]
    assert api.post("/v1/events", json={"events": events}).status_code == 200
    page = feed_ids(api, "u2", n=10)
    assert page and not set(page) & set(shown)


def test_not_interested_never_comes_back(api):
    r = api.post("/v1/events", json={"events": [ev("ni", "u3", "v3", type="not_interested")]})
    assert r.status_code == 200
    seen: list[str] = []
    for _ in range(6):
        seen += feed_ids(api, "u3", n=10)
    assert "v3" not in seen
    assert len(set(seen)) >= 30  # the pages did walk through the catalog


def test_personalization_off_forces_non_personalized(api):
    r = api.put("/v1/users/u4/settings", json={"personalization": False})
    assert r.status_code == 200 and r.json()["personalization"] is False
    for mode in ("personalized", "following"):
        r = api.get("/v1/feed", params={"user_id": "u4", "mode": mode})
        assert r.status_code == 200 and r.json()["mode"] == "non_personalized"


@pytest.mark.parametrize("params, field", [
    ({"n": 0}, "n"), ({"n": 101}, "n"), ({"mode": "random"}, "mode"),
    ({"user_id": ""}, "user_id"), ({"region": "somewhere precise"}, "region"),
])
def test_feed_query_rules(api, params, field):
    r = api.get("/v1/feed", params={"user_id": "u1", **params})
    err = assert_error(r, 422, "invalid_input")
    assert [d["field"] for d in err["details"]] == [field]


def test_rank_scores_best_first_and_rejects_unknown_ids(api):
    likes = [ev(f"l{i}", f"fan{i}", "v5", type="like") for i in range(5)]
    assert api.post("/v1/events", json={"events": likes}).status_code == 200
    r = api.post("/v1/rank", json={"user_id": "u1", "item_ids": ["v1", "v5", "v2"],
                                   "context": {"device": "android", "region": "BR"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"]
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert body["items"][0]["item_id"] == "v5"
    assert {i["item_id"] for i in body["items"]} == {"v1", "v5", "v2"}
    assert all("long_view" in i["predictions"] for i in body["items"])
    err = assert_error(api.post("/v1/rank", json={"user_id": "u1", "item_ids": ["v1", "zz"]}),
                       422, "invalid_input")
    assert [(d["field"], d["index"]) for d in err["details"]] == [("item_ids[1]", 1)]


def test_rank_passes_the_whole_context_to_the_scorer(api, engine, monkeypatch):
    # The ranker reads the traffic source as well as the device and region: a rank request's
    # context reaches the scorer whole, as a feed request's does.
    seen = []
    score = engine.pipeline.scorer.score

    def spy(ctx, candidates):
        seen.append((ctx.request.device, ctx.request.region, ctx.request.source))
        return score(ctx, candidates)

    monkeypatch.setattr(engine.pipeline.scorer, "score", spy)
    r = api.post("/v1/rank", json={"user_id": "u1", "item_ids": ["v1", "v2"], "context": {
        "device": "android", "region": "BR", "source": "following"}})
    assert r.status_code == 200, r.text
    assert seen == [("android", "BR", "following")]


def test_explain(api):
    first = feed_ids(api, "u5", n=5)[0]
    r = api.get("/v1/explain", params={"user_id": "u5", "item_id": first})
    assert r.status_code == 200, r.text
    assert r.json()["shown"] is True and r.json()["reasons"]
    assert_error(api.get("/v1/explain", params={"user_id": "u5", "item_id": "nope"}),
                 404, "not_found")


# -- settings -------------------------------------------------------------------------------------
def test_settings_round_trip_and_partial_update(api):
    extra = {"hidden_creators": [], "hidden_sounds": [], "young_viewer": False}
    assert api.get("/v1/users/u6/settings").json() == {
        "personalization": True, "muted_keywords": [], "daily_limit_minutes": None, **extra}
    r = api.put("/v1/users/u6/settings", json={"personalization": False,
                                               "muted_keywords": ["football", "#music"],
                                               "daily_limit_minutes": 30})
    assert r.status_code == 200
    r = api.put("/v1/users/u6/settings", json={"daily_limit_minutes": None})
    assert r.json() == {"personalization": False, "muted_keywords": ["football", "#music"],
                        "daily_limit_minutes": None, **extra}
    assert api.get("/v1/users/u6/settings").json() == r.json()
    page = feed_ids(api, "u6", n=20)
    assert page and all(int(i[1:]) % 4 in (0, 1) for i in page)  # no football, no music


@pytest.mark.parametrize("body, field", [
    ({"daily_limit_minutes": 0}, "daily_limit_minutes"),
    ({"daily_limit_minutes": 1441}, "daily_limit_minutes"),
    ({"muted_keywords": ["w"] * 101}, "muted_keywords"),
    ({"muted_keywords": ["x" * 65]}, "muted_keywords[0]"),
    ({"muted_keywords": ["#"]}, "muted_keywords"),
    ({"personalization": None}, "personalization"),
    ({"theme": "dark"}, "theme"),
])
def test_settings_rules(api, body, field):
    err = assert_error(api.put("/v1/users/u7/settings", json=body), 422, "invalid_input")
    assert [d["field"] for d in err["details"]] == [field]


# -- operations -----------------------------------------------------------------------------------
def test_healthz_and_metrics_need_no_token(client, keys):
    assert client.get("/healthz").status_code == 200
    r = client.post("/v1/events", json={"events": [ev("e0", "u1", "v0"), ev("e1", "u1", "v1")]},
                    headers=bearer(keys["ingest"]))
    assert r.status_code == 200
    client.post("/v1/events", json={"events": [ev("e0", "u1", "v0")]},
                headers=bearer(keys["ingest"]))
    client.get("/v1/feed", params={"user_id": "u1"}, headers=bearer(keys["serve"]))
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "reelrank_events_accepted_total 2.0" in text
    assert "reelrank_events_duplicates_total 1.0" in text
    assert f"reelrank_catalog_items {float(N_ITEMS)}" in text
    assert "reelrank_live_users 1.0" in text
    assert 'reelrank_feed_latency_seconds_count{mode="personalized"} 1.0' in text
    assert 'reelrank_http_requests_total{method="POST",route="/v1/events",status="200"} 2.0' in text


def test_unknown_route_and_unexpected_errors_use_the_error_shape(api, engine, monkeypatch):
    assert_error(api.get("/v1/nothing-here"), 404, "not_found")
    assert_error(api.delete("/v1/feed"), 405, "method_not_allowed")

    def boom(request):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(engine, "feed", boom)
    r = api.get("/v1/feed", params={"user_id": "u1"})
    assert_error(r, 500, "internal_error")
    assert "secret" not in r.text and "Traceback" not in r.text
