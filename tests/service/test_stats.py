"""``GET /v1/stats`` through the HTTP API: live throughput, latency, engagement and fairness."""

from __future__ import annotations

import threading
import math
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank import metrics
from reelrank.exposure import ExposureLedger, entropy_bits, gini, popularity_percentiles
from reelrank.service import Authenticator, create_app
from reelrank.types import Item

T0 = 1_700_000_000_000
TOPICS = ("cats", "cooking", "football", "music")


def make_item(i: int) -> Item:
    return Item(f"v{i}", f"c{i % 8}", 10_000, T0 - i * 60_000, hashtags=(TOPICS[i % 4],))


@pytest.fixture
def engine(store):
    e = Engine(store).load()
    e.ingest_items([make_item(i) for i in range(40)])
    return e


@pytest.fixture
def client(engine, keys):
    with TestClient(create_app(engine, Authenticator(engine.store))) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_views(client, token, user: str, items: list[int], long: int) -> None:
    events = []
    for k, i in enumerate(items):
        base = {"user_id": user, "item_id": f"v{i}", "ts": T0 + k}
        events.append({**base, "event_id": f"{user}-{i}-imp", "type": "impression"})
        events.append({**base, "event_id": f"{user}-{i}-play", "type": "play",
                       "watch_ms": 10_000 if k < long else 500})
    r = client.post("/v1/events", json={"events": events}, headers=auth(token))
    assert r.status_code == 200, r.text


def test_stats_is_for_admins_only(client, keys):
    assert client.get("/v1/stats").status_code == 401
    r = client.get("/v1/stats", headers=auth(keys["serve"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/stats", headers=auth(keys["admin"])).status_code == 200


def test_stats_before_any_traffic_has_nulls_not_errors(client, keys):
    body = client.get("/v1/stats", headers=auth(keys["admin"])).json()
    assert body["events_per_second"] == 0
    assert body["feed_latency_ms"]["p50"] is None
    assert body["fairness"]["creator_exposure_gini"] is None
    assert body["catalog"]["items"] == 40
    assert body["model"]["version"] == "heuristic-v0" and body["model"]["age_s"] is None


def test_stats_reports_throughput_latency_engagement_and_fairness(client, keys):
    post_views(client, keys["ingest"], "a", [0, 1, 2, 3], long=3)
    post_views(client, keys["ingest"], "b", [4, 5, 6, 7], long=1)
    pages = {}
    for user in ("a", "b", "c", "d", "e"):
        r = client.get("/v1/feed", params={"user_id": user, "n": 10}, headers=auth(keys["serve"]))
        pages[user] = [it["item_id"] for it in r.json()["items"]]
    body = client.get("/v1/stats", headers=auth(keys["admin"])).json()

    assert body["events_per_second"] > 0
    lat = body["feed_latency_ms"]
    assert lat["requests"] == 5 and 0 < lat["p50"] <= lat["p99"]
    assert body["http_feed_latency_ms"]["requests"] == 5 and body["http_feed_latency_ms"]["p50"] > 0
    # Engagement of the newest event-time bucket: 4 of 8 views were long; no likes.
    assert body["online"]["long_view_rate"] == pytest.approx(0.5)
    assert body["online"]["impressions"] == 8 and body["online"]["like_rate"] == 0

    fair = body["fairness"]
    served = [i for p in pages.values() for i in p]
    assert fair["slots"] == len(served) == 50
    assert fair["catalog_coverage"] == pytest.approx(len(set(served)) / 40)
    per_creator = Counter(f"c{int(i[1:]) % 8}" for i in served)
    expected_gini = metrics.gini([per_creator.get(f"c{k}", 0) for k in range(8)])
    assert fair["creator_exposure_gini"] == pytest.approx(expected_gini, abs=1e-6)
    per_user = [metrics.topic_entropy(list(Counter(TOPICS[int(i[1:]) % 4] for i in p).values()))
                for p in pages.values()]
    assert fair["per_user_topic_entropy_bits"] == pytest.approx(sum(per_user) / 5, abs=1e-6)
    assert 0.0 <= fair["popularity_bias"] <= 1.0
    assert body["over_time"][-1]["viewers"] == 5


def test_an_erased_viewer_leaves_the_per_viewer_figures(client, keys):
    for user in ("a", "b"):
        client.get("/v1/feed", params={"user_id": user, "n": 10}, headers=auth(keys["serve"]))
    before = client.get("/v1/stats", headers=auth(keys["admin"])).json()
    assert before["over_time"][-1]["viewers"] == 2
    assert client.delete("/v1/users/a", headers=auth(keys["admin"])).status_code == 204
    wait_for_live_rebuild()
    after = client.get("/v1/stats", headers=auth(keys["admin"])).json()
    assert after["over_time"][-1]["viewers"] == 1
    # What was served stays counted: exposure is about creators and items, not the viewer.
    assert after["fairness"]["slots"] == before["fairness"]["slots"]


def test_ledger_formulas_match_the_evaluation_metrics():
    counts = [0, 0, 3, 1, 9, 4]
    assert gini(counts) == pytest.approx(metrics.gini(counts))
    assert entropy_bits([2, 0, 1, 5]) == pytest.approx(metrics.topic_entropy([2, 0, 1, 5]))
    assert math.isnan(gini([0, 0]))
    pop = {"a": 5.0, "b": 1.0, "c": 5.0, "d": 0.0}
    pct = popularity_percentiles(pop)
    assert metrics.popularity_percentile([[0], [1], [2], [3]], [5, 1, 5, 0]) == pytest.approx(
        sum(pct.values()) / 4)
    assert pct == {"d": 0.25, "b": 0.5, "a": 0.875, "c": 0.875}


def test_ledger_keeps_a_bounded_number_of_buckets(engine):
    from reelrank.types import FeedItem

    ledger = ExposureLedger(bucket_ms=1_000, max_buckets=3)
    for t in range(6):
        ledger.observe_feed("u", t * 1_000, [FeedItem("v0", 1.0, "x", ())], engine.catalog)
    figs = ledger.figures(engine.catalog)
    assert [b["start_ms"] for b in figs["over_time"]] == [3_000, 4_000, 5_000]
    assert figs["slots"] == 6  # the totals keep everything


def wait_for_live_rebuild() -> None:
    """Erasure rebuilds live state in a background thread; let it finish before the test's
    store closes under it."""
    for t in threading.enumerate():
        if t.name == "live-rebuild":
            t.join(10)
