"""A viewer's own token posts that viewer's events (a client on the viewer's device needs no
global token), and nothing else."""

from __future__ import annotations

from tests.service.test_api import assert_error, bearer, client, engine, ev  # noqa: F401


def _user_token(client, keys, user_id: str) -> str:
    r = client.post(f"/v1/admin/users/{user_id}/token", headers=bearer(keys["admin"]))
    assert r.status_code == 200, r.text
    return r.json()["token"]


def test_a_user_token_posts_its_own_events(client, keys, store):
    token = _user_token(client, keys, "u1")
    batch = {"events": [ev("e0", "u1", "v0", watch_ms=4000), ev("e1", "u1", "v1", type="like")]}
    r = client.post("/v1/events", json=batch, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 2, "duplicates": 0}
    assert store.count_events() == 2
    # ... and the next feed of that viewer, read with the same token, sees them.
    r = client.get("/v1/feed", params={"user_id": "u1"}, headers=bearer(token))
    assert r.status_code == 200
    assert "v0" not in [i["item_id"] for i in r.json()["items"]]


def test_a_user_token_gets_403_naming_each_other_user_id(client, keys, store):
    token = _user_token(client, keys, "u1")
    batch = {"events": [ev("e0", "u1", "v0"), ev("e1", "u2", "v1"), ev("e2", "u1", "v2"),
                        ev("e3", "U1", "v3")]}
    err = assert_error(client.post("/v1/events", json=batch, headers=bearer(token)), 403,
                       "forbidden")
    assert [(d["field"], d["index"]) for d in err["details"]] == [
        ("events[1].user_id", 1), ("events[3].user_id", 3)]
    assert store.count_events() == 0  # nothing of the batch


def test_a_user_token_still_cannot_write_the_catalog(client, keys, store):
    token = _user_token(client, keys, "u1")
    item = {"item_id": "n1", "creator_id": "u1", "duration_ms": 1000, "created_at": 0}
    assert_error(client.post("/v1/items", json={"items": [item]}, headers=bearer(token)), 403,
                 "forbidden")


def test_the_ingest_token_still_posts_anyones_events(client, keys, store):
    batch = {"events": [ev("e0", "u1", "v0"), ev("e1", "u2", "v1")]}
    r = client.post("/v1/events", json=batch, headers=bearer(keys["ingest"]))
    assert r.status_code == 200 and r.json()["accepted"] == 2
    # The serve token does not ingest, and an erased viewer's token no longer works.
    assert_error(client.post("/v1/events", json=batch, headers=bearer(keys["serve"])), 403,
                 "forbidden")
    token = _user_token(client, keys, "u3")
    assert client.delete("/v1/users/u3", headers=bearer(token)).status_code == 204
    assert_error(client.post("/v1/events", json={"events": [ev("e9", "u3", "v0")]},
                             headers=bearer(token)), 401, "unauthorized")
