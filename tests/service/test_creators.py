"""``GET /v1/creators/{creator_id}/insights`` through the HTTP API."""

from __future__ import annotations

import json
import threading

import pytest
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.service import Authenticator, create_app
from reelrank.types import DAY_MS, Item

T0 = 1_700_000_000_000


def catalog() -> list[Item]:
    items = [Item(f"star{i}", "star", 10_000, T0 - i * 3_600_000, hashtags=("cooking",),
                  sound_id="s1") for i in range(3)]
    # Other creators' recent cooking videos (the comparison set), and old football videos.
    items += [Item(f"cook{i}", f"chef{i}", 10_000, T0 - DAY_MS - i, hashtags=("cooking",))
              for i in range(6)]
    items += [Item(f"foot{i}", f"coach{i}", 10_000, T0 - 30 * DAY_MS - i, hashtags=("football",),
                   sound_id="s2") for i in range(4)]
    return items


@pytest.fixture
def engine(store):
    e = Engine(store).load()
    e.ingest_items(catalog())
    return e


@pytest.fixture
def client(engine, keys):
    with TestClient(create_app(engine, Authenticator(engine.store))) as c:
        c.headers.update({"Authorization": f"Bearer {keys['admin']}"})
        c.serve = {"Authorization": f"Bearer {keys['serve']}"}  # what a creator tool holds
        yield c


def watch(client, user: str, plays: dict[str, int]) -> None:
    events = [{"event_id": f"{user}-{item}", "user_id": user, "item_id": item, "ts": T0 + k,
               "type": "play", "watch_ms": ms} for k, (item, ms) in enumerate(plays.items())]
    r = client.post("/v1/events", json={"events": events})
    assert r.status_code == 200, r.text


def audience(client, n: int, prefix: str = "fan") -> list[str]:
    """``n`` viewers who finish the star's videos, half-watch other cooking videos and
    finish football."""
    users = [f"{prefix}{k}" for k in range(n)]
    for u in users:
        plays = {f"star{i}": 10_000 for i in range(2)}
        plays.update({f"cook{i}": 3_000 for i in range(6)})
        plays.update({f"foot{i}": 10_000 for i in range(4)})
        watch(client, u, plays)
    return users


def insights(client, creator: str = "star") -> dict:
    r = client.get(f"/v1/creators/{creator}/insights", headers=client.serve)
    assert r.status_code == 200, r.text
    return r.json()


def test_access_and_unknown_creators(client, keys):
    r = client.get("/v1/creators/nobody/insights", headers=client.serve)
    assert r.status_code == 404 and "nobody" in r.json()["error"]["message"]
    r = client.get("/v1/creators/star/insights", headers={"Authorization": f"Bearer {keys['ingest']}"})
    assert r.status_code == 403
    r = client.get("/v1/creators/star/insights", headers={"Authorization": ""})
    assert r.status_code == 401
    r = client.get("/v1/creators/star/insights", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert r.status_code == 200
    r = client.get("/v1/creators/" + "x" * 129 + "/insights", headers=client.serve)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "creator_id"


def test_small_audiences_are_suppressed(client):
    audience(client, 5)
    body = insights(client)
    assert body["audience"] == {"suppressed": True, "viewers": None,
                                "reason": "fewer than 20 distinct viewers so far"}
    assert all(v["suppressed"] and "watch_through" not in v for v in body["recent_videos"])
    assert body["what_to_post_next"]["suppressed"] is True


def test_audience_performance_and_what_to_post_next(client):
    users = audience(client, 23)
    body = insights(client)
    text = json.dumps(body)
    assert not any(f'"{u}"' in text for u in users)  # never a viewer id
    aud = body["audience"]
    assert aud["suppressed"] is False and aud["viewers"] == 20  # 23 rounded down to 5s
    topics = {row["value"]: row for row in aud["interests"]["topics"]}
    # Each viewer's long views: 2 cooking (the star's), 4 football.
    assert topics["#football"]["share"] == pytest.approx(4 / 6, abs=1e-3)
    assert topics["#cooking"]["share"] == pytest.approx(2 / 6, abs=1e-3)

    videos = {v["item_id"]: v for v in body["recent_videos"]}
    assert videos["star2"]["suppressed"] is True  # nobody watched it
    star0 = videos["star0"]
    assert star0["watch_through"] == 1.0 and star0["viewers"] == 20
    assert star0["similar"]["basis"] == "same topic and length" and star0["similar"]["videos"] == 6
    assert star0["similar"]["watch_through"] == 0.0  # 3 s of 10 s is not a long view
    assert star0["vs_similar"]["mean_watch_ratio"] == pytest.approx(1.0 / 0.3 - 1, abs=1e-3)
    assert star0["exploration"]["state"] in ("exploring", "graduated", "stopped")

    suggestions = body["what_to_post_next"]["items"]
    football = [s for s in suggestions if s["kind"] == "topic" and s["value"] == "#football"]
    assert football and football[0]["supply_share"] == 0.0  # none posted in the last 7 days
    assert football[0]["your_recent_videos"] == 0
    assert "67% of your audience's long views" in football[0]["evidence"]
    cooking = [s for s in suggestions if s["kind"] == "topic" and s["value"] == "#cooking"]
    assert not cooking or cooking[0]["opportunity"] < football[0]["opportunity"]
    assert suggestions == sorted(suggestions, key=lambda s: -s["opportunity"])


def test_an_erased_viewer_no_longer_counts(client, keys):
    users = audience(client, 20)
    assert insights(client)["audience"]["viewers"] == 20
    r = client.delete(f"/v1/users/{users[0]}")
    assert r.status_code == 204
    wait_for_live_rebuild()
    body = insights(client)
    assert body["audience"]["suppressed"] is True
    assert all(v["suppressed"] for v in body["recent_videos"])


def test_personalization_off_counts_in_performance_not_in_interests(client, keys):
    users = audience(client, 20)
    r = client.put(f"/v1/users/{users[3]}/settings", json={"personalization": False})
    assert r.status_code == 200
    body = insights(client)
    assert body["audience"]["viewers"] == 20
    assert body["audience"]["interests"] is None
    assert "personalization on" in body["audience"]["interests_note"]
    star0 = next(v for v in body["recent_videos"] if v["item_id"] == "star0")
    assert star0["suppressed"] is False and star0["viewers"] == 20
    assert body["what_to_post_next"]["suppressed"] is True


def wait_for_live_rebuild() -> None:
    """Erasure rebuilds live state in a background thread; let it finish before the test's
    store closes under it."""
    for t in threading.enumerate():
        if t.name == "live-rebuild":
            t.join(10)
