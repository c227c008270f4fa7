"""``reelrank rebuild-live``: a Redis live state flushed and rebuilt from the event log holds what
the in-memory backend holds when fed the same log (on SQLite and on PostgreSQL), and what feeds
sent survives a rebuild that does not flush."""

from __future__ import annotations

import contextlib
import dataclasses
import random

import pytest
from typer.testing import CliRunner

from reelrank.cli import app
from reelrank.store import new_catalog, new_live_state, open_store
from reelrank.store.rebuild import load_catalog, replay
from reelrank.types import HOUR_MS, Event, Item, UserSettings
from tests import pg
from tests.rd import keys_under, throwaway_prefix

redis = pytest.importorskip("redis")
T0 = 1_700_000_000_000
TYPES = ["impression"] * 6 + ["play"] * 6 + ["skip"] * 3 + [
    "like", "unlike", "share", "comment", "follow", "unfollow", "not_interested", "rewatch",
    "profile_visit", "report"]


def world(seed: int = 7) -> tuple[list[Item], list[Event]]:
    rng = random.Random(seed)
    items = [Item(f"v{i}", f"c{i % 7}", rng.choice([8_000, 15_000, 30_000, 90_000]),
                  T0 - 50 * HOUR_MS + i * HOUR_MS, hashtags=(f"t{i % 5}", f"t{i % 3 + 5}"),
                  attributes={"topic": f"k{i % 4}"} if i % 2 else {})
             for i in range(40)]
    events, ts = [], T0
    for k in range(1500):
        ts += rng.randrange(0, 4 * 60_000)  # about 50 hours: the trending window moves
        t = rng.choice(TYPES)
        item = rng.choice(items)
        watch = (int(item.duration_ms * rng.uniform(0.05, 1.6))
                 if t in ("play", "skip", "rewatch") else None)
        events.append(Event(f"e{k}", f"u{rng.randrange(25)}", item.item_id, ts, t,
                            watch_ms=watch, region=rng.choice([None, "BR", "DE"]),
                            device=rng.choice([None, "ios"])))
    return items, events


@contextlib.contextmanager
def a_store(kind: str, tmp_path):
    if kind == "sqlite":
        store = open_store(tmp_path / "reelrank.db")
        yield str(tmp_path / "reelrank.db"), store
        store.close()
    else:
        with pg.throwaway_database() as url:
            store = open_store(url)
            yield url, store
            store.close()


def assert_same(mem, red, items: list[Item]) -> None:
    assert sorted(red.user_ids()) == sorted(mem.user_ids())
    for uid in mem.user_ids():
        a, b = mem.user(uid), red.user(uid)
        assert dataclasses.replace(b, served=a.served) == a, uid
    for it in items:
        a, b = mem.item_stats(it.item_id), red.item_stats(it.item_id)
        assert dataclasses.replace(b, watch_ratio_sum=a.watch_ratio_sum) == a, it.item_id
        assert b.watch_ratio_sum == pytest.approx(a.watch_ratio_sum, rel=1e-12, abs=1e-12)
        assert sorted(red.co_engaged(it.item_id, 100)) == sorted(mem.co_engaged(it.item_id, 100))
        assert red.creator_impressions(it.creator_id) == mem.creator_impressions(it.creator_id)
    assert red.popular(100) == mem.popular(100)
    assert red.trending(100) == mem.trending(100) and mem.trending(100)
    for region in ("BR", "DE", "XX"):
        assert red.popular_in_region(region, 100) == mem.popular_in_region(region, 100)
    assert red.clock == mem.clock


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_flushed_prefix_rebuilt_from_the_log_equals_memory(kind, tmp_path):
    items, events = world()
    with a_store(kind, tmp_path) as (store_url, store), throwaway_prefix() as (url, prefix):
        store.upsert_items(items)
        store.append_events(events[:700])
        # One viewer refreshed their feed half-way: their earlier events keep no interests.
        store.put_settings(UserSettings("u3", interests_reset_seq=store.last_seq()))
        store.append_events(events[700:])
        live_url = f"{url}?prefix={prefix}"

        mem = new_live_state(new_catalog(), trending_refresh_events=1)
        load_catalog(store, mem)
        replay(store, mem)

        red = new_live_state(new_catalog(), url=live_url, trending_refresh_events=1)
        load_catalog(store, red)
        replay(store, red)  # as API processes would have, event by event
        assert_same(mem, red, items)
        red.record_served("u1", ["v1", "v2"])

        client = redis.Redis.from_url(url)
        for key in keys_under(client, prefix):  # what a Redis restart without a dump leaves
            client.delete(key)
        assert red.user("u1") is None

        done = CliRunner().invoke(app, ["rebuild-live", "--store", store_url,
                                        "--live", live_url, "--log-level", "warning"])
        assert done.exit_code == 0, done.output
        assert "from 1500 events" in done.output
        fresh = new_live_state(new_catalog(), url=live_url, trending_refresh_events=1)
        load_catalog(store, fresh)
        assert_same(mem, fresh, items)
        assert not [k for k in client.scan_iter(match="~*") if prefix.encode() in k]

        # Without --flush what feeds sent (not in the log) is kept across a rebuild.
        fresh.record_served("u1", ["v5", "v6"])
        done = CliRunner().invoke(app, ["rebuild-live", "--store", store_url,
                                        "--live", live_url, "--log-level", "warning"])
        assert done.exit_code == 0, done.output
        assert list(fresh.user("u1").served) == ["v5", "v6"]
        assert_same(mem, fresh, items)
        client.close()
