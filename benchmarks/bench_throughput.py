"""Throughput benchmark: feeds per second under concurrent clients, beside /healthz.

What it does, in one run:
1. builds the world once: ``reelrank simulate`` (default 20,000 videos, 2,000 viewers) and
   ``reelrank train`` into ``--world`` (reused when it already holds a trained model);
2. for each ``--trainer`` mode (default: the default trainer child, ``process``), copies the
   world to a fresh directory and starts ``reelrank serve --insecure-no-auth`` on it as a
   subprocess on a free port;
3. warms the server up (``--warmup`` seconds of feeds), then for each number of clients
   (default 1, 4, 16) runs closed-loop clients (threads, one keep-alive connection each) for
   ``--duration`` seconds on ``/v1/feed?user_id=<random known viewer>&n=10``, and then for the
   same time on ``/healthz``: the trivial endpoint, the same server, the same run;
4. reports requests/s, p50 and p99 (measured by the client), errors, and the server's CPU time
   per request (its process and children, from /proc), and writes ``<out>.json`` and
   ``<out>.md`` with the command.

The clients run on the same machine as the server and compete with it for the cores; they use
the standard library's ``http.client`` (the lightest client at hand), and the /healthz figure
of the same run is the yardstick for everything the machine and the clients cost.

    python benchmarks/bench_throughput.py                               # the committed run
    python benchmarks/bench_throughput.py --trainer process --trainer off
    python benchmarks/bench_throughput.py --items 3000 --users 300 --duration 5   # a quick look
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REELRANK = [sys.executable, "-m", "reelrank.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[idx]


# -- the world ------------------------------------------------------------------------------------
def build_world(world: Path, items: int, users: int, seed: int) -> dict:
    """Simulate and train into ``world`` unless it already holds a trained model."""
    took = {}
    if not (world / "models").exists() or not any((world / "models").iterdir()):
        if world.exists():
            shutil.rmtree(world)
        started = time.perf_counter()
        subprocess.run(REELRANK + ["simulate", "--data-dir", str(world), "--items", str(items),
                                   "--users", str(users), "--seed", str(seed), "--no-progress"],
                       check=True, cwd=ROOT)
        took["simulate_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        with open(world / "train.log", "w") as log:  # the training figures, kept with it
            subprocess.run(REELRANK + ["train", "--data-dir", str(world), "--no-progress"],
                           check=True, cwd=ROOT, stdout=log)
        took["train_s"] = round(time.perf_counter() - started, 1)
    return took


def known_viewers(world: Path) -> list[str]:
    db = next(world.glob("*.db"), None) or next(world.glob("*.sqlite*"))
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT DISTINCT user_id FROM events")]
    finally:
        con.close()


def world_facts(world: Path) -> dict:
    db = next(world.glob("*.db"), None) or next(world.glob("*.sqlite*"))
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {"items": con.execute("SELECT COUNT(*) FROM items").fetchone()[0],
                "events": con.execute("SELECT COUNT(*) FROM events").fetchone()[0]}
    finally:
        con.close()


# -- the server -----------------------------------------------------------------------------------
class Server:
    def __init__(self, world: Path, trainer: str, extra: list[str], env: dict[str, str],
                 shared: "Server | None" = None):
        """``shared``: serve the data directory of that server (another process on the same
        store) instead of a fresh copy of the world."""
        self.dir = Path(tempfile.mkdtemp(prefix=f"rr-throughput-{trainer}-"))
        data = shared.dir / "data" if shared is not None else self.dir / "data"
        if shared is None:
            shutil.copytree(world, data)
        self.port = free_port()
        cmd = REELRANK + ["serve", "--data-dir", str(data), "--port", str(self.port),
                          "--insecure-no-auth", "--trainer", trainer, *extra]
        self.log = open(self.dir / "server.log", "w")
        started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **env})
        self.startup_s = self._wait_ready(300.0, started)

    def _wait_ready(self, timeout_s: float, started: float) -> float:
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: "
                                   f"{(self.dir / 'server.log').read_text()[-2000:]}")
            try:
                con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                con.request("GET", "/healthz")
                if con.getresponse().status == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not become ready")

    def cpu_s(self) -> float:
        """CPU seconds of the server and its descendants (the trainer child) so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self._tree(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            except (OSError, IndexError):
                pass
        return total

    def cpu_by_process(self) -> dict[int, float]:
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for pid in self._tree(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[pid] = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError):
                pass
        return out

    @staticmethod
    def _tree(root: int) -> list[int]:
        pids, frontier = [root], [root]
        while frontier:
            pid = frontier.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                children = []
            for c in children:
                pids.append(int(c))
                frontier.append(int(c))
        return pids

    def stop(self) -> None:
        # SIGINT is uvicorn's graceful stop: the server then stops its trainer child too. A
        # child still there afterwards (the server killed) is ended by its own pid.
        children = self._tree(self.proc.pid)[1:]
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the load -------------------------------------------------------------------------------------
def closed_loop(ports: list[int], clients: int, duration_s: float, paths) -> dict:
    """``clients`` threads, each with one keep-alive connection, each sending its next request
    as soon as the last one is answered, for ``duration_s``. ``paths(rng)`` names each request.
    Client ``k`` talks to ``ports[k % len(ports)]`` (several server processes)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    error_kinds: dict[str, int] = {}
    go = threading.Event()
    deadline = [0.0]

    def client(k: int) -> None:
        rng = random.Random(k)
        port = ports[k % len(ports)]
        con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = latencies[k]
        go.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline[0]:
                break
            try:
                con.request("GET", paths(rng))
                resp = con.getresponse()
                resp.read()
                ok = resp.status == 200
                kind = f"http {resp.status}"
            except (OSError, http.client.HTTPException) as exc:
                ok, kind = False, type(exc).__name__
                con.close()
                con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if ok:
                mine.append((time.perf_counter() - t0) * 1000)
            else:
                errors[k] += 1
                error_kinds[kind] = error_kinds.get(kind, 0) + 1
        con.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    started = time.perf_counter()
    deadline[0] = started + duration_s
    go.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    lat = [x for m in latencies for x in m]
    return {"clients": clients, "requests": len(lat), "errors": sum(errors),
            "error_kinds": error_kinds, "seconds": round(elapsed, 2),
            "rps": round(len(lat) / elapsed, 1),
            "p50_ms": round(statistics.median(lat), 2) if lat else None,
            "p99_ms": round(percentile(lat, 99), 2) if lat else None}


def feed_paths(viewers: list[str], n: int, pages_per_viewer: int):
    """``paths(rng)`` for the feed: a random known viewer per request (``pages_per_viewer``
    1), or each client asking one viewer's next ``pages_per_viewer`` pages in a row (a viewer
    scrolling on, with no event posted in between) before it picks another."""
    if pages_per_viewer <= 1:
        return lambda rng: f"/v1/feed?user_id={rng.choice(viewers)}&n={n}"
    sessions: dict[int, list] = {}

    def path(rng: random.Random) -> str:
        state = sessions.setdefault(id(rng), [None, 0])
        if state[1] == 0:
            state[0], state[1] = rng.choice(viewers), pages_per_viewer
        state[1] -= 1
        return f"/v1/feed?user_id={state[0]}&n={n}"
    return path


def plan_stats(port: int) -> dict | None:
    """The server's feed plan figures (``GET /v1/stats``, admin: the server runs without
    auth), or None when it has none to say."""
    try:
        con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        con.request("GET", "/v1/stats")
        resp = con.getresponse()
        body = resp.read()
        return json.loads(body)["memory"].get("feed_plans") if resp.status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


def run_server(world: Path, trainer: str, viewers: list[str], levels: list[int],
               duration_s: float, warmup_s: float, n: int, extra: list[str],
               env: dict[str, str], processes: int = 1, plans: str | None = None,
               pages_per_viewer: int = 1) -> dict:
    if plans == "off":
        extra = [*extra, "--feed-plan-ttl", "0"]
    servers = [Server(world, trainer, extra, env)]
    # More processes serve the same store, without a trainer of their own.
    servers += [Server(world, "off", extra, env, shared=servers[0]) for _ in range(processes - 1)]
    ports = [s.port for s in servers]
    print(f"[{trainer}] {processes} server process(es) ready in "
          f"{max(s.startup_s for s in servers):.1f} s on ports {ports}", flush=True)

    def cpu_s() -> float:
        return sum(s.cpu_s() for s in servers)

    feed_path = feed_paths(viewers, n, pages_per_viewer)

    try:
        # Warm-up: the first feeds fill caches (ranker item vectors, the exploration pool).
        warm = closed_loop(ports, 4, warmup_s, feed_path)
        print(f"[{trainer}] warm-up: {warm['requests']} feeds, {warm['errors']} errors",
              flush=True)
        rows = []
        for clients in levels:
            row = {"clients": clients}
            for name, paths in (("feed", feed_path), ("healthz", lambda _r: "/healthz")):
                cpu0 = cpu_s()
                got = closed_loop(ports, clients, duration_s, paths)
                cpu = cpu_s() - cpu0
                got["server_cpu_ms_per_request"] = (
                    round(cpu * 1000 / got["requests"], 2) if got["requests"] else None)
                got["server_cpu_cores"] = round(cpu / got["seconds"], 2)
                row[name] = got
                print(f"[{trainer}] {clients:>2} clients {name:>7}: {got['rps']:>8.1f} req/s  "
                      f"p50 {got['p50_ms']} ms  p99 {got['p99_ms']} ms  errors {got['errors']}  "
                      f"server {got['server_cpu_cores']} cores", flush=True)
            row["ratio"] = round(row["feed"]["rps"] / row["healthz"]["rps"], 3)
            rows.append(row)
        stats = [plan_stats(p) for p in ports]
        if stats[0] is not None:
            print(f"[{trainer}] feed plans: {stats[0]}", flush=True)
        return {"trainer": trainer, "processes": processes, "server_env": env,
                "plans": plans, "feed_plans": stats[0] if processes == 1 else stats,
                "startup_s": round(max(s.startup_s for s in servers), 1), "warmup": warm,
                "levels": rows}
    finally:
        for server in reversed(servers):
            server.stop()


# -- the report -----------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    m, w = result["machine"], result["world"]
    out = [
        "# Throughput: feeds per second under concurrent clients", "",
        f"Command: `{result['command']}`", "",
        f"Machine: {m['cpus']} CPUs, Python {m['python']}; load average before the run "
        f"{m['loadavg_before']}, after {m['loadavg_after']}. {result['note']}", "",
        f"World: `reelrank simulate` {w['items']:,} videos, {w['viewers_with_events']:,} viewers, "
        f"{w['events']:,} events, then `reelrank train`. Each server ran `reelrank serve "
        f"--insecure-no-auth` on a fresh copy of it; {result['args']['warmup']} s of feeds "
        f"(4 clients) warmed it up, then each level ran {result['args']['duration']} s of "
        f"`/v1/feed?user_id=<random known viewer>&n={result['args']['n']}`"
        + (f" (each client asking one viewer's {result['args']['pages_per_viewer']} next pages "
           "in a row, with no event in between, before picking another)"
           if result['args'].get('pages_per_viewer', 1) > 1 else "")
        + " and then "
        f"{result['args']['duration']} s of `/healthz`. Clients are threads with one keep-alive "
        "`http.client` connection each, on the same machine. Latencies are the client's; "
        "server CPU is the server process and its trainer child, from /proc.", "",
    ]
    for run in result["runs"]:
        extra = "".join([f", {run['processes']} processes" if run.get("processes", 1) > 1 else "",
                         "".join(f", {k}={v}" for k, v in run.get("server_env", {}).items())])
        if run.get("plans"):
            extra += f", feed plans {run['plans']}"
        out += [f"## `--trainer {run['trainer']}`{extra}", "",
                "| clients | feed req/s | feed p50 ms | feed p99 ms | feed errors "
                "| server CPU ms / feed | /healthz req/s | /healthz p50 / p99 ms "
                "| feed / healthz |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in run["levels"]:
            f, h = r["feed"], r["healthz"]
            out.append(f"| {r['clients']} | {f['rps']:,.1f} | {f['p50_ms']} | {f['p99_ms']} "
                       f"| {f['errors']} | {f['server_cpu_ms_per_request']} "
                       f"| {h['rps']:,.1f} | {h['p50_ms']} / {h['p99_ms']} | {r['ratio']} |")
        plans = run.get("feed_plans")
        if isinstance(plans, dict) and plans.get("enabled"):
            out += ["", f"Feed plans at the end (`GET /v1/stats`, warm-up included): "
                    f"{plans['hits']:,} pages served from a plan, {plans['misses']:,} built "
                    f"afresh (hit rate {plans['hit_rate']}; misses by reason "
                    f"{plans['misses_by_reason']}), {plans['viewers']:,} viewers holding one."]
        out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--world", type=Path, default=None,
                    help="where the simulated, trained world is kept (reused when it holds a "
                         "model); default a directory under the system's temp named by size")
    ap.add_argument("--trainer", action="append", choices=("process", "thread", "off"),
                    help="the server's --trainer; repeat to run several servers one after "
                         "another (default: process, the default trainer child)")
    ap.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per endpoint and level")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--n", type=int, default=10, help="items per feed page")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="an extra argument for `reelrank serve` (repeatable)")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable for the server processes (repeatable)")
    ap.add_argument("--processes", type=int, default=1,
                    help="server processes on the same store, clients spread over them; the "
                         "first runs the --trainer, the others none. Each holds its own live "
                         "state: a measure of what a second core gives, not a correct "
                         "deployment (a swipe reaches only the process it was posted to)")
    ap.add_argument("--plans", action="append", choices=("on", "off"),
                    help="feed plans in the server (pipeline/plans.py): 'off' serves with "
                         "--feed-plan-ttl 0; repeat to run both, one after another, for each "
                         "--trainer (default: the server's default, on)")
    ap.add_argument("--pages-per-viewer", type=int, default=1,
                    help="each client asks this many pages of one viewer in a row before "
                         "picking another (default 1: a random known viewer per request)")
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. the box's load)")
    ap.add_argument("--out", default="benchmarks/results/throughput")
    args = ap.parse_args()
    trainers = args.trainer or ["process"]
    world = args.world or Path(tempfile.gettempdir()) / (
        f"rr-throughput-world-{args.items}-{args.users}-{args.seed}")
    load_before = os.getloadavg()
    took = build_world(world, args.items, args.users, args.seed)
    viewers = known_viewers(world)
    levels = [int(x) for x in args.clients.split(",")]
    env = dict(kv.split("=", 1) for kv in args.server_env)
    runs = [run_server(world, t, viewers, levels, args.duration, args.warmup, args.n,
                       args.server_arg, env, args.processes, plans, args.pages_per_viewer)
            for t in trainers for plans in (args.plans or [None])]
    result = {
        "command": shlex.join(["python", "benchmarks/bench_throughput.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "note": args.note,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "world": {**world_facts(world), "viewers_with_events": len(viewers), **took},
        "runs": runs,
    }
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
