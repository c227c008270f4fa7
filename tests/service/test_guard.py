"""The request guard (service/guard.py), driven at the ASGI level so each test can see exactly
how much of a body the server read before it answered."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.service import Authenticator, create_app
from reelrank.service.guard import RequestLimits
from tests.service.test_api import make_item

MB = 1024 * 1024


@pytest.fixture
def engine(store):
    e = Engine(store).load()
    e.ingest_items([make_item(i) for i in range(10)])
    return e


def _scope(method: str, path: str, query: bytes = b"", headers=(), raw_path: bytes | None = None):
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": raw_path or path.encode(),
            "query_string": query, "root_path": "", "headers": list(headers),
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}


class Body:
    """A request body served to the app in chunks, counting how many bytes it handed over."""

    def __init__(self, total: int, chunk: int = MB, gate: asyncio.Event | None = None):
        self.total, self.chunk, self.sent, self.gate = total, chunk, 0, gate

    async def __call__(self) -> dict:
        if self.gate is not None:
            await self.gate.wait()
        n = min(self.chunk, self.total - self.sent)
        self.sent += n
        return {"type": "http.request", "body": b"x" * n, "more_body": self.sent < self.total}


async def _call(app, scope, receive) -> tuple[int, dict, dict]:
    messages = []

    async def send(message):
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(body) if body else {}


def run(app, scope, receive):
    return asyncio.run(_call(app, scope, receive))


def _error(body: dict, code: str) -> dict:
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"] and isinstance(body["error"]["details"], list)
    return body["error"]


def auth_header(token: str):
    return (b"authorization", f"Bearer {token}".encode())


def json_headers(length: int | None):
    out = [(b"content-type", b"application/json")]
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    return out


# -- bodies -----------------------------------------------------------------------------------
def test_declared_oversized_body_is_413_without_reading_it(engine, keys):
    app = create_app(engine, Authenticator(engine.store))
    body = Body(50 * MB)
    status, _, out = run(app, _scope("POST", "/v1/events",
                                     headers=[*json_headers(50 * MB), auth_header(keys["ingest"])]),
                         body)
    assert status == 413
    _error(out, "request_entity_too_large")
    assert body.sent == 0


def test_anonymous_50mb_body_is_refused_unread(engine):
    # With a Content-Length over the cap, and again with none (chunked): not one byte is read.
    app = create_app(engine, Authenticator(engine.store))
    for length in (50 * MB, None):
        body = Body(50 * MB)
        status, headers, out = run(app, _scope("POST", "/v1/events", headers=json_headers(length)),
                                   body)
        assert status in (401, 413)
        assert body.sent == 0
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    _error(out, "unauthorized")


def test_chunked_body_is_cut_off_at_the_cap(engine, keys):
    app = create_app(engine, Authenticator(engine.store), max_body_bytes=3 * MB)
    body = Body(50 * MB)
    status, _, out = run(app, _scope("POST", "/v1/events", headers=[*json_headers(None),
                                                                   auth_header(keys["ingest"])]),
                         body)
    assert status == 413
    _error(out, "request_entity_too_large")
    assert body.sent <= 4 * MB  # the chunk that crossed the cap, and nothing after it
    assert engine.store.count_events() == 0


def test_default_cap_admits_a_full_batch_of_10000_events(engine, keys):
    events = [{"event_id": f"event-number-{i:06d}", "user_id": f"viewer-{i % 500:05d}",
               "item_id": f"v{i % 10}", "ts": 1_700_000_000_000 + i, "type": "play",
               "watch_ms": 12_345, "context": {"device": "android", "region": "US"}}
              for i in range(10_000)]
    payload = json.dumps({"events": events}).encode()
    assert 1.5 * MB < len(payload) < RequestLimits().max_body_bytes
    app = create_app(engine, Authenticator(engine.store))
    status, _, out = run(app, _scope("POST", "/v1/events", headers=[
        *json_headers(len(payload)), auth_header(keys["ingest"])]), Body(len(payload)))
    # The body is x's, not the payload: what matters is that it was read and parsed (422).
    assert status == 422
    with TestClient(app) as client:
        r = client.post("/v1/events", content=payload,
                        headers={"Content-Type": "application/json",
                                 "Authorization": f"Bearer {keys['ingest']}"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["accepted"] == 10_000


# -- the request target -----------------------------------------------------------------------
def test_long_query_and_path_are_414(engine):
    app = create_app(engine, None)
    status, _, out = run(app, _scope("GET", "/v1/feed", query=b"user_id=u&x=" + b"a" * 5000),
                         Body(0))
    assert status == 414
    assert _error(out, "request_uri_too_long")["details"][0]["field"] == "query"
    path = "/v1/users/" + "a" * 3000 + "/settings"
    status, _, out = run(app, _scope("GET", path), Body(0))
    assert status == 414


@pytest.mark.parametrize("query, field", [
    (b"user_id=%FF%FE", "user_id"),
    (b"user_id=u1&item_id=%C3", "item_id"),
    (b"%FF=1&user_id=u1", "query"),
])
def test_invalid_utf8_in_the_query_is_400(engine, query, field):
    app = create_app(engine, None)
    status, _, out = run(app, _scope("GET", "/v1/explain", query=query), Body(0))
    assert status == 400
    assert [d["field"] for d in _error(out, "bad_request")["details"]] == [field]


def test_invalid_utf8_in_the_path_is_400(engine):
    app = create_app(engine, None)
    status, _, out = run(app, _scope("DELETE", "/v1/users/\ufffd",
                                     raw_path=b"/v1/users/%FF%FE"), Body(0))
    assert status == 400
    assert _error(out, "bad_request")["details"][0]["field"] == "path"


def test_bad_content_length_is_400(engine):
    app = create_app(engine, None)
    status, _, out = run(app, _scope("POST", "/v1/events", headers=[
        (b"content-length", b"-5")]), Body(0))
    assert status == 400
    _error(out, "bad_request")


# -- overload ---------------------------------------------------------------------------------
def test_requests_in_flight_are_bounded_with_retry_after(engine, keys):
    limits = RequestLimits(max_in_flight=3, max_in_flight_per_token=2, retry_after_s=2)
    app = create_app(engine, Authenticator(engine.store), limits=limits)
    ingest, admin = keys["ingest"], keys["admin"]

    async def scenario():
        gate = asyncio.Event()

        def held(token):  # a request whose body has not arrived yet: it stays in flight
            scope = _scope("POST", "/v1/events", headers=[*json_headers(10), auth_header(token)])
            return asyncio.create_task(_call(app, scope, Body(10, gate=gate)))

        first = [held(ingest), held(ingest)]
        await asyncio.sleep(0.2)
        same_token = await _call(app, _scope("POST", "/v1/events", headers=[
            *json_headers(10), auth_header(ingest)]), Body(10))
        third = held(admin)
        await asyncio.sleep(0.2)
        over = await _call(app, _scope("GET", "/v1/feed", query=b"user_id=u1",
                                       headers=[auth_header(admin)]), Body(0))
        health = await _call(app, _scope("GET", "/healthz"), Body(0))
        stats_during = app.state.guard.view()
        gate.set()
        await asyncio.gather(*first, third)
        after = await _call(app, _scope("GET", "/v1/feed", query=b"user_id=u1",
                                        headers=[auth_header(admin)]), Body(0))
        return same_token, over, health, stats_during, after

    same_token, over, health, during, after = asyncio.run(scenario())
    assert same_token[0] == 429 and same_token[1]["retry-after"] == "2"
    _error(same_token[2], "too_many_requests")
    assert over[0] == 503 and over[1]["retry-after"] == "2"
    _error(over[2], "service_unavailable")
    assert health[0] == 200  # never refused: an operator must see a saturated server
    assert during["in_flight"] == 3 and during["refused"]["overloaded"] == 1
    assert during["refused"]["token_busy"] == 1
    assert after[0] == 200
    assert app.state.guard.view()["in_flight"] == 0 and app.state.guard.per_token == {}


def test_public_routes_with_a_body_need_no_token(engine):
    # The demo sign-in takes a body and no token; outside demo mode it answers 404, not 401.
    with TestClient(create_app(engine, Authenticator(engine.store))) as client:
        r = client.post("/v1/demo/sign-in", json={"user_id": "u1"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
