"""Serving benchmark: ingestion through HTTP and feed latency on a synthetic world.

What it does, in one run:
1. builds a synthetic world (default 100,000 videos, 10,000 viewers) and writes its catalog and a
   background history straight into a fresh embedded store;
2. starts the real server (`python -m reelrank.service.server`, auth on) on a free local port;
3. ingestion: POSTs further simulated events to /v1/events in batches of 1,000 and reports
   events/s (overall and the median batch);
4. feed latency: GET /v1/feed for random viewers, one request at a time, p50/p99 measured by the
   client; /healthz is measured the same way in the same run as the floor that HTTP alone costs.

Results go to benchmarks/results/serving.json and serving.md with the command that made them.

    python benchmarks/bench_serving.py                # the committed run
    python benchmarks/bench_serving.py --items 5000 --users 500 --feeds 200   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reelrank.eval.simulator import build_world, generate_history  # noqa: E402
from reelrank.importers import import_into  # noqa: E402
from reelrank.store import open_store  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[idx]


def wait_ready(base: str, proc: subprocess.Popen, timeout_s: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def event_json(e) -> dict:
    d = {k: v for k, v in dataclasses.asdict(e).items() if v is not None}
    ctx = {k: d.pop(k) for k in ("device", "region", "source", "session_id") if k in d}
    if ctx:
        d["context"] = ctx
    return d


def train_and_time_ranking(store, data_dir: Path, world, seed: int) -> tuple[dict, dict]:
    """Publish a model (one epoch each: serving speed does not depend on how long it trained),
    then time ranking 500 candidates with it and with the heuristic scorer, in this process."""
    from reelrank.engine import Engine
    from reelrank.pipeline.context import FeedRequest
    from reelrank.pipeline.rank import HeuristicScorer
    from reelrank.registry import ModelRegistry
    from reelrank.train.batch import TrainConfig, train_from_store
    from reelrank.train.ranker import RankerConfig
    from reelrank.train.retrieval import RetrievalConfig

    from itertools import islice

    from reelrank.store import open_store

    registry = ModelRegistry(data_dir / "models")
    cfg = TrainConfig(retrieval=RetrievalConfig(epochs=1), ranker=RankerConfig(epochs=1),
                      holdout=0.0, seed=seed)
    # Serving cost does not depend on how much the model saw: train on every video but only
    # the first 60,000 events, to keep the benchmark short. Serving loads the whole catalog.
    subset = open_store(data_dir / "train-subset")
    subset.upsert_items(store.iter_items())
    subset.append_events(e for _, e in islice(store.iter_events(), 60_000))
    result = train_from_store(subset, registry, cfg, progress=False)
    subset.close()
    engine = Engine(store, registry=registry).load()
    gc.collect()
    gc.freeze()  # as the server does once it has loaded (reelrank.service.server.prepare)
    rng = random.Random(seed)
    item_ids = [it.item_id for it in world.items]
    users = [v.user_id for v in world.users]
    timing = {}
    for name in ("neural", "heuristic"):
        scorer = engine.pipeline.scorer if name == "neural" else HeuristicScorer()
        samples = []
        for k in range(1020):  # p99 over 1,000 requests: the 10th slowest, not the 2nd
            ctx = engine.context(FeedRequest(rng.choice(users), n=500))
            from reelrank.types import Candidate

            cands = [Candidate(i, "bench") for i in rng.sample(item_ids, 500)]
            t = time.perf_counter()
            scorer.score(ctx, cands)
            if k >= 20:  # warm-up
                samples.append((time.perf_counter() - t) * 1000)
        timing[name] = {"requests": len(samples), "p50_ms": round(statistics.median(samples), 2),
                        "p99_ms": round(percentile(samples, 99), 2)}
    return {"version": result.version, "seconds": round(result.seconds, 1)}, timing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--history-sessions", type=int, default=1)
    ap.add_argument("--history-swipes", type=int, default=20)
    ap.add_argument("--ingest-batches", type=int, default=60)
    ap.add_argument("--feeds", type=int, default=2000)
    ap.add_argument("--trainer", choices=("process", "thread", "off"), default="process",
                    help="the server's online trainer (its --trainer): a child process (the "
                         "default), a thread of the server, or none")
    ap.add_argument("--no-trainer", action="store_true", help="same as --trainer off")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--train", action="store_true",
                    help="train and publish the neural models first, so the server serves them; "
                         "also times ranking 500 candidates in-process (model vs heuristic)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving")
    args = ap.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="reelrank-bench-"))
    t0 = time.perf_counter()
    world = build_world(n_users=args.users, n_items=args.items,
                        n_creators=max(50, args.items // 20), seed=args.seed)
    store = open_store(data_dir)
    report = import_into(store, world.items,
                         generate_history(world, args.history_sessions, args.history_swipes,
                                          seed=args.seed), progress=False)
    rank_timing = train_info = None
    if args.train:
        train_info, rank_timing = train_and_time_ranking(store, data_dir, world, args.seed)
    store.close()
    setup_s = time.perf_counter() - t0
    print(f"world: {report.items} items, {report.events} background events ({setup_s:.0f} s)")

    trainer = "off" if args.no_trainer else args.trainer
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    learning_ms: list[float] = []
    idle_wait_s = None
    proc = subprocess.Popen(
        [sys.executable, "-m", "reelrank.service.server", "--data-dir", str(data_dir),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--trainer", trainer],
        cwd=ROOT)
    try:
        startup_s = wait_ready(base, proc, timeout_s=600)
        keys = json.loads((data_dir / "keys.json").read_text())
        print(f"server ready in {startup_s:.1f} s (rebuilds live state from the log)")
        ingest = {"Authorization": f"Bearer {keys['ingest']}"}
        serve = {"Authorization": f"Bearer {keys['serve']}"}
        client = httpx.Client(base_url=base, timeout=60.0)

        # -- ingestion ---------------------------------------------------------------------------
        fresh = generate_history(world, 1, args.history_swipes, seed=args.seed + 1)
        events = []
        for e in fresh:
            events.append(event_json(dataclasses.replace(e, event_id="bench-" + e.event_id)))
            if len(events) >= args.ingest_batches * 1000:
                break
        batches = [events[i:i + 1000] for i in range(0, len(events), 1000)]
        rates, total_t = [], 0.0
        for batch in batches:
            body = json.dumps({"events": batch})
            t = time.perf_counter()
            r = client.post("/v1/events", content=body,
                            headers={**ingest, "Content-Type": "application/json"})
            dt = time.perf_counter() - t
            r.raise_for_status()
            total_t += dt
            rates.append(len(batch) / dt)
        n_ingested = sum(len(b) for b in batches)

        # -- feed latency ------------------------------------------------------------------------
        rng = random.Random(args.seed)
        user_ids = [v.user_id for v in world.users]
        for _ in range(50):  # warm-up
            client.get("/v1/feed", params={"user_id": rng.choice(user_ids), "n": 10}, headers=serve)
        if args.train and trainer != "off":
            # The trainer now learns the burst just ingested (and, as a fresh process, the log
            # after the model's training data): feeds while it does, then wait until it is idle.
            admin = {"Authorization": f"Bearer {keys['admin']}"}
            for _ in range(min(500, args.feeds)):
                t = time.perf_counter()
                client.get("/v1/feed", params={"user_id": rng.choice(user_ids), "n": 10},
                           headers=serve).raise_for_status()
                learning_ms.append((time.perf_counter() - t) * 1000)
            t0, quiet, seen = time.perf_counter(), 0, None
            while quiet < 5 and time.perf_counter() - t0 < 900:
                st = client.get("/v1/admin/trainer", headers=admin).json()
                trainer_st = st["trainer"] or {}
                now = (st["serving"]["version"], trainer_st.get("steps"))
                # Idle: running (not replaying the log), nothing waiting, nothing new for 5 s.
                idle = (trainer_st.get("state") == "running"
                        and not trainer_st.get("rows_waiting", 1))
                quiet = quiet + 1 if now == seen and idle else 0
                seen = now
                time.sleep(1.0)
            idle_wait_s = round(time.perf_counter() - t0, 1)
            print(f"trainer idle after {idle_wait_s} s more")
        feed_ms, health_ms = [], []
        for i in range(args.feeds):
            t = time.perf_counter()
            r = client.get("/v1/feed", params={"user_id": rng.choice(user_ids), "n": 10},
                           headers=serve)
            feed_ms.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            if i % 4 == 0:
                t = time.perf_counter()
                client.get("/healthz")
                health_ms.append((time.perf_counter() - t) * 1000)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    result = {
        "command": "python benchmarks/bench_serving.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "world": {"items": report.items, "users": args.users,
                  "background_events": report.events},
        "startup_s": round(startup_s, 2),
        "ingest": {"batch_size": 1000, "batches": len(batches), "events": n_ingested,
                   "events_per_s_overall": round(n_ingested / total_t),
                   "events_per_s_median_batch": round(statistics.median(rates))},
        "trainer": trainer,
        "feed": {"requests": len(feed_ms), "n": 10,
                 "p50_ms": round(statistics.median(feed_ms), 2),
                 "p99_ms": round(percentile(feed_ms, 99), 2)},
        "healthz_baseline": {"requests": len(health_ms),
                             "p50_ms": round(statistics.median(health_ms), 2),
                             "p99_ms": round(percentile(health_ms, 99), 2)},
    }
    if learning_ms:
        result["feed_while_learning"] = {
            "requests": len(learning_ms), "n": 10,
            "p50_ms": round(statistics.median(learning_ms), 2),
            "p99_ms": round(percentile(learning_ms, 99), 2), "idle_after_s": idle_wait_s}
    if args.train:
        result["models"] = train_info
        result["rank_500_in_process"] = rank_timing
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Serving benchmark", "",
        f"Command: `{result['command']}` on {result['machine']['cpus']} CPUs, "
        f"Python {result['machine']['python']}.", "",
        f"World: {report.items:,} videos, {args.users:,} viewers, "
        f"{report.events:,} background events; server start-up (live-state rebuild) "
        f"{result['startup_s']} s.", "",
        "| measure | value |", "|---|---|",
        f"| ingestion, batches of 1,000 through HTTP (overall) | "
        f"{result['ingest']['events_per_s_overall']:,} events/s |",
        f"| ingestion, median batch | {result['ingest']['events_per_s_median_batch']:,} events/s |",
        f"| feed (n=10) p50 | {result['feed']['p50_ms']} ms |",
        f"| feed (n=10) p99 | {result['feed']['p99_ms']} ms |",
        *([f"| feed (n=10) p50 / p99 while the trainer learns the burst just ingested "
           f"(first {len(learning_ms)} requests after it) | "
           f"{result['feed_while_learning']['p50_ms']} / "
           f"{result['feed_while_learning']['p99_ms']} ms |"] if learning_ms else []),
        f"| /healthz p50 / p99 (HTTP floor, same run) | {result['healthz_baseline']['p50_ms']} / "
        f"{result['healthz_baseline']['p99_ms']} ms |", "",
    ]
    if args.train:
        md[-1:-1] = [
            f"| rank 500 candidates in-process, neural ranker p50 / p99 | "
            f"{rank_timing['neural']['p50_ms']} / {rank_timing['neural']['p99_ms']} ms |",
            f"| rank 500 candidates in-process, heuristic scorer p50 / p99 (same run) | "
            f"{rank_timing['heuristic']['p50_ms']} / {rank_timing['heuristic']['p99_ms']} ms |",
        ]
        md.insert(5, f"Models: trained by `train_from_store` ({train_info['seconds']} s; "
                     f"version {train_info['version']}); the feed uses the retrieval source "
                     f"and the neural ranker. Online trainer: `--trainer {trainer}`"
                     + (f"; the feed figures are taken once it was idle again "
                        f"({idle_wait_s} s after the {len(learning_ms)} feeds taken during "
                        "the burst)"
                        if idle_wait_s is not None else "") + ".\n")
    args.out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
