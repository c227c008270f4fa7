"""Real-time benchmarks: event-to-feed and event-to-weights through HTTP, the KuaiRand replay with
online updates on and off, and the synthetic world's cold-start curves.

    python benchmarks/bench_realtime.py serve      # event-to-feed, event-to-weights (realtime.md)
    python benchmarks/bench_realtime.py replay --dataset kuairand:PATH   # realtime-replay.md
    python benchmarks/bench_realtime.py coldstart  # realtime-coldstart.md

``serve``: a synthetic world (default 100,000 videos) with a background history, a model trained
and published, then the real server (``python -m reelrank.service.server``, auth on, the online
trainer in process) on a free local port:

1. event-to-feed: a viewer the service has never seen opens the app (``GET /v1/feed``: a cold,
   non-personal page), then long-views and likes a video that was not on it (``POST /v1/events``:
   impression, play, like, stamped now) and asks for the next page. The time from the POST to
   the end of that GET is the event-to-feed latency; the page *reflects* the event when the
   video is not on it and at least one of its videos comes from a personal source (retrieval
   over the viewer's history, co-engagement), which a viewer with no history cannot get.
2. event-to-weights: simulated viewers swipe through their feeds at a steady rate, each swipe
   posted as it ends (events stamped with the wall clock); a poller reads
   ``GET /v1/admin/trainer`` every 50 ms. A swipe's lag runs from its POST returning to the first
   poll at which serving's weights have learned through its time (``through_ts``: every example
   whose view ended by then is in the weights serving uses).
3. both again with the trainer as a thread of the server (``--trainer thread``, weights handed
   over in memory), and the event-to-feed trials once more with no trainer at all
   (``--trainer off``): what training costs the serving process, in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from itertools import islice
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_serving import event_json, free_port, percentile, wait_ready  # noqa: E402
from realtime_report import serve_markdown  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PERSONAL = {"retrieval", "co_engagement", "following"}


def machine() -> str:
    import os

    load = os.getloadavg()[0]
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}; load average (1 min) at start {load:.2f} "
            f"(the machine is shared with other work)")


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(statistics.median(values), 2),
            "p90": round(percentile(values, 90), 2), "p99": round(percentile(values, 99), 2),
            "max": round(max(values), 2)}


# -- serve: event-to-feed and event-to-weights ---------------------------------------------------
def build(args, data_dir: Path):
    from reelrank.eval.simulator import build_world, generate_history
    from reelrank.importers import import_into
    from reelrank.registry import ModelRegistry
    from reelrank.store import open_store
    from reelrank.train.batch import TrainConfig, train_from_store
    from reelrank.train.ranker import RankerConfig
    from reelrank.train.retrieval import RetrievalConfig

    world = build_world(n_users=args.users, n_items=args.items,
                        n_creators=max(50, args.items // 20), seed=args.seed)
    store = open_store(data_dir)
    report = import_into(store, world.items, generate_history(world, 1, 20, seed=args.seed),
                         progress=False)
    # Latency does not depend on how much the model saw: train on the first 60,000 events.
    subset = open_store(data_dir / "train-subset")
    subset.upsert_items(store.iter_items())
    subset.append_events(e for _, e in islice(store.iter_events(), 60_000))
    cfg = TrainConfig(retrieval=RetrievalConfig(epochs=1), ranker=RankerConfig(epochs=1),
                      holdout=0.0, seed=args.seed)
    result = train_from_store(subset, ModelRegistry(data_dir / "models"), cfg, progress=False)
    subset.close()
    # The published model was trained through the subset's log position, which is also the
    # store's: the trainer learns from the rest of the background history on its own.
    store.close()
    return world, report, result


def start_server(data_dir: Path, trainer: str):
    """The server with its online trainer as ``trainer``: process (the default), thread, off."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "reelrank.service.server", "--data-dir", str(data_dir),
           "--port", str(port), "--log-level", "warning", "--trainer", trainer]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    ready = wait_ready(base, proc, timeout_s=900)
    return proc, base, ready


def now_ms() -> int:
    return int(time.time() * 1000)


def swipe_events(world, viewer, item_id: str, tag: str, liked: bool) -> list[dict]:
    """One swipe, posted as it ends: impression, a full view, and a like if ``liked``."""
    item = world.item(item_id)
    ts = now_ms()
    ctx = {"region": viewer.region, "device": viewer.device, "source": "feed"}
    out = [{"event_id": f"{tag}-i", "user_id": viewer.user_id, "item_id": item_id, "ts": ts,
            "type": "impression", "context": ctx},
           {"event_id": f"{tag}-p", "user_id": viewer.user_id, "item_id": item_id, "ts": ts,
            "type": "play", "watch_ms": item.duration_ms, "context": ctx}]
    if liked:
        out.append({"event_id": f"{tag}-l", "user_id": viewer.user_id, "item_id": item_id,
                    "ts": ts, "type": "like", "context": ctx})
    return out


def event_to_feed(client, world, headers, trials: int, seed: int, tag: str) -> dict:
    rng = random.Random(seed)
    ids = [it.item_id for it in world.items]
    total, post_ms, cold_ms, reflected, failures = [], [], [], 0, 0
    for k in range(-10, trials):  # the first 10 warm the new-viewer path up and do not count
        viewer = world.new_viewer(f"e2f-{tag}-{k}", seed=50_000 + k)
        params = {"user_id": viewer.user_id, "n": 10, "region": viewer.region}
        t = time.perf_counter()
        cold = client.get("/v1/feed", params=params, headers=headers["serve"])
        cold_ms.append((time.perf_counter() - t) * 1000)
        shown = {i["item_id"] for i in cold.json()["items"]}
        watched = rng.choice([i for i in rng.sample(ids, 20) if i not in shown])
        body = {"events": swipe_events(world, viewer, watched, f"e2f-{tag}-{k}", True)}
        t = time.perf_counter()
        r = client.post("/v1/events", json=body, headers=headers["ingest"])
        t_post = time.perf_counter()
        feed = client.get("/v1/feed", params=params, headers=headers["serve"])
        t_end = time.perf_counter()
        if k < 0:
            continue
        if r.status_code >= 300 or feed.status_code != 200:
            failures += 1
            continue
        post_ms.append((t_post - t) * 1000)
        total.append((t_end - t) * 1000)
        items = feed.json()["items"]
        if watched not in {i["item_id"] for i in items} and \
                any(i["source"] in PERSONAL for i in items):
            reflected += 1
    return {"event_to_feed_ms": stats(total), "post_ms": stats(post_ms),
            "cold_feed_ms": stats(cold_ms), "trials": trials, "reflected": reflected,
            "failed_requests": failures}


def event_to_weights(client, world, headers, seconds: float, rate: float, seed: int,
                     tag: str) -> dict:
    """Simulated viewers swipe at ``rate`` swipes/s for ``seconds``; returns the lags."""
    from reelrank.eval.simulator import Simulator

    sim = Simulator(world, fatigue_per_swipe=0.0, allow_leave=False)
    polls: list[tuple[float, int | None, str | None]] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30.0) as c:
            while not stop.is_set():
                r = c.get("/v1/admin/trainer", headers=headers["admin"])
                s = r.json()["serving"]
                polls.append((time.time() * 1000, s["through_ts"], s["version"]))
                stop.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    rng = random.Random(seed)
    markers: list[tuple[float, int]] = []  # (POST returned, wall ms; swipe time)
    viewers = [world.new_viewer(f"lag-{tag}-{k}", seed=60_000 + k) for k in range(40)]
    states = {v.user_id: sim.new_session(v, "lag") for v in viewers}
    pages: dict[str, list[str]] = {v.user_id: [] for v in viewers}
    started, n, failures = time.perf_counter(), 0, 0
    while time.perf_counter() - started < seconds:
        viewer = rng.choice(viewers)
        if not pages[viewer.user_id]:
            r = client.get("/v1/feed", params={"user_id": viewer.user_id, "n": 5},
                           headers=headers["serve"])
            pages[viewer.user_id] = [i["item_id"] for i in r.json()["items"]]
        item_id = pages[viewer.user_id].pop(0)
        # The simulated viewer decides; the swipe is posted as it ends, stamped now.
        events = sim.respond(viewer, item_id, now_ms(), states[viewer.user_id])
        ts = now_ms()
        body = []
        for e in events:
            d = event_json(e)
            d["ts"] = ts
            d["event_id"] = f"lag-{tag}-{n}-{d['event_id']}"
            body.append(d)
        r = client.post("/v1/events", json={"events": body}, headers=headers["ingest"])
        if r.status_code >= 300:
            failures += 1
        else:
            markers.append((time.time() * 1000, ts))
        n += 1
        time.sleep(max(0.0, n / rate - (time.perf_counter() - started)))
    # Give the last swipes time to settle and be learned.
    deadline = time.time() + 30
    while time.time() < deadline and (not polls or (polls[-1][1] or 0) < markers[-1][1]):
        time.sleep(0.1)
    stop.set()
    poller.join()
    lags, missed = [], 0
    for accepted, ts in markers:
        hit = next((p for p in polls if p[0] >= accepted and (p[1] or 0) >= ts), None)
        if hit is None:
            missed += 1
        else:
            lags.append(hit[0] - accepted)
    versions = len({p[2] for p in polls})
    return {"swipes": n, "viewers": len(viewers), "seconds": seconds,
            "rate_per_s": round(n / seconds, 1), "lag_ms": stats(lags),
            "not_learned_within_30s": missed, "failed_posts": failures,
            "serving_versions_seen": versions, "polls": len(polls)}


def run_serve(args) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="reelrank-rt-"))
    t0 = time.perf_counter()
    world, imported, trained = build(args, data_dir)
    out: dict = {"machine": machine(), "command": " ".join(["python", *sys.argv]),
                 "world": {"items": imported.items, "background_events": imported.events,
                           "model": trained.version, "setup_s": round(time.perf_counter() - t0)}}
    print(f"world and model ready in {out['world']['setup_s']} s", flush=True)
    modes = {"trainer_child": "process", "trainer_thread": "thread", "trainer_off": "off"}
    for name, mode in modes.items():
        proc, base, ready = start_server(data_dir, mode)
        keys = json.loads((data_dir / "keys.json").read_text())
        headers = {s: {"Authorization": f"Bearer {keys[s]}"} for s in ("ingest", "serve", "admin")}
        try:
            client = httpx.Client(base_url=base, timeout=60.0)
            entry: dict = {"startup_s": round(ready, 1)}
            if mode == "process":  # the child replays the log, learns the backlog, publishes
                t, quiet, seen = time.perf_counter(), 0, None
                while quiet < 5:  # serving runs an online version, and no newer one comes
                    s = client.get("/v1/admin/trainer", headers=headers["admin"]).json()[
                        "serving"]
                    quiet = quiet + 1 if s["version"] == seen and s["base_version"] else 0
                    seen = s["version"]
                    time.sleep(1.0)
                entry["trainer_catch_up_s"] = round(time.perf_counter() - t, 1)
            if mode == "thread":  # the trainer replays the log before it learns: wait
                t = time.perf_counter()
                while client.get("/v1/admin/trainer", headers=headers["admin"]).json()[
                        "trainer"]["state"] != "running":
                    time.sleep(0.5)
                entry["trainer_catch_up_s"] = round(time.perf_counter() - t, 1)
                # The model learned the first 60,000 events; the trainer learns the rest of the
                # background log first. Measure once it is done and idle.
                t, quiet, steps = time.perf_counter(), 0, -1
                while quiet < 3:
                    st = client.get("/v1/admin/trainer", headers=headers["admin"]).json()[
                        "trainer"]
                    quiet = quiet + 1 if st["steps"] == steps and not st["rows_waiting"] else 0
                    steps = st["steps"]
                    time.sleep(1.0)
                entry["trainer_backlog_s"] = round(time.perf_counter() - t, 1)
                entry["trainer_backlog_rows"] = st["rows_trained"]
            for k in range(20):  # warm-up
                client.get("/v1/feed", params={"user_id": f"u{k}", "n": 10},
                           headers=headers["serve"])
            entry.update(event_to_feed(client, world, headers, args.trials, args.seed, name))
            print(name, json.dumps(entry), flush=True)
            if name != "trainer_off":
                entry["event_to_weights"] = event_to_weights(client, world, headers,
                                                             args.lag_seconds, args.rate,
                                                             args.seed, name)
                entry["trainer_status"] = client.get(
                    "/v1/admin/trainer", headers=headers["admin"]).json()["trainer"]
                print("lag", json.dumps(entry["event_to_weights"]), flush=True)
            out[name] = entry
        finally:
            proc.terminate()
            proc.wait(60)
    shutil.rmtree(data_dir, ignore_errors=True)
    path = args.out or RESULTS / "realtime"
    path.with_suffix(".json").write_text(json.dumps(out, indent=2))
    path.with_suffix(".md").write_text(serve_markdown(out))
    print(f"wrote {path}.md", flush=True)


# -- replay and cold start ---------------------------------------------------------------------------
def run_replay(args) -> None:
    import torch

    from reelrank.eval.protocols import load_dataset, temporal_split
    from reelrank.eval.replay import TrainedReplayConfig, replay_trained
    from realtime_report import replay_markdown, replay_plot

    torch.set_num_threads(1)
    started = time.perf_counter()
    split = temporal_split(load_dataset(args.dataset), args.cutoff, args.test_days)
    cfg = TrainedReplayConfig(score_users=args.score_users, seed=args.seed,
                              context=args.context == "on")
    cfg.online.ranker_lr = args.lr
    if args.ranker_training == "server":
        # The ranker as ``reelrank train`` fits it: epochs chosen on the newest tenth of the
        # training span, then a refit on every row (retrieval is still not trained).
        from reelrank.train.batch import TrainConfig

        server = TrainConfig()
        cfg.train.ranker, cfg.train.holdout = server.ranker, server.holdout
    cfg.train.ranker.seed = args.train_seed
    for name, value in json.loads(args.ranker).items():  # e.g. {"pairwise_weight": 3}
        setattr(cfg.train.ranker, name, value)
    report = replay_trained(split, cfg, arms=tuple(args.arms.split(",")), progress=args.progress)
    report.update(command=" ".join(["python", *sys.argv]), machine=machine(),
                  split=split.describe(), wall_seconds=round(time.perf_counter() - started, 1))
    path = args.out or RESULTS / "realtime-replay"
    path.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    replay_plot(report, path.with_suffix(".png"))
    path.with_suffix(".md").write_text(replay_markdown(report, path.with_suffix(".png").name))
    print(f"wrote {path}.md", flush=True)


TUNING = [  # OnlineConfig fields of each online variant; "frozen" runs first
    {"batch_size": 128, "max_wait_ms": 60_000, "partial_dense": True},
    {"batch_size": 128, "max_wait_ms": 60_000, "partial_dense": True, "scale_partial": True},
    {"batch_size": 128, "max_wait_ms": 60_000, "partial_dense": True, "optimizer": "sgd",
     "ranker_lr": 1e-2},
    {"batch_size": 128, "max_wait_ms": 60_000, "dense_lr_scale": 0.0, "ranker_lr": 1e-3},
    {"batch_size": 256, "max_wait_ms": 1_200_000, "partial_dense": True},
    {"batch_size": 256, "max_wait_ms": 1_200_000},
    {"batch_size": 256, "max_wait_ms": 60_000},  # the defaults, as the replay runs them
]


def run_tune(args) -> None:
    """Choose how the online learner steps on a validation day before the test days: train up
    to the day before ``--cutoff``, replay that day frozen and with each variant."""
    import dataclasses

    import torch

    from reelrank.eval.baselines import build_engine, scratch_dir
    from reelrank.eval.protocols import load_dataset, temporal_split
    from reelrank.eval.replay import TrainedReplayConfig, _wanted_rows, position_report, replay_arm
    from reelrank.registry import ModelRegistry
    from reelrank.train.batch import train_from_store

    torch.set_num_threads(1)
    started = time.perf_counter()
    split = temporal_split(load_dataset(args.dataset), args.cutoff, 1)
    base_cfg = TrainedReplayConfig(score_users=args.score_users, seed=args.seed)
    wanted = _wanted_rows(split, args.score_users, args.seed)
    variants = json.loads(args.variants) if args.variants else TUNING
    rows = []
    with scratch_dir() as tmp:
        root = Path(tmp)
        engine = build_engine(split.dataset.items, split.train_events, root / "train")
        registry = ModelRegistry(root / "models")
        train_from_store(engine.store, registry, base_cfg.train, progress=False)
        engine.store.close()
        for k, v in enumerate([None, *variants]):
            cfg = base_cfg if v is None else dataclasses.replace(
                base_cfg, online=dataclasses.replace(base_cfg.online, **v))
            arm = "frozen" if v is None else "online"
            run = replay_arm(split, arm, registry, wanted, cfg, root / f"{arm}-{k}", False)
            value = position_report(split, run["scores"])["overall"]["gauc"]
            head = position_report(split, run["long_view_head"])["overall"]["gauc"]
            rows.append(("frozen" if v is None else json.dumps(v), value, head,
                         (run.get("online") or {}).get("steps", "—"), run["seconds"]))
            print(rows[-1], flush=True)
    frozen = rows[0]
    lines = ["# Real time on KuaiRand: how the online learner steps (validation day)", "",
             f"Command: `{' '.join(['python', *sys.argv])}`", "", f"Machine: {machine()}.", "",
             f"Validation: the base model trains on the days before {args.cutoff}, then "
             f"{args.cutoff} alone is replayed (a day before the test days of "
             f"realtime-replay.md, which this never sees); {len({k[0] for k in wanted})} "
             "sampled users scored. Adam unless said; in event time a step takes a full batch "
             "or whatever waited `max_wait_ms`. GAUC of long view, by the value formula the "
             "feed orders by and by the long-view head alone:", "",
             "| variant (OnlineConfig) | value GAUC | minus frozen | long-view head GAUC | "
             "minus frozen | steps | seconds |", "|---|---|---|---|---|---|---|"]
    for name, value, head, steps, sec in rows:
        lines.append(f"| `{name}` | {value:.4f} | {value - frozen[1]:+.4f} | {head:.4f} | "
                     f"{head - frozen[2]:+.4f} | {steps} | {sec} |")
    lines += ["", f"Wall time: {time.perf_counter() - started:.0f} s.", ""]
    path = args.out or RESULTS / "realtime-replay-tuning"
    path.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {path}.md", flush=True)


def run_coldstart(args) -> None:
    import torch

    from reelrank.eval.coldstart import ColdStartConfig, plot, run_coldstart as run
    from reelrank.train.learner import OnlineConfig
    from realtime_report import coldstart_markdown

    torch.set_num_threads(1)
    cfg = ColdStartConfig(items=args.items, new_viewers=args.viewers, swipes=args.swipes,
                          page_size=args.page_size, seed=args.seed)
    cfg.online = OnlineConfig(**{**asdict(cfg.online), **json.loads(args.online)})
    report = run(cfg, arms=tuple(args.arms.split(",")), progress=args.progress)
    report.update(command=" ".join(["python", *sys.argv]), machine=machine())
    path = args.out or RESULTS / "realtime-coldstart"
    path.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    plot(report, path.with_suffix(".png"))
    path.with_suffix(".md").write_text(coldstart_markdown(report, path.with_suffix(".png").name))
    print(f"wrote {path}.md", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("serve", help="event-to-feed and event-to-weights through HTTP")
    s.add_argument("--items", type=int, default=100_000)
    s.add_argument("--users", type=int, default=5_000)
    s.add_argument("--trials", type=int, default=300)
    s.add_argument("--lag-seconds", type=float, default=60.0)
    s.add_argument("--rate", type=float, default=10.0, help="swipes per second")
    s.add_argument("--seed", type=int, default=11)
    s.add_argument("--out", type=Path, default=None)
    r = sub.add_parser("replay", help="KuaiRand replay, trained models, online on and off")
    r.add_argument("--dataset", required=True)
    r.add_argument("--cutoff", default="2022-05-01")
    r.add_argument("--test-days", type=int, default=None)
    r.add_argument("--score-users", type=int, default=None)
    r.add_argument("--lr", type=float, default=1e-4)
    r.add_argument("--arms", default="frozen,online", help="of static, frozen, online")
    r.add_argument("--seed", type=int, default=0, help="of the --score-users sample")
    r.add_argument("--train-seed", type=int, default=0, help="of the base ranker's training")
    r.add_argument("--context", choices=("on", "off"), default="on",
                   help="each /v1/rank request carries its impressions' logged context")
    r.add_argument("--ranker", default="{}", help="JSON of RankerConfig fields to override")
    r.add_argument("--ranker-training", choices=("one-epoch", "server"), default="one-epoch",
                   help="the base ranker: one epoch on every training row, or the server's "
                        "default training (epochs chosen on held-out rows, then a refit)")
    r.add_argument("--progress", action="store_true")
    r.add_argument("--out", type=Path, default=None)
    t = sub.add_parser("replay-tune", help="the online learning rate, on a validation day")
    t.add_argument("--dataset", required=True)
    t.add_argument("--cutoff", default="2022-04-30", help="the validation day")
    t.add_argument("--score-users", type=int, default=3000)
    t.add_argument("--variants", default=None,
                   help="JSON list of OnlineConfig field sets (default: the TUNING list)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, default=None)
    c = sub.add_parser("coldstart", help="new viewers on the synthetic world")
    c.add_argument("--items", type=int, default=5_000)
    c.add_argument("--viewers", type=int, default=200)
    c.add_argument("--swipes", type=int, default=40)
    c.add_argument("--page-size", type=int, default=4, help="videos per feed request")
    c.add_argument("--seed", type=int, default=7)
    c.add_argument("--arms", default="reelrank,reelrank_frozen,most_popular,topic_bandit,oracle",
                   help="of reelrank, reelrank_frozen, most_popular and the references "
                        "topic_bandit, oracle")
    c.add_argument("--online", default="{}",
                   help="JSON of OnlineConfig fields to override (the reelrank arm's learner)")
    c.add_argument("--progress", action="store_true")
    c.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    {"serve": run_serve, "replay": run_replay, "replay-tune": run_tune,
     "coldstart": run_coldstart}[args.what](args)


if __name__ == "__main__":
    main()
