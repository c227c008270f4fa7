"""Soak: a mixed load on the demo-sized world for minutes, with the resident memory (RSS) of
the server and of its trainer child sampled over time.

    python benchmarks/bench_soak.py --duration-s 600

Setup (once per run, in a temporary directory): the demo world (``reelrank simulate`` with the
demo's sizes: 300 viewers, 2,000 videos) and a model trained on it (``reelrank train``, the
demo's epochs), then the real server (``reelrank serve``: auth on, the online trainer as its
child process, niced). Client threads then run a mix until the time is up:

- feeds of known viewers (35%) and of ids never seen before (15%: what fills traces and live
  state when anyone with the serve token asks for random ids);
- events (25%): an impression and a play of an item from the viewer's last page, in batches;
- rank (10%, 20 items) and explain (10%, an item from the viewer's last page);
- erasures (5%): a fresh viewer posts a few events and is erased.

A sampler reads ``/proc/<pid>/statm`` of the server and the trainer every ``--sample-s``
seconds and ``GET /v1/stats`` (its ``memory`` section) every 30 s. The report gives requests/s
and errors by kind, RSS over time, and the change in RSS after the warm-up (the first 2
minutes): the spread of the samples after it, and the change between the median of its first
minute and of the last minute (``summarize``). The goal is a flat line, within 10%.
``--serve-arg`` passes an option to the server (``--serve-arg=--trainer-late-examples
--serve-arg=0``: a trainer that keeps no late example).

Results: ``benchmarks/results/soak.md`` and ``.json``, with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_durability import Server, tokens  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MIX = (("feed_known", 35), ("feed_new", 15), ("events", 25), ("rank", 10), ("explain", 10),
       ("erase", 5))


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return None


def cli(*args: str, log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run(["nice", "-n", "10", sys.executable, "-m", "reelrank.cli", *args],
                       cwd=ROOT, check=True, stdout=out, stderr=subprocess.STDOUT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})


def build_demo_world(data_dir: Path, log: Path, users: int, items: int) -> float:
    started = time.perf_counter()
    cli("simulate", "--data-dir", str(data_dir), "--users", str(users), "--items", str(items),
        "--creators", str(max(20, items // 15)), "--sessions", "2", "--swipes", "20",
        "--seed", "7", "--no-progress", log=log)
    cli("train", "--data-dir", str(data_dir), "--retrieval-epochs", "3", "--ranker-epochs", "1",
        "--no-progress", log=log)
    return time.perf_counter() - started


class Load:
    """Client threads running the mix; counts answers by kind and status."""

    def __init__(self, base: str, keys: dict, users: int, n_items: int, seed: int):
        self.base, self.keys, self.users, self.n_items = base, keys, users, n_items
        self.counts: Counter = Counter()
        self.latency_s: Counter = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.seed = seed
        self.serial = 0

    def _count(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            self.counts[(kind, status)] += 1
            self.latency_s[kind] += seconds

    def client(self, k: int) -> None:
        rng = random.Random(self.seed * 100 + k)
        kinds = [kind for kind, w in MIX for _ in range(w)]
        last_page: dict[str, list[str]] = {}
        serve = {"Authorization": f"Bearer {self.keys['serve']}"}
        ingest = {"Authorization": f"Bearer {self.keys['ingest']}"}
        admin = {"Authorization": f"Bearer {self.keys['admin']}"}
        with httpx.Client(base_url=self.base, timeout=60.0) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                kind = rng.choice(kinds)
                user = f"u{rng.randrange(self.users)}"
                started = time.perf_counter()
                try:
                    if kind in ("feed_known", "feed_new"):
                        if kind == "feed_new":
                            user = f"new-{k}-{n}-{rng.randrange(10**9)}"
                        r = http.get("/v1/feed", params={"user_id": user, "n": 10},
                                     headers=serve)
                        if r.status_code == 200 and kind == "feed_known":
                            last_page[user] = [i["item_id"] for i in r.json()["items"]]
                    elif kind == "events":
                        page = last_page.get(user) or [f"v{rng.randrange(self.n_items)}"]
                        now = int(time.time() * 1000)
                        events = []
                        for j, item in enumerate(page[:5]):
                            eid = f"soak-{k}-{n}-{j}"
                            events += [{"event_id": eid + "i", "user_id": user, "item_id": item,
                                        "ts": now, "type": "impression"},
                                       {"event_id": eid + "p", "user_id": user, "item_id": item,
                                        "ts": now + 1, "type": "play",
                                        "watch_ms": rng.randrange(500, 20_000)}]
                        r = http.post("/v1/events", json={"events": events}, headers=ingest)
                    elif kind == "rank":
                        items = [f"v{rng.randrange(self.n_items)}" for _ in range(20)]
                        r = http.post("/v1/rank", json={"user_id": user, "item_ids": items},
                                      headers=serve)
                    elif kind == "explain":
                        page = last_page.get(user) or [f"v{rng.randrange(self.n_items)}"]
                        r = http.get("/v1/explain", params={"user_id": user,
                                                            "item_id": rng.choice(page)},
                                     headers=serve)
                    else:
                        victim = f"erase-{k}-{n}"
                        now = int(time.time() * 1000)
                        events = [{"event_id": f"{victim}-{j}", "user_id": victim,
                                   "item_id": f"v{rng.randrange(self.n_items)}", "ts": now + j,
                                   "type": "play", "watch_ms": 5_000} for j in range(5)]
                        http.post("/v1/events", json={"events": events}, headers=ingest)
                        r = http.delete(f"/v1/users/{victim}", headers=admin)
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0  # no answer at all
                self._count(kind, status, time.perf_counter() - started)


def trainer_pid(base: str, admin: dict) -> int | None:
    try:
        r = httpx.get(f"{base}/v1/admin/trainer", headers=admin, timeout=30)
        return (r.json().get("trainer") or {}).get("pid")
    except (httpx.HTTPError, ValueError):
        return None


def summarize(samples: list[dict], key: str, warmup_s: float) -> dict:
    """The RSS figures of one process. Beside the spread of every sample after the warm-up
    (which a sample taken in the middle of a training step or a model hand-over widens: the
    trainer's working memory comes and goes by 10-20 MB between samples) it gives the median
    of the first minute after the warm-up and of the last minute, and the change between the
    two: the drift, without the moment each sample happened to catch."""
    values = [(s["t_s"], s[key]) for s in samples if s.get(key) is not None]
    after = [v for t, v in values if t >= warmup_s]
    if not values:
        return {}
    end = values[-1][0]
    first_minute = [v for t, v in values if warmup_s <= t < warmup_s + 60]
    last_minute = [v for t, v in values if t >= max(warmup_s, end - 60)]
    out = {"start_mb": round(values[0][1], 1), "end_mb": round(values[-1][1], 1),
           "max_mb": round(max(v for _, v in values), 1)}
    if after:
        out.update({"after_warmup_first_mb": round(after[0], 1),
                    "after_warmup_min_mb": round(min(after), 1),
                    "after_warmup_max_mb": round(max(after), 1),
                    "after_warmup_change_pct": round(100 * (after[-1] - after[0]) / after[0], 1),
                    "after_warmup_spread_pct": round(100 * (max(after) - min(after))
                                                     / min(after), 1)})
    if first_minute and last_minute:
        a, b = statistics.median(first_minute), statistics.median(last_minute)
        out.update({"first_minute_median_mb": round(a, 1), "last_minute_median_mb": round(b, 1),
                    "median_change_pct": round(100 * (b - a) / a, 1)})
    return out


def _blank(value) -> str:
    return "" if value is None else str(value)


def _viewers(sample: dict) -> str:
    if sample.get("live_viewers") is None:
        return ""
    feed_only = sample.get("feed_only_viewers")
    return f"{sample['live_viewers']}" + ("" if feed_only is None else f" ({feed_only})")


def markdown(report: dict) -> str:
    s, t = report["server_rss"], report.get("trainer_rss") or {}
    lines = [
        "# Soak: mixed load with RSS of the server and the trainer over time",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}. World: the demo's sizes ({report['world']['users']} "
        f"viewers, {report['world']['items']:,} videos, built and trained in "
        f"{report['world']['setup_s']:.0f} s). Server: `reelrank serve`, auth on, the online "
        f"trainer as its child process, both niced; {report['clients']} client threads on the "
        "same machine.",
        "",
        f"**{report['duration_s']:.0f} s, {report['requests']:,} requests "
        f"({report['requests_per_s']:.1f}/s), {report['errors']} errors (5xx or no answer), "
        f"{report['refused']} refused for overload (429/503).**",
        "",
        f"Server RSS: {s.get('start_mb')} MB at the first sample, {s.get('end_mb')} MB at the "
        f"end, at most {s.get('max_mb')} MB; after the {report['warmup_s']:.0f} s warm-up "
        f"between {s.get('after_warmup_min_mb')} and {s.get('after_warmup_max_mb')} MB "
        f"(spread {s.get('after_warmup_spread_pct')}%, first to last "
        f"{s.get('after_warmup_change_pct')}%); median of the first minute after it "
        f"{s.get('first_minute_median_mb')} MB, of the last minute "
        f"{s.get('last_minute_median_mb')} MB ({s.get('median_change_pct')}%).",
        "",
        f"Trainer RSS: {t.get('start_mb')} MB at the first sample, {t.get('end_mb')} MB at the "
        f"end, at most {t.get('max_mb')} MB; after the warm-up between "
        f"{t.get('after_warmup_min_mb')} and {t.get('after_warmup_max_mb')} MB (spread "
        f"{t.get('after_warmup_spread_pct')}%, first to last {t.get('after_warmup_change_pct')}%); "
        f"median of the first minute after it {t.get('first_minute_median_mb')} MB, of the last "
        f"minute {t.get('last_minute_median_mb')} MB ({t.get('median_change_pct')}%).",
        "",
        "| request | answered | per s | mean ms | statuses |",
        "|---|---|---|---|---|",
    ]
    for kind, row in report["by_kind"].items():
        lines.append(f"| {kind} | {row['n']:,} | {row['per_s']:.1f} | {row['mean_ms']:.1f} | "
                     f"{row['statuses']} |")
    lines += ["", "RSS over time (MB):", "",
              "| t s | server | trainer | traces MB | live viewers (feed only) | feed plans | "
              "trainer viewers | trainer late examples |", "|---|---|---|---|---|---|---|---|"]
    for sample in report["samples"][::max(1, len(report["samples"]) // 40)]:
        trainer = sample["trainer_mb"]
        lines.append(f"| {sample['t_s']:.0f} | {sample['server_mb']:.1f} | "
                     f"{'' if trainer is None else round(trainer, 1)} | "
                     f"{sample.get('traces_mb', '')} | {_viewers(sample)} | "
                     f"{_blank(sample.get('feed_plans'))} | "
                     f"{_blank(sample.get('trainer_viewers'))} | "
                     f"{_blank(sample.get('trainer_late_examples'))} |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--warmup-s", type=float, default=120.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="an extra argument of `reelrank serve` (repeat for each), e.g. "
                             "--serve-arg=--trainer-late-examples --serve-arg=1000")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reelrank-soak-"))
    data_dir, log = work / "data", work / "server.log"
    setup_s = build_demo_world(data_dir, log, args.users, args.items)
    server = Server(data_dir, log, "process", extra=args.serve_arg)
    server.start()
    keys = tokens(data_dir)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    load = Load(server.base, keys, args.users, args.items, seed=1)
    threads = [threading.Thread(target=load.client, args=(k,)) for k in range(args.clients)]
    samples: list[dict] = []
    started = time.perf_counter()
    for t in threads:
        t.start()
    next_stats = 0.0
    try:
        while (elapsed := time.perf_counter() - started) < args.duration_s:
            sample = {"t_s": round(elapsed, 1), "server_mb": rss_mb(server.proc.pid),
                      "trainer_mb": rss_mb(trainer_pid(server.base, admin))}
            if elapsed >= next_stats:
                next_stats = elapsed + 30
                try:
                    memory = httpx.get(f"{server.base}/v1/stats", headers=admin,
                                       timeout=60).json()["memory"]
                    sample["traces_mb"] = round(memory["traces"]["bytes"] / 2**20, 1)
                    sample["live_viewers"] = memory["live_state"]["viewers"]
                    sample["feed_only_viewers"] = memory["live_state"].get("viewers_feed_only")
                    # Viewers holding a feed plan (``reelrank serve`` keeps them; absent: off).
                    sample["feed_plans"] = (memory.get("feed_plans") or {}).get("viewers")
                    # The trainer's own budgets, from its status file (None until written).
                    budgets = (memory.get("trainer") or {}).get("budgets") or {}
                    sample["trainer_viewers"] = budgets.get("viewers")
                    sample["trainer_late_examples"] = budgets.get("late_examples")
                    sample["trainer_memory"] = budgets  # all of it, for the JSON
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
            samples.append(sample)
            print(json.dumps(sample), flush=True)
            time.sleep(args.sample_s)
    finally:
        load.stop.set()
        for t in threads:
            t.join()
        duration = time.perf_counter() - started
        os.kill(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill9()
    by_kind = {}
    for kind, _ in MIX:
        statuses = {str(code): n for (k, code), n in sorted(load.counts.items()) if k == kind}
        n = sum(statuses.values())
        by_kind[kind] = {"n": n, "per_s": n / duration, "statuses": statuses,
                         "mean_ms": 1000 * load.latency_s[kind] / n if n else 0.0}
    total = sum(load.counts.values())
    errors = sum(n for (_, code), n in load.counts.items() if code == 0 or code >= 500)
    refused = sum(n for (_, code), n in load.counts.items() if code in (429, 503))
    report = {
        "command": "python benchmarks/bench_soak.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}, load average (1 min) at the end "
                   f"{os.getloadavg()[0]:.2f} (shared machine)",
        "world": {"users": args.users, "items": args.items, "setup_s": setup_s},
        "clients": args.clients, "duration_s": duration, "warmup_s": args.warmup_s,
        "requests": total, "requests_per_s": total / duration, "errors": errors,
        "refused": refused, "by_kind": by_kind,
        "server_rss": summarize(samples, "server_mb", args.warmup_s),
        "trainer_rss": summarize(samples, "trainer_mb", args.warmup_s),
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
