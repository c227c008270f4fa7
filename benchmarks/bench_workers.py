"""Several API processes: feeds per second with `reelrank serve --workers N` (1, 2, 4), beside
/healthz in the same run.

What it does, in one run:
1. writes a synthetic world (``reelrank simulate``) into a throwaway PostgreSQL database and
   trains a model on it (``reelrank train``, a few epochs) into a data directory;
2. for each N in ``--workers``, starts ``reelrank serve --store URL --live redis://...
   --workers N --trainer off --insecure-no-auth`` on a free port and waits until every worker
   says it is ready (the first start finds Redis empty and rebuilds it from the log once; the
   later ones reuse it, replaying nothing);
3. warms up (``--warmup`` seconds of feeds), then runs ``--clients`` closed-loop clients
   (threads, one keep-alive connection each, all on the one port: the kernel hands each
   connection to a worker) for ``--duration`` seconds on ``/v1/feed?user_id=<random known
   viewer>&n=10``, then the same on ``/healthz``;
4. reports requests/s, p50/p99 (the client's), errors and the CPU the server's processes used
   per feed (supervisor and workers, from /proc), and writes ``<out>.json`` and ``<out>.md``
   with the command.

The clients, PostgreSQL and Redis share the machine with the workers: on a 2-core machine more
than two workers compete for the same cores, so expect little scaling there; the /healthz
figure of the same run is the yardstick for what the machine and the clients cost.

    python benchmarks/bench_workers.py                                  # the committed run
    python benchmarks/bench_workers.py --items 1000 --users 100 --duration 5 --out /tmp/quick

PostgreSQL: ``--pg-url`` (a database to use), else a throwaway database as the tests make one
(``tests/pg.py``). Redis: ``--redis-url`` (default redis://127.0.0.1:6379/15) under a prefix of
its own, deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_throughput import REELRANK, ROOT, Server, closed_loop, free_port  # noqa: E402


@contextlib.contextmanager
def database(url: str | None):
    if url:
        yield url
        return
    from tests.pg import throwaway_database

    with throwaway_database() as fresh:
        yield fresh


@contextlib.contextmanager
def redis_prefix(url: str):
    import redis

    prefix = f"rrbench-{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        keys += [k for k in client.scan_iter(match="~*", count=1000) if prefix.encode() in k]
        for k in range(0, len(keys), 1000):
            client.delete(*keys[k:k + 1000])
        client.close()


def viewers(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as con:
        return [r[0] for r in con.execute("SELECT DISTINCT user_id FROM events")]


def counts(url: str) -> dict:
    import psycopg

    with psycopg.connect(url) as con:
        return {"items": con.execute("SELECT count(*) FROM items").fetchone()[0],
                "events": con.execute("SELECT count(*) FROM events").fetchone()[0]}


class Workers:
    """``reelrank serve --workers N`` as a subprocess, and its processes' CPU time."""

    def __init__(self, data: Path, store: str, live: str, workers: int) -> None:
        self.port = free_port()
        self.workers = workers
        self.log_path = data.parent / f"serve-{workers}.log"
        self.log = self.log_path.open("w")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            REELRANK + ["serve", "--data-dir", str(data), "--store", store, "--live", live,
                        "--workers", str(workers), "--trainer", "off", "--insecure-no-auth",
                        "--port", str(self.port)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        # One worker is the plain single-process server; several each log "API process ...".
        mark, need = ("listening on", 1) if workers == 1 else ("API process", workers)
        while self.log_path.read_text().count(mark) < need:
            if self.proc.poll() is not None or time.perf_counter() - started > 600:
                self.stop()
                raise RuntimeError(self.log_path.read_text()[-3000:])
            time.sleep(0.5)
        self.startup_s = time.perf_counter() - started

    def cpu_s(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in Server._tree(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError):
                pass
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure(server: Workers, ids: list[str], clients: int, duration_s: float,
            warmup_s: float) -> dict:
    def feed(rng: random.Random) -> str:
        return f"/v1/feed?user_id={rng.choice(ids)}&n=10"

    closed_loop([server.port], clients, warmup_s, feed)
    cpu0 = server.cpu_s()
    feeds = closed_loop([server.port], clients, duration_s, feed)
    cpu = server.cpu_s() - cpu0
    health = closed_loop([server.port], clients, duration_s, lambda rng: "/healthz")
    return {"workers": server.workers, "startup_s": round(server.startup_s, 1),
            "feed": feeds, "healthz": health,
            "cpu_ms_per_feed": round(1000 * cpu / max(1, feeds["requests"]), 2)}


def markdown(result: dict) -> str:
    lines = [
        "# Several API processes: feeds per second with `reelrank serve --workers N`", "",
        f"Command: `{result['command']}`", "",
        f"Machine: {result['machine']['cpus']} CPUs, Python {result['machine']['python']}; "
        f"load average before the run {result['machine']['load_before']}, after "
        f"{result['machine']['load_after']}.", "",
        f"World: `reelrank simulate` {result['world']['items']:,} videos, "
        f"{result['world']['users']:,} viewers, {result['world']['events']:,} events in "
        "PostgreSQL, then `reelrank train` (few epochs); live state in Redis (rebuilt from the "
        "log by the first start, reused by the others). Each level ran "
        f"{result['warmup_s']} s of warm-up, then {result['duration_s']} s of "
        f"`/v1/feed?user_id=<random known viewer>&n=10` and {result['duration_s']} s of "
        f"`/healthz`, {result['clients']} closed-loop clients on the one port, on the same "
        "machine as the servers, PostgreSQL and Redis.", "",
        "| workers | feeds/s | feed p50 ms | feed p99 ms | feed errors | server CPU ms / feed "
        "| /healthz req/s | /healthz p50 / p99 ms | start-up s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        f, h = r["feed"], r["healthz"]
        lines.append(f"| {r['workers']} | {f['rps']:,} | {f['p50_ms']} | {f['p99_ms']} | "
                     f"{f['errors']} | {r['cpu_ms_per_feed']} | {h['rps']:,} | "
                     f"{h['p50_ms']} / {h['p99_ms']} | {r['startup_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "workers"))
    args = ap.parse_args()
    levels = [int(x) for x in args.workers.split(",")]
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs = []
    with database(args.pg_url) as url, redis_prefix(args.redis_url) as prefix, \
            tempfile.TemporaryDirectory(prefix="rr-workers-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run(REELRANK + ["simulate", "--store", url, "--items", str(args.items),
                                   "--users", str(args.users), "--no-progress"],
                       check=True, cwd=ROOT)
        subprocess.run(REELRANK + ["train", "--store", url, "--data-dir", str(data),
                                   "--retrieval-epochs", str(args.epochs), "--ranker-epochs",
                                   str(args.epochs), "--no-progress"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        ids = viewers(url)
        world = {**counts(url), "users": args.users}
        live = f"{args.redis_url}?prefix={prefix}"
        for n in levels:
            server = Workers(data, url, live, n)
            try:
                runs.append(measure(server, ids, args.clients, args.duration, args.warmup))
                print(json.dumps(runs[-1]), flush=True)
            finally:
                server.stop()
    result = {
        "command": "python benchmarks/bench_workers.py " + shlex.join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_before": load_before,
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
        "world": world, "clients": args.clients, "duration_s": args.duration,
        "warmup_s": args.warmup, "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
