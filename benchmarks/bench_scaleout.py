"""Scale-out ingestion and cross-process latency: HTTP events/s on the embedded default (SQLite,
in-process live state) beside PostgreSQL + Redis with 1 and 2 workers, and the time from an
event posted to one API process until another process's feed reflects it, in one run.

What it does:
1. the world: ``reelrank simulate`` (same seed and size) into a SQLite data directory and into
   the PostgreSQL database (``--pg-url``, filled unless it already holds the catalog), and one
   ``reelrank train`` on the PostgreSQL copy whose model both use (the catalogs are the same);
   the Redis live state gets a prefix of its own, deleted at the end unless ``--keep-redis``;
2. ingestion: for each level (``sqlite`` = ``reelrank serve`` on the SQLite copy; ``pg`` with
   1 and 2 workers = ``reelrank serve --store URL --live redis://... --workers N``; all with
   ``--trainer off --insecure-no-auth``), ``--clients`` closed-loop client threads, one
   keep-alive connection each, POST batches of ``--batch`` events (unique ids, viewers drawn
   from ``--viewers`` bench viewers, videos from the catalog) to ``/v1/events`` for
   ``--duration`` seconds after ``--warmup``; each 200 means committed. It reports accepted
   events/s, batch p50/p99, and where the CPU went in that window: the server's processes,
   PostgreSQL's, Redis's, the clients (this process) and the rest of the machine (/proc);
3. latency: two separate ``reelrank serve`` processes, A and B, on their own ports (one
   worker each, the same database and Redis prefix). For each trial a fresh viewer's page is
   asked of B (the twin: a cold page, which for another fresh viewer is the same page), then
   impressions of its first 3 videos are posted for a new fresh viewer to A, and that viewer's
   feed is asked of B until none of the 3 is in it. Reported: the time from the POST to that
   answer (p50/p99), how many feeds it took, and a control (every 10th trial, another fresh
   viewer's page from B without events) that shows the 3 videos would have been there.
   Trials run idle, then with ``--latency-load`` ingestion clients posting to A meanwhile;
4. sizing: Redis ``MEMORY USAGE`` of every key under the prefix, grouped by kind, and per
   viewer against their number of events; PostgreSQL rows and table/index sizes; each server
   process's resident memory (VmRSS) after its run.

    python benchmarks/bench_scaleout.py --pg-url postgresql://postgres@127.0.0.1/rr_scale19
    python benchmarks/bench_scaleout.py --duration 5 --trials 20 --out /tmp/quick ...

The clients, PostgreSQL and Redis share the machine with the servers; the CPU split says what
each costs per 1,000 events, which is what to scale by.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_throughput import REELRANK, ROOT, free_port, percentile  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
TYPES = ("impression", "impression", "play", "play", "skip", "like")


# -- processes and their CPU ----------------------------------------------------------------------
def tree(root: int) -> list[int]:
    pids, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        pids += map(int, kids)
        frontier += map(int, kids)
    return pids


def cpu_of(pids) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError):
            pass
    return total


def pids_named(name: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (every core) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class CpuSplit:
    """CPU seconds by component over a window: the server tree, PostgreSQL, Redis, this
    process (the clients) and the rest of the machine."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def sample(self) -> dict:
        return {"server": cpu_of(tree(self.server_pid)),
                "postgresql": cpu_of(pids_named("postgres")),
                "redis": cpu_of(pids_named("redis-server")),
                "clients": sum(os.times()[:2]), "machine": machine_busy_s(),
                "wall": time.perf_counter()}

    @staticmethod
    def diff(a: dict, b: dict) -> dict:
        d = {k: b[k] - a[k] for k in a}
        d["other"] = d["machine"] - d["server"] - d["postgresql"] - d["redis"] - d["clients"]
        return {k: round(v, 2) for k, v in d.items()}


class Serve:
    """``reelrank serve`` as a subprocess on a free port, ready once every worker is."""

    def __init__(self, tmp: Path, name: str, data: Path, extra: list[str], workers: int = 1):
        self.name, self.workers, self.port = name, workers, free_port()
        self.log_path = tmp / f"serve-{name}.log"
        self.log = self.log_path.open("w")
        started = time.perf_counter()
        cmd = REELRANK + ["serve", "--data-dir", str(data), "--trainer", "off",
                          "--insecure-no-auth", "--port", str(self.port), *extra]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        mark, need = ("listening on", 1) if workers == 1 else ("API process", workers)
        while self.log_path.read_text().count(mark) < need or not self._healthy():
            if self.proc.poll() is not None or time.perf_counter() - started > 600:
                self.stop()
                raise RuntimeError(self.log_path.read_text()[-3000:])
            time.sleep(0.3)
        self.startup_s = round(time.perf_counter() - started, 1)
        self.settle_s = self._settle()

    def _settle(self, limit_s: float = 180.0) -> float:
        """Wait for the work a process does once after it starts (community and topic
        refreshes read every viewer) to end, so that it is not counted against the events:
        until its processes use under 5% of a core over 2 s. Returns the seconds waited."""
        started = time.perf_counter()
        last = cpu_of(tree(self.proc.pid))
        while time.perf_counter() - started < limit_s:
            time.sleep(2.0)
            now = cpu_of(tree(self.proc.pid))
            if now - last < 0.1:
                break
            last = now
        return round(time.perf_counter() - started, 1)

    def _healthy(self) -> bool:
        try:
            con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            con.request("GET", "/healthz")
            return con.getresponse().status == 200
        except OSError:
            return False

    def worker_pids(self) -> list[int]:
        """The processes that serve: the server itself, or with ``--workers`` the spawned
        workers (not the supervisor, nor multiprocessing's resource tracker)."""
        if self.workers == 1:
            return [self.proc.pid]
        out = []
        for pid in tree(self.proc.pid)[1:]:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
                out.append(pid)
        return out

    def rss(self) -> dict[str, float | None]:
        pids = tree(self.proc.pid)
        out = {}
        for pid in pids:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            role = ("supervisor" if pid == self.proc.pid and self.workers > 1 else
                    "resource tracker" if b"resource_tracker" in cmd else "worker")
            out[f"{role} {pid}"] = rss_mb(pid)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- the load -------------------------------------------------------------------------------------
class Batches:
    """Bodies of unique events: viewers ``bench-<n>``, videos from the catalog."""

    def __init__(self, tag: str, items: list[str], viewers: int, batch: int) -> None:
        self.tag, self.items, self.viewers, self.batch = tag, items, viewers, batch

    def body(self, rng: random.Random, client: int, n: int) -> bytes:
        now = int(time.time() * 1000)
        events = []
        for j in range(self.batch):
            kind = rng.choice(TYPES)
            events.append({
                "event_id": f"{self.tag}-c{client}-b{n}-{j}",
                "user_id": f"bench-{rng.randrange(self.viewers)}",
                "item_id": rng.choice(self.items), "ts": now + j, "type": kind,
                "watch_ms": rng.randrange(500, 30_000) if kind == "play" else None})
        return json.dumps({"events": events}, separators=(",", ":")).encode()


def ingest(port: int, clients: int, batches: Batches, stop: threading.Event,
           after: threading.Event | None = None, seed: int = 0) -> dict:
    """Closed-loop posting until ``stop``; with ``after``, counts only the batches answered
    while it is set (not the warm-up before it, nor what follows its clearing)."""
    lat: list[float] = []
    accepted = [0]
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        con = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        n = 0
        while not stop.is_set():
            body = batches.body(rng, k, n)
            n += 1
            t0 = time.perf_counter()
            try:
                con.request("POST", "/v1/events", body=body,
                            headers={"Content-Type": "application/json"})
                resp = con.getresponse()
                text = resp.read()
                ok, kind = resp.status == 200, f"http {resp.status}"
            except (OSError, http.client.HTTPException) as exc:
                ok, kind = False, type(exc).__name__
                con.close()
                con = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            took = (time.perf_counter() - t0) * 1000
            if after is not None and not after.is_set():
                continue
            with lock:
                if ok:
                    lat.append(took)
                    accepted[0] += json.loads(text)["accepted"]
                else:
                    errors[kind] = errors.get(kind, 0) + 1
        con.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"batches": len(lat), "events": accepted[0], "errors": errors,
            "batch_p50_ms": round(statistics.median(lat), 1) if lat else None,
            "batch_p99_ms": round(percentile(lat, 99), 1) if lat else None}


def redis_calls(redis_url: str) -> dict[str, tuple[int, int]]:
    """Redis's calls and microseconds per command so far (``INFO commandstats``)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in stats.items()}


def profile(pid: int, seconds: float, tmp: Path) -> dict:
    """Sample ``pid`` with py-spy for ``seconds``; the share of samples (inclusive) of the
    functions that hold the most of them, each counted once per stack."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy is not installed"}
    out = tmp / f"profile-{pid}.txt"
    done = subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                           "--rate", "100", "--format", "raw", "--nonblocking", "--output",
                           str(out)], capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        return {"error": (done.stderr or done.stdout)[-500:]}
    inclusive: dict[str, int] = {}
    total = idle = 0
    generic = ("_bootstrap", "Thread.run (", "WorkerThread.run", "asyncio", "typer", "uvicorn",
               "<module>", "click", "starlette", "fastapi", "anyio", "(reelrank/cli.py)",
               "(reelrank/service/server.py)", "_run_sync_endpoint", "call_with_retry")
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")[1:]  # the first is the thread
        total += n
        if not frames or any(w in frames[-1] for w in ("select (selectors", "wait (threading",
                                                       "_worker (concurrent", "sleep")):
            idle += n
            continue
        for name in {re.sub(r" \(.*?/(site-packages|reelrank)/", r" (\1/", f)
                     .rsplit(":", 1)[0] + ")" for f in frames}:
            inclusive[name] = inclusive.get(name, 0) + n
    busy = max(1, total - idle)
    top = sorted(((k, v) for k, v in inclusive.items() if not any(g in k for g in generic)),
                 key=lambda kv: -kv[1])[:40]
    return {"samples": total, "busy_samples": busy,
            "top": [[name, round(100 * n / busy, 1)] for name, n in top]}


def ingestion_level(server: Serve, batches: Batches, clients: int, warmup_s: float,
                    duration_s: float, redis_url: str, tmp: Path,
                    profile_s: float = 0.0) -> dict:
    stop, counting = threading.Event(), threading.Event()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        ingest(server.port, clients, batches, stop, counting)))
    worker.start()
    time.sleep(warmup_s)
    split = CpuSplit(server.proc.pid)
    calls0 = redis_calls(redis_url)
    a = split.sample()
    counting.set()
    time.sleep(duration_s)
    counting.clear()  # batches answered from here on are not counted
    b = split.sample()
    calls1 = redis_calls(redis_url)
    prof = None
    if profile_s:  # after the counted window, under the same load
        prof = profile(server.worker_pids()[0], profile_s, tmp)
    stop.set()
    worker.join()
    redis_ops = {k: (v[0] - calls0.get(k, (0, 0))[0], v[1] - calls0.get(k, (0, 0))[1])
                 for k, v in calls1.items() if v[0] - calls0.get(k, (0, 0))[0] > 0}
    cpu = CpuSplit.diff(a, b)
    wall = cpu["wall"]
    events = result["events"]
    per_k = {k: round(1000 * cpu[k] / max(1, events) * 1000, 1)
             for k in ("server", "postgresql", "redis", "clients", "other")}
    return {"level": server.name, "workers": server.workers, "startup_s": server.startup_s,
            "settle_s": server.settle_s,
            **result, "seconds": round(wall, 1), "events_per_s": round(events / wall),
            "cpu_s": cpu, "cpu_ms_per_1000_events": per_k,
            "cores_busy": round(cpu["machine"] / cpu["wall"], 2), "rss_mb": server.rss(),
            "redis_calls_per_batch": {k: round(v[0] / max(1, result["batches"]), 1)
                                      for k, v in redis_ops.items()},
            "redis_us_per_event": round(sum(v[1] for v in redis_ops.values())
                                        / max(1, events), 1),
            "profile": prof}


# -- cross-process latency ------------------------------------------------------------------------
def page(con: http.client.HTTPConnection, user: str) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    con.request("GET", f"/v1/feed?user_id={user}&n=10")
    resp = con.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"feed answered {resp.status}: {body[:300]!r}")
    return [i["item_id"] for i in json.loads(body)["items"]], (time.perf_counter() - t0) * 1000


def latency_trials(a: Serve, b: Serve, trials: int, tag: str) -> dict:
    ca = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    cb = http.client.HTTPConnection("127.0.0.1", b.port, timeout=60)
    total, post_ms, first_feed_ms, polls = [], [], [], []
    controls = control_hits = 0
    not_reflected = 0
    for k in range(trials):
        twin, _ = page(cb, f"{tag}-twin-{k}")
        marked = twin[:3]
        if k % 10 == 0:
            ctl, _ = page(cb, f"{tag}-ctl-{k}")
            controls += 1
            control_hits += all(i in ctl for i in marked)
        viewer = f"{tag}-v-{k}"
        now = int(time.time() * 1000)
        body = json.dumps({"events": [
            {"event_id": f"{tag}-{k}-{j}", "user_id": viewer, "item_id": item, "ts": now + j,
             "type": "impression"} for j, item in enumerate(marked)]})
        t0 = time.perf_counter()
        ca.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
        resp = ca.getresponse()
        resp.read()
        assert resp.status == 200, resp.status
        t_post = time.perf_counter()
        n = 0
        while True:
            shown, took = page(cb, viewer)
            n += 1
            if n == 1:
                first_feed_ms.append(took)
            if not set(marked) & set(shown):
                break
            if time.perf_counter() - t0 > 10:
                not_reflected += 1
                break
        total.append((time.perf_counter() - t0) * 1000)
        post_ms.append((t_post - t0) * 1000)
        polls.append(n)
    ca.close()
    cb.close()

    def q(v: list[float]) -> dict:
        return {"p50": round(statistics.median(v), 1), "p99": round(percentile(v, 99), 1),
                "max": round(max(v), 1)}

    return {"trials": trials, "event_to_feed_ms": q(total), "post_ms": q(post_ms),
            "first_feed_ms": q(first_feed_ms),
            "reflected_by_first_feed": sum(1 for p in polls if p == 1),
            "not_reflected_in_10s": not_reflected, "max_feeds": max(polls),
            "controls": controls, "controls_with_all_3": control_hits}


def latency(tmp: Path, data: Path, pg_extra: list[str], trials: int, load_clients: int,
            batches: Batches) -> tuple[dict, Serve, Serve]:
    a = Serve(tmp, "A", data, pg_extra)
    b = Serve(tmp, "B", data, pg_extra)
    out = {"startup_s": [a.startup_s, b.startup_s]}
    out["idle"] = latency_trials(a, b, trials, f"lat-{uuid.uuid4().hex[:6]}")
    if load_clients:
        stop = threading.Event()
        bg: dict = {}
        t = threading.Thread(target=lambda: bg.update(
            ingest(a.port, load_clients, batches, stop, seed=99)))
        t.start()
        time.sleep(1.0)
        started = time.perf_counter()
        out["under_load"] = latency_trials(a, b, trials, f"lat-{uuid.uuid4().hex[:6]}")
        stop.set()
        t.join()
        bg["events_per_s"] = round(bg["events"] / (time.perf_counter() - started + 1.0))
        out["under_load"]["background"] = {"clients": load_clients, **bg}
    return out, a, b


# -- sizing ---------------------------------------------------------------------------------------
def redis_sizing(redis_url: str, prefix: str, pg_url: str) -> dict:
    import psycopg
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=2000))
    sizes: list[int] = []
    for k in range(0, len(keys), 2000):
        pipe = client.pipeline(transaction=False)
        for key in keys[k:k + 2000]:
            pipe.memory_usage(key, samples=0)
        sizes += [s or 0 for s in pipe.execute()]
    kinds: dict[str, dict] = {}
    per_viewer: dict[str, int] = {}
    for key, size in zip(keys, sizes):
        rest = key[len(prefix):].decode(errors="replace")
        kind = rest.split(":", 1)[0] + (":" if ":" in rest else "")
        entry = kinds.setdefault(kind, {"keys": 0, "bytes": 0})
        entry["keys"] += 1
        entry["bytes"] += size
        if kind in ("u:", "s:"):
            uid = rest.split(":", 1)[1]
            per_viewer[uid] = per_viewer.get(uid, 0) + size
    info = client.info("memory")
    client.close()
    with psycopg.connect(pg_url) as con:
        counts = dict(con.execute("SELECT user_id, count(*) FROM events GROUP BY user_id"))
    buckets: dict[str, list[int]] = {}
    for uid, size in per_viewer.items():
        n = counts.get(uid, 0)
        name = ("0 (feeds only)" if n == 0 else "1-20" if n <= 20 else "21-100" if n <= 100
                else "101-300" if n <= 300 else "over 300")
        buckets.setdefault(name, []).append(size)
    viewers = {name: {"viewers": len(v), "mean_bytes": round(statistics.mean(v)),
                      "p99_bytes": round(percentile(v, 99)), "max_bytes": max(v)}
               for name, v in sorted(buckets.items())}
    return {"keys": len(keys), "bytes": sum(sizes), "by_kind": kinds, "per_viewer": viewers,
            "viewers": len(per_viewer),
            "mean_bytes_per_viewer": round(statistics.mean(per_viewer.values()))
            if per_viewer else None,
            "used_memory_mb": round(info["used_memory"] / 2**20, 1)}


def pg_sizing(pg_url: str) -> dict:
    import psycopg

    out = {}
    with psycopg.connect(pg_url) as con:
        tables = [r[0] for r in con.execute(
            "SELECT relname FROM pg_stat_user_tables ORDER BY relname")]
        for t in tables:
            rows, heap, idx, total = con.execute(
                f'SELECT count(*), pg_relation_size(%s), pg_indexes_size(%s), '
                f'pg_total_relation_size(%s) FROM "{t}"', (t, t, t)).fetchone()
            out[t] = {"rows": rows, "heap_bytes": heap, "index_bytes": idx, "total_bytes": total}
        indexes = con.execute(
            "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
            "WHERE relname = 'events'").fetchall()
        out["events"]["indexes"] = dict(indexes)
        out["database_bytes"] = con.execute(
            "SELECT pg_database_size(current_database())").fetchone()[0]
    return out


# -- the run --------------------------------------------------------------------------------------
@contextlib.contextmanager
def redis_prefix(url: str, keep: bool):
    import redis

    prefix = f"rrscale-{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        if not keep:
            client = redis.Redis.from_url(url)
            keys = [k for k in client.scan_iter(match="*", count=2000) if prefix.encode() in k]
            for k in range(0, len(keys), 1000):
                client.delete(*keys[k:k + 1000])
            client.close()


def catalog_ids(pg_url: str) -> list[str]:
    import psycopg

    with psycopg.connect(pg_url) as con:
        if con.execute("SELECT to_regclass('items')").fetchone()[0] is None:
            return []  # an empty database: the first simulate creates the tables
        return [r[0] for r in con.execute("SELECT item_id FROM items ORDER BY pos")]


def world(args, tmp: Path) -> tuple[Path, Path, dict]:
    """(SQLite data directory, the PostgreSQL deployment's data directory, facts)."""
    sim = ["--items", str(args.items), "--users", str(args.users), "--seed", "7",
           "--no-progress"]
    pg_data = Path(args.world)
    took = {}
    if not catalog_ids(args.pg_url):
        t0 = time.perf_counter()
        subprocess.run(REELRANK + ["simulate", "--store", args.pg_url, "--data-dir",
                                   str(pg_data), *sim], check=True, cwd=ROOT)
        took["simulate_s"] = round(time.perf_counter() - t0, 1)
    if not (pg_data / "models").exists() or not any((pg_data / "models").glob("2*")):
        t0 = time.perf_counter()
        subprocess.run(REELRANK + ["train", "--store", args.pg_url, "--data-dir", str(pg_data),
                                   "--retrieval-epochs", str(args.epochs), "--ranker-epochs",
                                   str(args.epochs), "--no-progress"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        took["train_s"] = round(time.perf_counter() - t0, 1)
    sqlite_template = tmp / "sqlite-world"
    subprocess.run(REELRANK + ["simulate", "--data-dir", str(sqlite_template), *sim],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    shutil.copytree(pg_data / "models", sqlite_template / "models", dirs_exist_ok=True)
    return sqlite_template, pg_data, took


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Scale-out: HTTP ingestion and cross-process event-to-feed latency", "",
        f"Command: `{r['command']}`", "",
        f"Machine: {m['cpus']} CPUs, Python {m['python']}, PostgreSQL and Redis on loopback; "
        f"load average before the run {m['load_before']}, after {m['load_after']}.", "",
        f"World: `reelrank simulate` {r['world']['items']:,} videos, {r['world']['users']:,} "
        "viewers (seed 7) in SQLite and in PostgreSQL, one `reelrank train` model used by "
        "both. Every server: `reelrank serve --trainer off --insecure-no-auth`; PostgreSQL + "
        "Redis adds `--store URL --live redis://...?prefix=...` (and `--workers 2`).", "",
        "## Ingestion: POST /v1/events", "",
        f"{r['ingest']['clients']} closed-loop clients, batches of {r['ingest']['batch']} "
        f"events (viewers drawn from {r['ingest']['viewers']:,}, videos from the catalog), "
        "each server first left alone until its start-up work (community and topic refreshes "
        "over every viewer) was done (settled: "
        + ", ".join(f"{x['settle_s']} s" for x in r["ingest"]["levels"]) + "), then "
        f"{r['ingest']['warmup_s']} s warm-up and {r['ingest']['duration_s']} s counted. CPU "
        "in ms per 1,000 accepted events, by process, over the counted window (PostgreSQL and "
        "Redis: every process of those servers on the machine, other sessions' included; "
        "other: the rest of the machine).", "",
        "| level | events/s | batch p50 / p99 ms | errors | server | PostgreSQL | Redis | "
        "clients | other | cores busy | server RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["ingest"]["levels"]:
        c = x["cpu_ms_per_1000_events"]
        rss = ", ".join(f"{v}" for v in x["rss_mb"].values())
        lines.append(
            f"| {x['level']} | {x['events_per_s']:,} | {x['batch_p50_ms']} / "
            f"{x['batch_p99_ms']} | {sum(x['errors'].values())} | {c['server']} | "
            f"{c['postgresql']} | {c['redis']} | {c['clients']} | {c['other']} | "
            f"{x['cores_busy']} | {rss} |")
    lines += ["", "Redis commands per batch (`INFO commandstats`, every client of the server) and "
              "Redis's own time per accepted event:", ""]
    for x in r["ingest"]["levels"]:
        calls = ", ".join(f"{k} {v}" for k, v in sorted(
            x["redis_calls_per_batch"].items(), key=lambda kv: -kv[1]) if v >= 0.1)
        lines.append(f"- {x['level']}: {calls or 'none'}; {x['redis_us_per_event']} µs per "
                     "event")
    for x in r["ingest"]["levels"]:
        prof = x.get("profile")
        if not prof or "top" not in prof:
            continue
        lines += ["", f"Profile of {x['level']} (py-spy, 100 Hz, one worker, "
                  f"{prof['busy_samples']:,} busy samples after the counted window under the same "
                  "load; share of busy samples with the function on the stack, framework frames "
                  "left out):", "",
                  "| function | % |", "|---|---|"]
        lines += [f"| `{name}` | {pct} |" for name, pct in prof["top"][:25]]
    lat = r["latency"]
    lines += ["", "## Cross-process event-to-feed latency", "",
              "Two `reelrank serve` processes, A and B, on their own ports (one worker each, "
              "the same database and Redis prefix). A trial: POST impressions of 3 videos for a "
              "fresh viewer to A, then ask B for that viewer's feed until none of the 3 is in "
              "it; the time is from the POST to that answer.", "",
              "| run | trials | event-to-feed p50 / p99 / max ms | POST p50 / p99 ms | "
              "first feed p50 / p99 ms | reflected by B's first feed | controls with all 3 |",
              "|---|---|---|---|---|---|---|"]
    for name in ("idle", "under_load"):
        if name not in lat:
            continue
        x = lat[name]
        e, p, f = x["event_to_feed_ms"], x["post_ms"], x["first_feed_ms"]
        label = name if name == "idle" else (
            f"under load ({x['background']['clients']} clients posting to A, "
            f"{x['background']['events_per_s']:,} events/s)")
        lines.append(f"| {label} | {x['trials']} | {e['p50']} / {e['p99']} / {e['max']} | "
                     f"{p['p50']} / {p['p99']} | {f['p50']} / {f['p99']} | "
                     f"{x['reflected_by_first_feed']} of {x['trials']} | "
                     f"{x['controls_with_all_3']} of {x['controls']} |")
    s = r["sizing"]
    rd = s["redis"]
    lines += ["", "## Sizing measurements (after the run)", "",
              f"Redis: {rd['keys']:,} keys under the prefix, {rd['bytes']:,} bytes by "
              f"`MEMORY USAGE` (used_memory {rd['used_memory_mb']} MB for the whole server); "
              f"{rd['viewers']:,} viewers, {rd['mean_bytes_per_viewer']:,} bytes per viewer "
              "(`u:` and `s:` keys) on average.", "",
              "| key kind | keys | bytes | bytes per key |", "|---|---|---|---|"]
    for kind, v in sorted(rd["by_kind"].items(), key=lambda kv: -kv[1]["bytes"]):
        lines.append(f"| `{kind}` | {v['keys']:,} | {v['bytes']:,} | "
                     f"{round(v['bytes'] / max(1, v['keys'])):,} |")
    lines += ["", "| viewer's events in the log | viewers | mean bytes | p99 bytes | max bytes |",
              "|---|---|---|---|---|"]
    for name, v in rd["per_viewer"].items():
        lines.append(f"| {name} | {v['viewers']:,} | {v['mean_bytes']:,} | {v['p99_bytes']:,} "
                     f"| {v['max_bytes']:,} |")
    lines += ["", f"PostgreSQL: database {s['postgresql']['database_bytes']:,} bytes.", "",
              "| table | rows | heap bytes | index bytes | bytes per row (heap + indexes) |",
              "|---|---|---|---|---|"]
    for t, v in s["postgresql"].items():
        if not isinstance(v, dict):
            continue
        lines.append(f"| {t} | {v['rows']:,} | {v['heap_bytes']:,} | {v['index_bytes']:,} | "
                     f"{round(v['total_bytes'] / max(1, v['rows'])):,} |")
    idx = s["postgresql"]["events"]["indexes"]
    lines += ["", "Indexes of `events`: " + ", ".join(f"{k} {v:,} bytes" for k, v in idx.items())
              + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pg-url", required=True, help="a database this run may fill")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--world", default=str(Path(tempfile.gettempdir()) / "rr-scaleout-world"),
                    help="data directory of the PostgreSQL deployment (its model), reused")
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--levels", default="sqlite,pg1,pg2")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--viewers", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--latency-load", type=int, default=1,
                    help="ingestion clients posting to A during the second latency run")
    ap.add_argument("--profile", type=float, default=10.0,
                    help="seconds of py-spy on each level's (first) worker, after its counted "
                         "window (0: none)")
    ap.add_argument("--keep-redis", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaleout"))
    args = ap.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with redis_prefix(args.redis_url, args.keep_redis) as prefix, \
            tempfile.TemporaryDirectory(prefix="rr-scaleout-") as tmpname:
        tmp = Path(tmpname)
        sqlite_template, pg_data, took = world(args, tmp)
        items = catalog_ids(args.pg_url)
        live = f"{args.redis_url}?prefix={prefix}"
        pg_extra = ["--store", args.pg_url, "--live", live]
        tag = uuid.uuid4().hex[:6]
        levels = []
        for level in args.levels.split(","):
            batches = Batches(f"{tag}-{level}", items, args.viewers, args.batch)
            if level == "sqlite":
                data = tmp / "sqlite-run"
                shutil.rmtree(data, ignore_errors=True)
                shutil.copytree(sqlite_template, data)
                server = Serve(tmp, "SQLite, embedded", data, [])
            else:
                n = int(level.removeprefix("pg"))
                server = Serve(tmp, f"PostgreSQL + Redis, {n} worker{'s' if n > 1 else ''}",
                               pg_data, pg_extra, workers=n)
            try:
                levels.append(ingestion_level(
                    server, batches, args.clients, args.warmup, args.duration, args.redis_url,
                    tmp, profile_s=args.profile))
            finally:
                server.stop()
            print(json.dumps(levels[-1]), flush=True)
        lat: dict = {}
        if args.trials:
            lat, a, b = latency(tmp, pg_data, pg_extra, args.trials, args.latency_load,
                                Batches(f"{tag}-bg", items, args.viewers, args.batch))
            lat["rss_mb"] = {"A": a.rss(), "B": b.rss()}
            a.stop()
            b.stop()
            print(json.dumps(lat), flush=True)
        sizing = {"redis": redis_sizing(args.redis_url, prefix, args.pg_url),
                  "postgresql": pg_sizing(args.pg_url)}
    result = {
        "command": "python benchmarks/bench_scaleout.py " + shlex.join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_before": load_before,
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
        "world": {"items": len(items), "users": args.users, **took},
        "ingest": {"clients": args.clients, "batch": args.batch, "viewers": args.viewers,
                   "duration_s": args.duration, "warmup_s": args.warmup, "levels": levels},
        "latency": lat, "sizing": sizing,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
