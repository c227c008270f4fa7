"""The viewer's data and controls through HTTP: export, erasure (searched for in the files
afterwards), refresh my feed, not interested in a creator or sound, personalization off,
wellbeing limits, transparency, retention and the access log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.pipeline.side_effects import Calls
from reelrank.registry import ModelRegistry
from reelrank.service import Authenticator, create_app, ensure_service_keys
from reelrank.store import open_store
from reelrank.train.batch import train_from_store
from reelrank.types import Item
from tests.service.test_api import (
    T0, bearer, creator_of, ev, feed_ids, make_item,
)
from tests.train.test_training import TINY

MIN = 60_000


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def setup(data_dir):
    store = open_store(data_dir)
    engine = Engine(store, registry=ModelRegistry(data_dir / "models")).load()
    engine.ingest_items([make_item(i) for i in range(40)])
    keys = json.loads(ensure_service_keys(store, data_dir).read_text())
    with TestClient(create_app(engine, Authenticator(store))) as client:
        client.headers.update(bearer(keys["admin"]))
        yield engine, client, keys
    store.close()


def watch(api, user: str, items: list[str], ts: int = T0, watch_ms: int = 15_000,
          prefix: str = "w", region: str = "DE") -> None:
    events = [ev(f"{prefix}-{user}-{i}", user, item, "play", ts=ts + i, watch_ms=watch_ms,
                 context={"region": region})
              for i, item in enumerate(items)]
    r = api.post("/v1/events", json={"events": events})
    assert r.status_code == 200, r.text


def test_export_holds_events_settings_interests_and_who_read_it(setup):
    engine, api, keys = setup
    watch(api, "ann", ["v1", "v5", "v9"])  # all "cooking"
    api.post("/v1/events", json={"events": [ev("l1", "ann", "v5", "like", ts=T0 + 10)]})
    api.put("/v1/users/ann/settings", json={"muted_keywords": ["spoiler"]})
    r = api.get("/v1/users/ann/data")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["user_id"] == "ann"
    assert sorted(e["event_id"] for e in data["events"]) == ["l1", "w-ann-0", "w-ann-1", "w-ann-2"]
    assert data["settings"]["muted_keywords"] == ["spoiler"]
    assert data["inferred_interests"]["hashtags"][0]["id"] == "cooking"
    assert data["inferred_interests"]["topics"][0] == {"id": "cooking", "views": 3,
                                                       "long_views": 3}
    assert data["inferred_interests"]["region"] == "DE"
    assert sum(data["inferred_interests"]["watch_minutes_by_day"].values()) == pytest.approx(0.8)
    actions = [(e["actor"], e["action"]) for e in data["access_log"]]
    admin_actor = f"admin key {engine.store.access_log('ann')[0].actor.split()[-1]}"
    assert (admin_actor, "exported data") in actions and (admin_actor, "changed settings") in actions
    # The viewer sees the same list, and nobody else's.
    token = api.post("/v1/admin/users/ann/token").json()["token"]
    mine = api.get("/v1/users/ann/access_log", headers=bearer(token))
    assert mine.status_code == 200 and mine.json()["entries"][0]["action"] == "exported data"
    assert api.get("/v1/users/bob/access_log", headers=bearer(token)).status_code == 403


def test_erasure_leaves_nothing_in_the_files(setup, data_dir):
    engine, api, keys = setup
    victim = "zq-victim-7f3a"
    watch(api, victim, [f"v{i}" for i in range(0, 20, 2)])
    watch(api, "other", [f"v{i}" for i in range(1, 21, 2)])
    api.put(f"/v1/users/{victim}/settings", json={"muted_keywords": ["secretword"]})
    token = api.post(f"/v1/admin/users/{victim}/token").json()["token"]
    assert feed_ids(api, victim)  # leaves a trace and served items in memory
    api.get("/v1/explain", params={"user_id": victim, "item_id": "v3"})
    train_from_store(engine.store, engine.registry, TINY, progress=False)
    assert engine.models.refresh()
    before = engine.live.item_stats("v0").views

    r = api.delete(f"/v1/users/{victim}")
    assert r.status_code == 204 and r.content == b""
    api.app.state.runtime._rebuild_thread.join(10)  # the rebuild runs in the background
    # Nothing can be read back; the old token is gone; aggregates no longer count the viewer.
    data = api.get(f"/v1/users/{victim}/data").json()
    assert data["events"] == [] and data["settings"]["muted_keywords"] == []
    assert data["inferred_interests"]["hashtags"] == []
    assert [e["action"] for e in data["access_log"]] == ["exported data", "erased"]
    assert api.get(f"/v1/users/{victim}/settings", headers=bearer(token)).status_code == 401
    assert engine.live.item_stats("v0").views == before - 1
    r = api.get("/v1/feed", params={"user_id": victim, "n": 5})
    assert all(i["source"] != "co_engagement" for i in r.json()["items"])
    # Search every file in the data directory (database, WAL, models) for the id.
    api.delete(f"/v1/users/{victim}")  # the export above logged a read; erase once more
    engine.store.close()
    needle = victim.encode()
    hits = [str(p) for p in data_dir.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert hits == []
    assert any(p.suffix in (".pt", ".json") for p in (data_dir / "models").rglob("*"))


def test_the_engines_steps_hear_of_the_erasure(setup):
    engine, api, _ = setup
    heard = []
    engine.effects.add(Calls("heard", erase=heard.append))
    engine.effects.add(Calls("fails", erase=lambda _u: 1 / 0))  # a failing step stops nothing
    assert api.delete("/v1/users/nobody").status_code == 204
    assert heard == ["nobody"]


def test_reset_forgets_interests_but_keeps_follows_and_survives_restart(setup, data_dir):
    engine, api, _ = setup
    watch(api, "ann", ["v1", "v5", "v9", "v13"])
    api.post("/v1/events", json={"events": [ev("f1", "ann", "v2", "follow", ts=T0 + 20)]})
    assert api.post("/v1/users/ann/reset").json() == {"user_id": "ann", "reset": True}
    data = api.get("/v1/users/ann/data").json()
    assert data["inferred_interests"]["hashtags"] == []
    assert data["inferred_interests"]["topics"] == []
    assert data["inferred_interests"]["recent_items"] == []
    assert data["inferred_interests"]["following"] == [creator_of("v2")]
    assert len(data["events"]) == 5  # the log is the user's, kept until they erase it
    # Seen videos stay seen.
    assert not {"v1", "v5", "v9", "v13"} & set(feed_ids(api, "ann", n=20))
    watch(api, "ann", ["v3"], ts=T0 + 100, prefix="after")
    rebuilt = Engine(engine.store).load()
    u = rebuilt.live.user("ann")
    assert [h.item_id for h in u.history] == ["v3"]
    assert creator_of("v2") in u.following and {"v1", "v5"} <= u.seen


def test_not_interested_in_a_creator_or_a_sound(setup):
    engine, api, _ = setup
    engine.ingest_items([Item("s1", "c1", 15_000, T0, sound_id="snd9"),
                         Item("s2", "c2", 15_000, T0, sound_id="snd9")])
    r = api.post("/v1/users/ann/not_interested", json={"item_id": "v1", "scope": "creator"})
    assert r.status_code == 200 and r.json()["hidden_creators"] == ["c1"]
    r = api.post("/v1/users/ann/not_interested", json={"item_id": "s2", "scope": "sound"})
    assert r.json()["hidden_sounds"] == ["snd9"]
    shown = feed_ids(api, "ann", n=40)
    assert shown and all(creator_of(i) != "c1" for i in shown if i.startswith("v"))
    assert "s1" not in shown and "s2" not in shown
    why = api.get("/v1/explain", params={"user_id": "ann", "item_id": "v9"}).json()
    assert why["filters"][0]["reason"] == "not interested in this creator"
    types = [e["type"] for e in api.get("/v1/users/ann/data").json()["events"]]
    assert types == ["not_interested", "not_interested"]
    r = api.post("/v1/users/ann/not_interested", json={"item_id": "v2", "scope": "sound"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "scope"
    r = api.post("/v1/users/ann/not_interested", json={"item_id": "nope"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "item_id"
    # Settings PUT keeps the hidden lists it was not asked to change.
    api.put("/v1/users/ann/settings", json={"muted_keywords": ["x"]})
    assert api.get("/v1/users/ann/settings").json()["hidden_creators"] == ["c1"]


def test_personalization_off_is_regional_popularity_without_the_profile(setup):
    engine, api, _ = setup
    # Viewers in DE love the cats videos; viewers in FR the football ones.
    cats = [f"v{i}" for i in range(0, 40, 4)]
    football = [f"v{i}" for i in range(2, 40, 4)]
    for k in range(3):
        watch(api, f"de{k}", cats, prefix="de")
        watch(api, f"fr{k}", football, prefix="fr", region="FR")
    watch(api, "ann", [f"v{i}" for i in range(1, 40, 4)])  # ann watches cooking
    api.put("/v1/users/ann/settings", json={"personalization": False})
    r = api.get("/v1/feed", params={"user_id": "ann", "n": 5, "region": "FR"})
    body = r.json()
    assert body["mode"] == "non_personalized" and body["model_version"] == "non-personalized"
    # The most popular in the region leads; the re-ranker's topic rule mixes in other topics.
    assert body["items"][0]["item_id"] in football
    assert body["items"][0]["reasons"][0]["code"] == "popular_region"
    regional = [i["item_id"] for i in body["items"] if i["source"] == "popular_region"]
    assert regional and set(regional) <= set(football)
    r = api.get("/v1/feed", params={"user_id": "ann", "n": 5, "region": "DE"}).json()
    assert r["items"][0]["item_id"] in cats


def test_following_mode_is_in_time_order(setup):
    engine, api, _ = setup
    api.post("/v1/events", json={"events": [ev("f1", "ann", "v3", "follow")]})
    r = api.get("/v1/feed", params={"user_id": "ann", "n": 5, "mode": "following"}).json()
    created = [engine.catalog.get(i["item_id"]).created_at for i in r["items"]]
    assert created == sorted(created, reverse=True) and len(created) == 5
    assert all(creator_of(i["item_id"]) == creator_of("v3") for i in r["items"])


def test_daily_limit_puts_a_break_notice_in_the_feed(setup):
    engine, api, _ = setup
    api.put("/v1/users/ann/settings", json={"daily_limit_minutes": 2})
    watch(api, "ann", ["v1", "v2"], watch_ms=50_000)
    assert api.get("/v1/feed", params={"user_id": "ann"}).json()["notices"] == []
    watch(api, "ann", ["v3"], watch_ms=30_000, prefix="more")
    notices = api.get("/v1/feed", params={"user_id": "ann"}).json()["notices"]
    assert [n["code"] for n in notices] == ["daily_limit_reached"]
    assert "2 minutes" in notices[0]["text"]


def test_young_viewer_gets_a_default_limit_and_sensitive_topics_dampened(setup):
    engine, api, _ = setup
    engine.ingest_items([Item(f"g{i}", "c99", 15_000, T0 + i, caption="big win",
                              hashtags=("gambling",)) for i in range(10)])
    watch(api, "crowd", [f"g{i}" for i in range(10)])  # make them the most popular
    adult = feed_ids(api, "adult", n=5)
    assert sum(i.startswith("g") for i in adult) >= 3
    api.put("/v1/users/kid/settings", json={"young_viewer": True})
    kid = feed_ids(api, "kid", n=5)
    assert sum(i.startswith("g") for i in kid) < sum(i.startswith("g") for i in adult)
    watch(api, "kid", [f"v{i}" for i in range(20, 32)], watch_ms=5 * MIN + 1)
    notices = api.get("/v1/feed", params={"user_id": "kid"}).json()["notices"]
    assert notices and "60 minutes" in notices[0]["text"]


def test_transparency_is_public_and_describes_the_pipeline(setup):
    engine, api, _ = setup
    r = api.get("/v1/transparency", headers={"Authorization": ""})
    assert r.status_code == 200
    body = r.json()
    assert {f["name"] for f in body["filters"]} >= {"seen", "muted_keyword", "not_interested"}
    assert [s["name"] for s in body["candidate_sources"]["non_personalized"]][0] == "popular_region"
    assert body["value_formula"]["weights"] is None  # no model trained in this test
    assert any(o["option"] == "personalization off" for o in body["your_options"])
    assert "IP" in body["data"]["not_stored"]
    assert body["reranking"]["price"]["served"]["pages"] == 0
    for _ in range(3):
        assert api.get("/v1/feed", params={"user_id": "price", "n": 5}).status_code == 200
    price = api.get("/v1/transparency").json()["reranking"]["price"]["served"]
    assert price["pages"] == 3 and price["slots"] > 0
    assert price["replaced_share"] == pytest.approx(
        price["exploration_share"] + price["diversity_share"], abs=1e-3)


def test_retention_purges_old_events_and_derived_state_follows(setup):
    engine, api, _ = setup
    day = 86_400_000
    watch(api, "old", ["v1", "v2"], ts=T0 - 40 * day)
    watch(api, "new", ["v1"], ts=T0)
    assert engine.live.item_stats("v1").views == 2
    assert engine.purge_events_older_than(30 * day, now_ms=T0) == 2
    assert engine.live.item_stats("v1").views == 1 and engine.live.user("old") is None
    assert api.get("/v1/users/old/data").json()["events"] == []


def test_retention_thread_purges_at_start(setup):
    engine, api, _ = setup
    watch(api, "old", ["v1"], ts=int(time.time() * 1000) - 10 * 86_400_000)
    watch(api, "new", ["v2"], ts=int(time.time() * 1000))
    runtime = api.app.state.runtime
    runtime.start_retention(days=7, every_s=3600)
    deadline = time.time() + 5
    while engine.store.count_events() != 1 and time.time() < deadline:
        time.sleep(0.02)
    assert [e.user_id for _, e in engine.store.iter_events()] == ["new"]
    assert runtime.retention_days == 7
    assert api.get("/v1/transparency").json()["data"]["retention_days"] == 7
