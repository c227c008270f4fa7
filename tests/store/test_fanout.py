"""Fan-out through the Redis stream: two live states in one test process stand for two API
processes on one Redis; each sees the other's events, catalog upserts and erasures, and a
trainer's consumer group hands a dead consumer's messages to the one that takes over."""

from __future__ import annotations

import time

import pytest

from reelrank.store import new_catalog
from reelrank.store.fanout import Fanout, GroupReader, SharedCatalog, Subscriber, live_handler
from reelrank.store.redis_live import RedisLiveState
from reelrank.types import Event, Item
from tests.polling import wait_for
from tests.rd import keys_under, throwaway_prefix

redis = pytest.importorskip("redis")
T0 = 1_700_000_000_000


def items(ids) -> list[Item]:
    return [Item(f"v{i}", f"c{i % 2}", 20_000, T0 - 10_000 + i, hashtags=(f"t{i}",)) for i in ids]


class Process:
    """What one API process holds: its catalog, its view of the live state, a subscriber."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.fanout = Fanout(self.client, prefix)
        self.catalog = SharedCatalog(new_catalog(), self.fanout)
        # Cached counters never expire by age here: only the fan-out can refresh them.
        self.live = RedisLiveState(self.catalog, self.client, prefix=prefix,
                                   fanout=self.fanout, stats_max_age_s=float("inf"),
                                   meta_max_age_s=float("inf"))
        self.erased: list[str] = []
        self.subscriber = Subscriber(redis.Redis.from_url(url), self.fanout, live_handler(
            self.live, self.catalog, on_erase=self.erased.append)).start()

    def close(self) -> None:
        self.subscriber.stop()
        self.subscriber.client.close()
        self.client.close()


@pytest.fixture
def two():
    with throwaway_prefix() as (url, prefix):
        a, b = Process(url, prefix), Process(url, prefix)
        yield a, b
        a.close()
        b.close()


def test_each_process_sees_the_others_events_items_and_erasures(two):
    a, b = two
    a.catalog.upsert(items(range(4)))  # posted to A
    assert wait_for(lambda: len(b.catalog) == 4), "B's catalog never got A's items"
    assert b.catalog.get("v3") == items([3])[0]
    assert b.live.item_stats("v1").likes == 0 and b.live.creator_impressions("c1") == 0

    a.live.apply(Event("e1", "u", "v1", T0, "like"))
    a.live.apply(Event("e2", "u", "v1", T0 + 1, "impression"))
    # The viewer's own state is read from Redis on every request: at once, no fan-out needed.
    assert [h.item_id for h in b.live.user_snapshot("u").history] == ["v1"]
    # B's cached counters follow through the stream (they never expire by age here).
    assert wait_for(lambda: b.live.item_stats("v1").likes == 1)
    assert wait_for(lambda: b.live.creator_impressions("c1") == 1)
    assert wait_for(lambda: b.live.clock == T0 + 1)

    b.live.apply(Event("e3", "w", "v2", T0 + 2, "share"))  # and the other way
    assert wait_for(lambda: a.live.item_stats("v2").shares == 1)
    a.live.apply(Event("e4", "w", "v1", T0 + 3, "like"))  # co-engagement of v2 and v1
    assert wait_for(lambda: [i for i, _ in b.live.co_engaged("v2", 5)] == ["v1"])
    # Own messages skipped; the subscribers run on their own threads, so the counts are awaited.
    assert wait_for(lambda: a.subscriber.received == 1 and b.subscriber.received >= 3)

    a.live.forget_user("u")  # erased through A
    assert wait_for(lambda: b.erased == [a.fanout.digest("u")])
    assert b.live.user("u") is None
    # The rebuild an erasure starts replaces the state's keys, not the stream under them
    # (nor the trainers' consumer group on it).
    GroupReader(a.client, a.fanout, "trainers")
    assert b.live.item_stats("v2").shares == 1  # cached in B
    a.live.replace_with(a.live.empty_like())  # the log now holds nothing: neither does Redis
    assert [g["name"] for g in a.client.xinfo_groups(a.fanout.key)] == [b"trainers"]
    assert wait_for(lambda: b.live.item_stats("v2").shares == 0)  # B was told
    a.live.apply(Event("e5", "w", "v3", T0 + 4, "like"))
    assert wait_for(lambda: b.live.item_stats("v3").likes == 1)
    for key in keys_under(a.client, a.fanout.prefix):
        if a.client.type(key) == b"stream":
            assert not any(b'"u"' in v[b"m"] for _, v in a.client.xrange(key))


def test_a_trainer_taking_over_claims_what_the_dead_one_left_unacknowledged(two):
    a, _ = two
    a.catalog.upsert(items(range(2)))
    group = GroupReader(a.client, a.fanout, "trainers")
    got = group.read("t1", count=10)
    assert [m["kind"] for _, m in got] == ["items"]
    for k in range(3):
        a.live.apply(Event(f"e{k}", "u", "v1", T0 + k, "like"))
    first = group.read("t1", count=2)  # t1 reads two events, then dies before acknowledging
    assert [m["event"][0] for _, m in first] == ["e0", "e1"]
    group.ack([i for i, _ in got])
    rest = group.read("t2", count=10)  # the one it had not read goes to the next reader
    assert [m["event"][0] for _, m in rest] == ["e2"]
    assert group.ack([i for i, _ in rest]) == 1
    assert group.claim("t2", min_idle_ms=60_000) == []  # not idle long enough yet
    time.sleep(0.05)
    claimed = group.claim("t2", min_idle_ms=10)
    assert [m["event"][0] for _, m in claimed] == ["e0", "e1"]
    assert group.ack([i for i, _ in claimed]) == 2
    assert group.claim("t3", min_idle_ms=0) == []  # nothing left pending
