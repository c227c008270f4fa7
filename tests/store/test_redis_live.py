"""What the Redis live state promises beyond the contract suite: the viewer's state survives its
encoding whole, erasure leaves no key or member holding the viewer's id, concurrent writers of one
viewer lose no event, and the feed path's round trips stay few."""

from __future__ import annotations

import json
import threading
from collections import Counter

import msgpack
import pytest

from reelrank.store import new_catalog, new_live_state
from reelrank.store.live import HistoryEntry, UserState
from reelrank.types import Event, Item, Token
from tests.rd import keys_under, throwaway_prefix

redis = pytest.importorskip("redis")
T0 = 1_700_000_000_000


def items(n: int = 6) -> list[Item]:
    return [Item(f"v{i}", f"c{i % 2}", 20_000, T0 - 10_000 + i, hashtags=(f"t{i % 3}",),
                 attributes={"topic": f"topic{i % 2}"}) for i in range(n)]


@pytest.fixture
def pair():
    """(url with prefix, a Redis client) for one test's own prefix."""
    with throwaway_prefix() as (url, prefix):
        client = redis.Redis.from_url(url)
        yield f"{url}?prefix={prefix}", prefix, client
        client.close()


def live_on(url: str, catalog=None, **options):
    if catalog is None:
        catalog = new_catalog()
        catalog.upsert(items())
    return new_live_state(catalog, url=url, **options)


def test_the_viewer_state_survives_its_encoding():
    from reelrank.store.redis_live import decode_user, encode_user

    u = UserState("u")
    u.grow()  # what the live state does at a viewer's first event
    u.history.append(HistoryEntry("v1", "play", T0, 19_000, 0.95))
    u.seen.update({"v1", "v2"})
    u.not_interested.add("v3")
    u.following.add("c1")
    u.counts.update({"play": 2, "long_view": 1})
    u.creator_affinity["c1"] = 1.5
    u.hashtag_affinity["t1"] = -0.3
    u.hashtag_long_views["t1"] = 1
    u.creator_long_views["c1"] = 1
    u.length_views[1] = 2  # int keys stay ints
    u.length_long_views[1] = 1
    u.topic_views["topic1"] = 2
    u.topic_long_views["topic1"] = 1
    u.positives.append("v1")
    u.tokens.append(Token("v1", T0, "long_view", 0.95, like=1))
    u.last_ts, u.region, u.device = T0, "BR", "ios"
    u.watch_ms_by_day[T0 // 86_400_000] = 19_000
    back = decode_user("u", encode_user(u))
    assert back == u
    assert back.history.maxlen == u.history.maxlen and back.tokens.maxlen == u.tokens.maxlen
    assert isinstance(back.counts, Counter) and list(back.length_views) == [1]
    # A state an older build wrote as JSON (bytes as Redis returns them, or text) reads the same.
    old = json.dumps(msgpack.unpackb(encode_user(u), raw=False), separators=(",", ":"))
    assert old.startswith("{")
    assert decode_user("u", old.encode()) == u and decode_user("u", old) == u


def test_erasure_leaves_nothing_of_the_viewer(pair):
    url, prefix, client = pair
    live = live_on(url)
    live.apply(Event("e1", "erase-me-42", "v1", T0, "play", watch_ms=19_000, region="BR"))
    live.apply(Event("e2", "erase-me-42", "v2", T0 + 1, "like"))
    live.apply(Event("e3", "keep", "v2", T0 + 2, "like"))
    live.record_served("erase-me-42", ["v3"])
    live.record_served("feed-only-erase-me-43", ["v4"])

    def holding(uid: bytes) -> list:
        found = []
        for key in keys_under(client, prefix):
            if uid in key:
                found.append(key)
                continue
            kind = client.type(key)
            members = {b"set": lambda: client.smembers(key),
                       b"zset": lambda: client.zrange(key, 0, -1),
                       b"hash": lambda: list(client.hgetall(key).items()),
                       b"string": lambda: [client.get(key)]}.get(kind, lambda: [])()
            if any(uid in (m if isinstance(m, bytes) else b"".join(m)) for m in members):
                found.append(key)
        return found

    assert holding(b"erase-me-42") and holding(b"feed-only-erase-me-43")
    live.forget_user("erase-me-42")
    live.forget_user("feed-only-erase-me-43")
    assert holding(b"erase-me-42") == [] and holding(b"feed-only-erase-me-43") == []
    assert live.user("erase-me-42") is None and live.user("keep") is not None


def test_two_writers_of_one_viewer_lose_no_event(pair):
    url, _, _ = pair
    catalog = new_catalog()
    catalog.upsert(items())
    a, b = live_on(url, catalog), live_on(url, catalog)  # two processes' states, one Redis

    def post(live, start: int) -> None:
        for k in range(start, start + 60, 2):
            live.apply(Event(f"e{k}", "u", f"v{k % 6}", T0 + k, "like"))

    threads = [threading.Thread(target=post, args=(x, s)) for x, s in ((a, 0), (b, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    u = a.user("u")
    assert u.counts["like"] == 120 // 2 and len(u.history) == 60
    assert sum(a.item_stats(f"v{i}").likes for i in range(6)) == 60


class Counting:
    """Counts round trips: every send on a connection (a command, or a whole pipeline) is
    followed by reading its replies."""

    def __init__(self, monkeypatch) -> None:
        self.n = 0
        send = redis.connection.Connection.send_packed_command

        def counted(conn, *args, **kw):
            self.n += 1
            return send(conn, *args, **kw)

        monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counted)


def test_round_trips_of_one_event_and_one_feed(pair, monkeypatch):
    url, _, _ = pair
    # Cached values do not expire by age during the test (a loaded machine is slow), so that
    # every round trip counted is one the operation itself needs.
    live = live_on(url, stats_max_age_s=60.0, meta_max_age_s=60.0)
    live.apply(Event("warm", "w", "v0", T0, "play", watch_ms=1000))  # loads the scripts
    live.record_served("w", ["v0"])
    counter = Counting(monkeypatch)
    live.apply(Event("e1", "u", "v1", T0 + 1, "like"))
    assert counter.n == 2  # read the viewer; one script writes everything
    live.apply(Event("e2", "u", "v2", T0 + 2, "like"))
    counter.n = 0
    snap = live.user_snapshot("u")  # viewer, served, version, clock; co-engagement seeds
    assert [h.item_id for h in snap.history] == ["v1", "v2"]
    assert counter.n == 2
    counter.n = 0
    _ = live.clock, live.version  # read with the snapshot
    live.item_stats_many([f"v{i}" for i in range(6)])  # one pipelined read
    assert [live.item_stats(f"v{i}").likes for i in range(6)] == [0, 1, 1, 0, 0, 0]
    live.co_engaged("v1", 10)  # prefetched with the snapshot
    live.record_served("u", ["v3", "v4"])
    assert counter.n == 2
    # A process that never read a counter reads the catalog's ahead: one call, not one each.
    cold = live_on(url, live.catalog, stats_max_age_s=60.0)
    counter.n = 0
    assert [cold.item_stats(f"v{i}").likes for i in range(6)] == [0, 1, 1, 0, 0, 0]
    assert [cold.creator_impressions(f"c{i}") for i in range(2)] == [0, 0]
    assert counter.n == 2
    # A change by another process reaches this one's cache when told (the fan-out) ...
    other = live_on(url, live.catalog, stats_max_age_s=float("inf"))
    other.item_stats("v3")
    live.apply(Event("e3", "x", "v3", T0 + 3, "like"))
    assert other.item_stats("v3").likes == 0  # cached, nobody said
    other.invalidate(items=["v3"])
    assert other.item_stats("v3").likes == 1
    counter.n = 0
    live.apply_many([Event(f"b{k}", f"u{k % 7}", f"v{k % 6}", T0 + 10 + k, "like")
                     for k in range(50)])
    assert counter.n == 2  # a batch: every viewer read at once, every script sent at once
    assert live.user("u1").counts["like"] == 7


def test_batches_from_two_writers_on_the_same_viewers_lose_no_event(pair):
    url, _, _ = pair
    catalog = new_catalog()
    catalog.upsert(items())
    a, b = live_on(url, catalog), live_on(url, catalog)

    def post(live, tag: str) -> None:
        for batch in range(20):
            live.apply_many([Event(f"{tag}{batch}-{k}", f"u{k % 3}", f"v{k % 6}",
                                   T0 + batch * 10 + k, "like") for k in range(9)])

    threads = [threading.Thread(target=post, args=(x, tag)) for x, tag in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for uid in ("u0", "u1", "u2"):
        u = a.user(uid)
        assert u.counts["like"] == 2 * 20 * 3 and len(u.history) == 120
    assert sum(a.item_stats(f"v{i}").likes for i in range(6)) == 2 * 20 * 9


def test_a_rebuild_that_died_before_its_swap_leaves_nothing_for_long(pair):
    from reelrank.store.redis_codec import drop_stale_scratch

    url, prefix, client = pair
    live = live_on(url)
    done = live.empty_like()  # a rebuild that swaps: its scratch prefix goes with the swap
    done.apply(Event("e1", "u", "v1", T0, "like"))
    live.replace_with(done)
    assert client.zcard(prefix + "scratch") == 0 and live.user("u") is not None
    dead = live.empty_like()  # one whose process dies before the swap
    dead.apply(Event("e2", "someone", "v2", T0, "like"))
    dead.flush()
    assert keys_under(client, dead.prefix) and not dead.prefix.startswith(prefix)
    assert drop_stale_scratch(client, prefix) == 0  # not an hour old: perhaps still running
    assert drop_stale_scratch(client, prefix, older_than_s=0) == 1
    assert keys_under(client, dead.prefix) == [] and client.zcard(prefix + "scratch") == 0


def test_one_state_shared_by_request_threads(pair):
    """Feeds and ingestion on one process's state at once, as a server's threads use it."""
    url, _, _ = pair
    # Top lists follow every event (they may lag by trending_refresh_events otherwise).
    live = live_on(url, stats_max_age_s=0.01, meta_max_age_s=0.0, trending_refresh_events=1)
    errors: list = []

    def ingest(tag: str) -> None:
        try:
            for k in range(40):
                live.apply_many([Event(f"{tag}{k}-{j}", f"u{j}", f"v{(k + j) % 6}", T0 + k,
                                       "like") for j in range(3)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def serve() -> None:
        try:
            for k in range(60):
                live.user_snapshot(f"u{k % 3}")
                live.item_stats_many([f"v{i}" for i in range(6)])
                live.popular(3), live.trending(3), live.co_engaged("v1", 5)
                live.record_served(f"u{k % 3}", [f"v{k % 6}"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=f, args=a) for f, a in
               ((ingest, ("a",)), (ingest, ("b",)), (serve, ()), (serve, ()))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [live.user(f"u{j}").counts["like"] for j in range(3)] == [80, 80, 80]
    assert sum(s.likes for s in live.item_stats_many([f"v{i}" for i in range(6)])) == 240
    assert sum(score for _, score in live.popular(6)) == 240 * 2.0  # a like weighs 2
