"""The web app's server side: static files, the catalog read, and the demo sign-in, which must
hand out nothing unless the server runs in demo mode."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.service import Authenticator, create_app
from reelrank.types import Event, Item

T0 = 1_700_000_000_000


def item(i: int, visible: bool = True) -> Item:
    return Item(item_id=f"v{i}", creator_id=f"c{i % 3}", duration_ms=12_000, created_at=T0 - i,
                caption=f"clip {i} #cats", hashtags=("cats",), sound_id=f"s{i % 2}",
                visible=visible, attributes={"topic": "cats"})


@pytest.fixture
def engine(store):
    e = Engine(store).load()
    e.ingest_items([item(i) for i in range(6)] + [item(9, visible=False)])
    e.ingest_events([Event(f"e{k}", f"u{k % 2}", f"v{k % 6}", T0 + k, "play", 12_000)
                     for k in range(12)])
    return e


def client_for(engine, demo: bool, auth: bool = True) -> TestClient:
    return TestClient(create_app(engine, Authenticator(engine.store) if auth else None, demo=demo))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_app_is_served_as_static_files(engine):
    with client_for(engine, demo=False) as c:
        r = c.get("/", follow_redirects=False)
        assert r.status_code in (302, 307) and r.headers["location"] == "/app/"
        page = c.get("/app/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'src="js/main.js"' in page.text
        script = c.get("/app/js/main.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert script.headers["cache-control"] == "no-cache"
        assert c.get("/app/js/nothing.js").status_code == 404


def test_every_module_the_page_imports_is_served(engine):
    """A missing file would only show as a blank page in a browser."""
    import re

    with client_for(engine, demo=False) as c:
        seen, todo = set(), ["main.js"]
        while todo:
            name = todo.pop()
            r = c.get(f"/app/js/{name}")
            assert r.status_code == 200, name
            seen.add(name)
            for dep in re.findall(r"from '\./([\w-]+\.js)'", r.text):
                if dep not in seen:
                    todo.append(dep)
        assert {"feed.js", "me.js", "studio.js", "console.js", "charts.js"} <= seen


def test_demo_sign_in_is_off_unless_the_server_runs_in_demo_mode(engine):
    with client_for(engine, demo=False) as c:
        assert c.get("/v1/demo").json() == {"demo": False, "auth": True}
        r = c.post("/v1/demo/sign-in", json={"user_id": "u0"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert c.get("/v1/demo/directory").status_code == 404
    assert engine.store.count_keys() == 0  # nothing was minted


def test_demo_sign_in_mints_a_user_token_bound_to_that_viewer(engine):
    with client_for(engine, demo=True) as c:
        assert c.get("/v1/demo").json() == {"demo": True, "auth": True}
        r = c.post("/v1/demo/sign-in", json={"user_id": "u1"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user_id"] == "u1" and body["demo"] is True
        tokens = body["tokens"]
        assert set(tokens) == {"user", "serve", "admin"}  # events go with the user token
        user = bearer(tokens["user"])
        assert c.get("/v1/users/u1/settings", headers=user).status_code == 200
        assert c.get("/v1/users/u0/settings", headers=user).status_code == 403
        assert c.get("/v1/feed", params={"user_id": "u1"}, headers=user).status_code == 200
        assert c.post("/v1/admin/train", headers=user).status_code == 403
        own = {"event_id": "demo-e1", "user_id": "u1", "item_id": "v1", "ts": T0, "type": "play",
               "watch_ms": 3_000}
        assert c.post("/v1/events", json={"events": [own]}, headers=user).status_code == 200
        other = {**own, "event_id": "demo-e2", "user_id": "u0"}
        assert c.post("/v1/events", json={"events": [other]}, headers=user).status_code == 403
        # The service tokens carry their scopes, and are reused across sign-ins.
        serve = bearer(tokens["serve"])
        assert c.get("/v1/users/u1/settings", headers=serve).status_code == 403
        again = c.post("/v1/demo/sign-in", json={"user_id": "u0"}).json()["tokens"]
        assert again["admin"] == tokens["admin"] and again["user"] != tokens["user"]
        assert engine.store.count_keys("user") == 2
        assert engine.store.count_keys("admin") == 1


def test_demo_sign_in_rejects_a_bad_body_naming_the_field(engine):
    with client_for(engine, demo=True) as c:
        r = c.post("/v1/demo/sign-in", json={"user_id": ""})
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == "user_id"
        r = c.post("/v1/demo/sign-in", json={"user_id": "u1", "role": "admin"})
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == "role"


def test_demo_sign_in_without_auth_hands_out_no_tokens(engine):
    with client_for(engine, demo=True, auth=False) as c:
        body = c.post("/v1/demo/sign-in", json={"user_id": "u1"}).json()
        assert body["tokens"] == {"user": None, "serve": None, "admin": None}
        assert c.get("/v1/demo").json() == {"demo": True, "auth": False}


def test_demo_directory_lists_active_viewers_and_prolific_creators(engine):
    with client_for(engine, demo=True) as c:
        d = c.get("/v1/demo/directory").json()
    assert [v["user_id"] for v in d["viewers"]] == ["u0", "u1"]
    assert d["viewers"][0]["events"] == 6 and d["viewers"][0]["top_hashtags"] == ["cats"]
    # v9 is hidden, so it does not count for its creator.
    assert d["creators"] == [{"creator_id": "c0", "videos": 2}, {"creator_id": "c1", "videos": 2},
                             {"creator_id": "c2", "videos": 2}]


def test_items_are_readable_with_any_token_but_not_without_one(engine):
    with client_for(engine, demo=True) as c:
        tokens = c.post("/v1/demo/sign-in", json={"user_id": "u0"}).json()["tokens"]
        assert c.get("/v1/items", params={"ids": "v1"}).status_code == 401
        r = c.get("/v1/items", params={"ids": "v1,v2,nope,v1,v9"}, headers=bearer(tokens["user"]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert [i["item_id"] for i in body["items"]] == ["v1", "v2"]
        assert body["missing"] == ["nope", "v9"]  # a viewer does not see hidden videos
        first = body["items"][0]
        assert first["caption"] == "clip 1 #cats" and first["hashtags"] == ["cats"]
        assert first["duration_ms"] == 12_000 and first["sound_id"] == "s1"
        # The topic the feed reads: no model with learned topics here, so the first hashtag.
        assert first["topic"] == {"key": "cats", "name": "#cats"}
        admin = c.get("/v1/items", params={"ids": "v9"}, headers=bearer(tokens["admin"])).json()
        assert [i["item_id"] for i in admin["items"]] == ["v9"]
        assert admin["items"][0]["visible"] is False


@pytest.mark.parametrize("ids", ["", ",,", ",".join(f"v{i}" for i in range(101)), "x" * 129])
def test_items_rejects_bad_id_lists(engine, ids):
    with client_for(engine, demo=False, auth=False) as c:
        r = c.get("/v1/items", params={"ids": ids})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["field"] == "ids"


def test_stats_engagement_covers_the_whole_log_and_says_so(store):
    # What the console shows: events stored before the server started count (the demo world's
    # history is imported first), with the window named in the answer.
    e = Engine(store)
    e.ingest_items([item(i) for i in range(3)])
    events = [Event(f"i{k}", "u1", f"v{k}", T0 + k, "impression") for k in range(3)]
    events += [Event("p0", "u1", "v0", T0 + 10, "play", 12_000),  # watched to the end
               Event("p1", "u1", "v1", T0 + 11, "play", 1_000),
               Event("s2", "u1", "v2", T0 + 12, "skip", 500),
               Event("l0", "u1", "v0", T0 + 13, "like")]
    e.ingest_events(events)
    restarted = Engine(store).load()  # live state rebuilt from the log, as at start-up
    with client_for(restarted, demo=False, auth=False) as c:
        engagement = c.get("/v1/stats").json()["engagement"]
    assert engagement["window"] == "all events in the log"
    assert (engagement["impressions"], engagement["views"]) == (3, 3)
    assert engagement["long_view_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert engagement["like_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert engagement["share_rate"] == 0
    assert engagement["mean_watch_ratio"] == pytest.approx((1 + 1 / 12 + 0.5 / 12) / 3, abs=1e-6)
