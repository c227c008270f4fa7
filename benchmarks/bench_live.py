"""Live-state benchmark: the in-memory default beside the Redis live state, in the same run.

A synthetic world (--users viewers, --items videos, two background sessions of 20 swipes each
per viewer) is written to a throwaway SQLite store, then loaded into each backend: the
in-memory one by replaying the log event by event (what `reelrank serve` does at start), the
Redis one by `rebuild_live` (what `reelrank rebuild-live` does). Then, on each backend:

- operations per second, one client thread: ``apply`` of new events (one at a time, and in
  batches of 500: ``apply_many`` on Redis), ``user_snapshot`` of random viewers,
  ``record_served`` of 10 items, the counters of 500 random videos (on Redis the read a cache
  miss makes, past the cache: one script call);
- one feed: ``Engine.feed`` through the served pipeline without trained models (the heuristic
  scorer, every candidate source), for random viewers, after a warm-up; feeds/s, p50/p99, and
  the round trips to Redis each feed made (counted on the client);
- Redis's size: keys and bytes (``MEMORY USAGE``) per viewer, per video and in all (``INFO
  memory``'s used_memory before and after the load); Redis's own CPU per event and per feed
  (``INFO cpu``: the server is on the same machine, nothing else uses it meanwhile);
- fan-out latency: one state applies an event, another (its own connection, as another process
  would have) gets the stream message; p50/p99 over --fanout-events.

    python benchmarks/bench_live.py                       # 2,000 viewers, 5,000 videos
    python benchmarks/bench_live.py --users 200 --items 500 --out /tmp/quick

Results go to benchmarks/results/live_state.json and .md, with the command that made them.
Redis: REELRANK_BENCH_REDIS_URL or redis://127.0.0.1:6379/15, under a prefix of its own that is
deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from reelrank.engine import Engine  # noqa: E402
from reelrank.eval.simulator import build_world, generate_history  # noqa: E402
from reelrank.importers import import_into  # noqa: E402
from reelrank.store import new_catalog, new_live_state, open_store  # noqa: E402
from reelrank.store.fanout import Fanout, Subscriber  # noqa: E402
from reelrank.store.rebuild import load_catalog, rebuild_live, replay  # noqa: E402
from reelrank.store.redis_live import RedisLiveState  # noqa: E402
from reelrank.types import Event, FeedRequest  # noqa: E402


class RoundTrips:
    """Counts round trips to Redis: every send on a connection (one command, or a whole
    pipeline) is followed by reading its replies."""

    def __init__(self) -> None:
        self.n = 0
        send = redis.connection.Connection.send_packed_command

        def counted(conn, *args, **kw):
            self.n += 1
            return send(conn, *args, **kw)

        redis.connection.Connection.send_packed_command = counted


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    for k in range(n):
        fn(k)
    return n / (time.perf_counter() - t0)


def redis_cpu_s(live) -> float:
    """CPU seconds the Redis server has used (user and system); 0 for the in-memory state."""
    if not isinstance(live, RedisLiveState):
        return 0.0
    cpu = live.client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def ops(live, users: list[str], item_ids: list[str], n: int, seed: int) -> dict:
    rng = random.Random(seed)
    ts0 = live.clock + 1
    picks = [(rng.choice(users), rng.choice(item_ids)) for _ in range(n)]
    kinds = ["impression", "play", "skip", "like"]

    def apply(k: int) -> None:
        u, i = picks[k]
        live.apply(Event(f"bench-{seed}-{k}", u, i, ts0 + k, kinds[k % 4],
                         watch_ms=5_000 if k % 4 in (1, 2) else None))

    batch = 500
    more = [Event(f"bench-{seed}-b{k}", picks[k][0], picks[k][1], ts0 + n + k, kinds[k % 4],
                  watch_ms=5_000 if k % 4 in (1, 2) else None) for k in range(n)]
    cpu0, t0 = redis_cpu_s(live), time.perf_counter()
    for k in range(0, n, batch):
        if isinstance(live, RedisLiveState):
            live.apply_many(more[k:k + batch])
        else:
            for e in more[k:k + batch]:
                live.apply(e)
    many = n / (time.perf_counter() - t0)
    cpu_per_event = (redis_cpu_s(live) - cpu0) / n * 1e6
    out = {"apply": rate(apply, n), "apply_batches_of_500": many,
           "redis_cpu_us_per_event": cpu_per_event,
           "user_snapshot": rate(lambda k: live.user_snapshot(picks[k][0]), n),
           "record_served": rate(lambda k: live.record_served(
               picks[k][0], [rng.choice(item_ids) for _ in range(10)]), n)}
    batches = [[rng.choice(item_ids) for _ in range(500)] for _ in range(max(20, n // 20))]

    def stats(k: int) -> None:
        if isinstance(live, RedisLiveState):
            live._fetch_stats(batches[k])  # what a cache miss reads: 500 counters, one call
        else:
            live.item_stats_many(batches[k])

    out["item_stats_many_500"] = rate(stats, len(batches))
    return out


def feeds(engine: Engine, users: list[str], n: int, seed: int,
          counter: RoundTrips | None) -> dict:
    rng = random.Random(seed)
    for _ in range(20):  # warm-up: top lists, caches, the exploration pool
        engine.feed(FeedRequest(user_id=rng.choice(users), n=10))
    times, trips = [], []
    cpu0 = redis_cpu_s(engine.live)
    for _ in range(n):
        before = counter.n if counter else 0
        t0 = time.perf_counter()
        engine.feed(FeedRequest(user_id=rng.choice(users), n=10))
        times.append((time.perf_counter() - t0) * 1000)
        if counter:
            trips.append(counter.n - before)
    out = {"feeds_per_s": n / (sum(times) / 1000), "p50_ms": pct(times, 0.5),
           "p99_ms": pct(times, 0.99),
           "redis_cpu_us_per_feed": (redis_cpu_s(engine.live) - cpu0) / n * 1e6}
    if counter:
        out.update(round_trips_mean=statistics.mean(trips), round_trips_p50=pct(trips, 0.5),
                   round_trips_max=max(trips))
    return out


def sizes(client, prefix: str, users: list[str], items: list[str], before: int) -> dict:
    rng = random.Random(1)
    sample_users = rng.sample(users, min(500, len(users)))
    per_user = [sum(client.memory_usage(prefix + kind + u) or 0 for kind in ("u:", "s:"))
                for u in sample_users]
    sample_items = rng.sample(items, min(500, len(items)))
    per_item = [sum(client.memory_usage(prefix + kind + i) or 0 for kind in ("i:", "co:"))
                for i in sample_items]
    keys = kinds = 0
    counts: dict[str, int] = {}
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    for key in client.scan_iter(match=pattern, count=5000):
        rest = key.decode()[len(prefix):]
        kind = rest.split(":", 1)[0] + (":" if ":" in rest else "")
        counts[kind] = counts.get(kind, 0) + 1
        keys += 1
    kinds = len(counts)
    used = int(client.info("memory")["used_memory"]) - before
    return {"keys": keys, "key_kinds": kinds, "keys_by_kind": counts,
            "viewer_bytes_mean": statistics.mean(per_user),
            "viewer_bytes_p99": pct(per_user, 0.99),
            "video_bytes_mean": statistics.mean(per_item),
            "used_memory_delta": used, "used_memory_per_viewer": used / len(users)}


def fanout_latency(url: str, prefix: str, catalog, users: list[str], items: list[str],
                   n: int) -> dict:
    writer_client, reader_client = redis.Redis.from_url(url), redis.Redis.from_url(url)
    fan_a, fan_b = Fanout(writer_client, prefix), Fanout(reader_client, prefix)
    a = RedisLiveState(catalog, writer_client, prefix=prefix, fanout=fan_a)
    got: dict[str, float] = {}
    done = threading.Event()

    def handle(body: dict) -> None:
        if body.get("kind") == "event":
            got[body["event"][0]] = time.perf_counter()
            if len(got) >= n:
                done.set()

    sub = Subscriber(redis.Redis.from_url(url), fan_b, handle, block_ms=1000).start()
    rng = random.Random(3)
    sent: dict[str, float] = {}
    ts0 = a.clock + 1
    for k in range(n):
        eid = f"fan-{k}"
        sent[eid] = time.perf_counter()
        a.apply(Event(eid, rng.choice(users), rng.choice(items), ts0 + k, "like"))
        time.sleep(0.002)  # one at a time, not a burst: the latency of one event
    done.wait(10)
    sub.stop()
    lat = [(got[e] - sent[e]) * 1000 for e in sent if e in got]
    return {"events": n, "received": len(lat), "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99), "max_ms": max(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--ops", type=int, default=2000, help="operations timed per kind")
    ap.add_argument("--feeds", type=int, default=300)
    ap.add_argument("--fanout-events", type=int, default=500)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "live_state"))
    args = ap.parse_args()
    url = os.environ.get("REELRANK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    prefix = f"rrbench-{os.getpid()}:"
    client = redis.Redis.from_url(url)
    result: dict = {"command": "python benchmarks/bench_live.py " + " ".join(sys.argv[1:]),
                    "load_average_at_start": os.getloadavg()[0],
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
                    "redis": client.info("server")["redis_version"], "users": args.users,
                    "items": args.items}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "reelrank.db")
        world = build_world(n_users=args.users, n_items=args.items,
                            n_creators=max(20, args.items // 15), seed=7)
        history = generate_history(world, n_sessions_per_user=2, swipes_per_session=20, seed=7)
        report = import_into(store, world.items, history, progress=False, desc="synthetic")
        result["events"] = report.events
        item_ids = [it.item_id for it in world.items]

        mem = new_live_state(new_catalog(), background_refresh=True)
        load_catalog(store, mem)
        t0 = time.perf_counter()
        replay(store, mem)
        result["load"] = {"memory_replay_events_per_s": report.events / (time.perf_counter() - t0)}
        users = mem.user_ids()

        before = int(client.info("memory")["used_memory"])
        red = RedisLiveState.from_url(new_catalog(), f"{url}?prefix={prefix}")
        try:
            load_catalog(store, red)
            t0 = time.perf_counter()
            rebuild_live(store, red)
            result["load"]["redis_rebuild_events_per_s"] = (
                report.events / (time.perf_counter() - t0))
            result["ops_per_s"] = {"memory": ops(mem, users, item_ids, args.ops, 11),
                                   "redis": ops(red, users, item_ids, args.ops, 11)}
            counter = RoundTrips()
            result["feed"] = {
                "memory": feeds(Engine(store, live=mem), users, args.feeds, 5, None),
                "redis": feeds(Engine(store, live=red), users, args.feeds, 5, counter)}
            # After the feeds, so that what feeds sent (the second key of each viewer) counts.
            result["redis_size"] = sizes(red.client, prefix, users, item_ids, before)
            result["fanout"] = fanout_latency(url, prefix, red.catalog, users, item_ids,
                                              args.fanout_events)
        finally:
            red.clear()
            store.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(report_md(result))
    print(report_md(result))


def report_md(r: dict) -> str:
    o, f, s, L = r["ops_per_s"], r["feed"], r["redis_size"], r["load"]
    lines = [
        "# Live state: in memory and in Redis",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {r['machine']}; Redis {r['redis']} on loopback, same machine; load "
        f"average {r['load_average_at_start']:.1f} at the start (a shared machine: the "
        "absolute figures are slower than on a quiet one, the two backends ran side by side)  ",
        f"World: {r['users']:,} viewers, {r['items']:,} videos, {r['events']:,} events "
        "(synthetic, two sessions of 20 swipes per viewer).",
        "",
        "## Operations per second (one client thread)",
        "",
        "| operation | memory | Redis | Redis round trips |",
        "|---|---|---|---|",
        f"| apply one event | {o['memory']['apply']:,.0f} | {o['redis']['apply']:,.0f} | 2 |",
        f"| apply, batches of 500 (Redis: apply_many) | "
        f"{o['memory']['apply_batches_of_500']:,.0f} | "
        f"{o['redis']['apply_batches_of_500']:,.0f} | 2 per batch |",
        f"| user_snapshot | {o['memory']['user_snapshot']:,.0f} | "
        f"{o['redis']['user_snapshot']:,.0f} | 1-2 |",
        f"| record_served (10 items) | {o['memory']['record_served']:,.0f} | "
        f"{o['redis']['record_served']:,.0f} | 1 |",
        f"| counters of 500 videos (Redis: read past the cache) | "
        f"{o['memory']['item_stats_many_500']:,.0f} | "
        f"{o['redis']['item_stats_many_500']:,.0f} | 1 |",
        f"| load the world | {L['memory_replay_events_per_s']:,.0f} events/s (replay) | "
        f"{L['redis_rebuild_events_per_s']:,.0f} events/s (rebuild-live) | pipelines of 2,000 |",
        "",
        f"Redis server CPU per event applied in batches (INFO cpu, user + system): "
        f"{o['redis']['redis_cpu_us_per_event']:,.0f} µs, about "
        f"{1e6 / max(o['redis']['redis_cpu_us_per_event'], 1e-9):,.0f} events/s for one Redis "
        "core (Redis runs commands on one thread).",
        "",
        "## One feed (Engine.feed, served pipeline without trained models, n=10)",
        "",
        "| backend | feeds/s | p50 ms | p99 ms | Redis round trips per feed |",
        "|---|---|---|---|---|",
        f"| memory | {f['memory']['feeds_per_s']:,.0f} | {f['memory']['p50_ms']:.2f} | "
        f"{f['memory']['p99_ms']:.2f} | - |",
        f"| Redis | {f['redis']['feeds_per_s']:,.0f} | {f['redis']['p50_ms']:.2f} | "
        f"{f['redis']['p99_ms']:.2f} | mean {f['redis']['round_trips_mean']:.1f}, median "
        f"{f['redis']['round_trips_p50']}, max {f['redis']['round_trips_max']} |",
        "",
        f"Redis server CPU per feed: {f['redis']['redis_cpu_us_per_feed']:,.0f} µs.",
        "",
        "## Redis size",
        "",
        f"- keys: {s['keys']:,} ({', '.join(f'{k} {v:,}' for k, v in sorted(s['keys_by_kind'].items()))})",
        f"- per viewer: at most 2 keys (the state; what feeds sent, once a feed was served), "
        f"{s['viewer_bytes_mean']:,.0f} bytes on average (p99 {s['viewer_bytes_p99']:,.0f}), "
        "by `MEMORY USAGE` of a sample of 500",
        f"- per video: {s['video_bytes_mean']:,.0f} bytes on average (counters and "
        "co-engagement)",
        f"- in all: used_memory grew by {s['used_memory_delta'] / 1e6:,.1f} MB, "
        f"{s['used_memory_per_viewer']:,.0f} bytes per viewer with the videos' keys included",
        "",
        "## Fan-out",
        "",
        f"One event applied at a time by one state; another, on its own connection, gets the "
        f"stream message: p50 {r['fanout']['p50_ms']:.2f} ms, p99 {r['fanout']['p99_ms']:.2f} ms, "
        f"max {r['fanout']['max_ms']:.2f} ms ({r['fanout']['received']} of "
        f"{r['fanout']['events']} received).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
