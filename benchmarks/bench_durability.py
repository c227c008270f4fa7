"""Durability under ``kill -9``, and erasure checked byte by byte in the data directory.

    python benchmarks/bench_durability.py --trials 20

The real server (``reelrank serve``, auth on) runs on one data directory, restarted for each
trial. In each trial, client threads post batches of events with unique ids as fast as the
server takes them; after a random 1-3 s the server is killed with SIGKILL (no shutdown, no
flush). The store is then opened as a restart opens it, and every event of every batch that
was answered 200 must be in it. A batch that was in flight at the kill has no answer; it must
be in the store whole or not at all (the batch is one transaction).

Then the erasure check: a viewer with events in every trial is erased through
``DELETE /v1/users/{id}`` on a restarted server, the server is killed again, and every file of
the data directory (the SQLite database, its WAL and shared memory, keys, anything else) is
searched for the viewer's id as UTF-8 and UTF-16 bytes.

Results: ``benchmarks/results/durability.md`` and ``.json``, with the command that made them.

The scale-out deployment (``--store postgresql://... --live redis://...?prefix=...``, with
``--workers N``, default 2): ``reelrank serve --store URL --live URL --workers N`` runs once for
all trials, and in each trial one worker process (of N on the one port) is killed with SIGKILL
while the clients post; the clients keep posting for ``--after-kill-s`` seconds (the other
workers answer, the supervisor starts a replacement), and every event answered 200 must be in
the PostgreSQL log. ``--kill all`` kills the supervisor and every worker instead, and restarts
the deployment for each trial, as in the embedded case. The erasure check then searches a
``pg_dump`` of the database and the values of every Redis key under the prefix for the id in
the encodings of ``tests/rd.py`` (UTF-8, UTF-16, JSON and URL escapes, hex, base64, digests).

    python benchmarks/bench_durability.py --trials 10 --store postgresql://.../db \
        --live 'redis://127.0.0.1:6379/14?prefix=rrdur:' --out benchmarks/results/durability-scaleout
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reelrank.store import open_store  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
T0 = int(time.time() * 1000) - 3_600_000
N_ITEMS = 200


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``reelrank serve`` on ``data_dir`` as a subprocess, niced so it shares the machine."""

    def __init__(self, data_dir: Path, log: Path, trainer: str, extra: list[str] | None = None,
                 workers: int = 1):
        self.data_dir, self.log, self.trainer = data_dir, log, trainer
        self.extra, self.workers = extra or [], workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> float:
        env = {**os.environ,
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        started = time.perf_counter()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["nice", "-n", "10", sys.executable, "-m", "reelrank.cli", "serve",
                 "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                 "--port", str(self.port), "--trainer", self.trainer, *self.extra,
                 *(["--workers", str(self.workers), "--log-level", "info"] if self.workers > 1
                   else ["--log-level", "warning"])],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)  # its trainer child too is in this group
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log}")
            if self.healthy() and len(self.worker_pids()) >= self.workers:
                return time.perf_counter() - started
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def worker_pids(self) -> list[int]:
        """The worker processes that say they are ready (``--workers``: the supervisor's
        children that logged "API process <pid> ready"); the server itself otherwise."""
        assert self.proc is not None
        if self.workers == 1:
            return [self.proc.pid]
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        text = self.log.read_text(errors="replace")
        return [int(p) for p in kids.split() if f"API process {p} ready" in text]

    def kill_worker(self) -> int:
        """SIGKILL one worker (of several); returns its pid."""
        victim = random.choice(self.worker_pids())
        os.kill(victim, signal.SIGKILL)
        return victim

    def wait_replaced(self, victim: int, timeout_s: float = 180.0) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            pids = self.worker_pids()
            if victim not in pids and len(pids) >= self.workers and self.healthy():
                return time.perf_counter() - started
            time.sleep(0.1)
        raise RuntimeError("the killed worker was not replaced")

    def kill9(self) -> None:
        assert self.proc is not None
        if self.workers > 1:  # the supervisor and every worker: the whole group
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        # A trainer child, if any, exits when its stdin closes; wait so it holds no file.
        try:
            os.killpg(self.proc.pid, 0)
            time.sleep(0.5)
        except ProcessLookupError:
            pass


def tokens(data_dir: Path) -> dict[str, str]:
    return json.loads((data_dir / "keys.json").read_text())


def post_load(base: str, token: str, trial: int, stop: threading.Event, n_clients: int,
              batch: int, erase_user: str, keep_going: bool = False,
              answered_at: list[float] | None = None,
              ) -> tuple[list[list[str]], list[list[str]], int]:
    """Client threads posting batches until ``stop`` or the server dies (``keep_going``: until
    ``stop`` only, reconnecting after a failed request, as a client of several workers does).
    Returns the batches answered 200, the batches without an answer (in flight at the kill),
    and errors seen; ``answered_at`` gets the time of each 200."""
    accepted: list[list[str]] = []
    unanswered: list[list[str]] = []
    errors = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        rng = random.Random(trial * 1000 + k)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                          timeout=30.0) as http:
            n = 0
            while not stop.is_set():
                ids = [f"t{trial}-c{k}-b{n}-{j}" for j in range(batch)]
                events = [{"event_id": eid, "user_id": erase_user if j == 0 else
                           f"user{rng.randrange(2000)}",
                           "item_id": f"v{rng.randrange(N_ITEMS)}",
                           "ts": T0 + trial * 100_000 + n * batch + j,
                           "type": rng.choice(("impression", "play", "like", "skip")),
                           "watch_ms": rng.randrange(1, 30_000)}
                          for j, eid in enumerate(ids)]
                n += 1
                try:
                    r = http.post("/v1/events", json={"events": events})
                except httpx.HTTPError:
                    with lock:
                        unanswered.append(ids)
                    if keep_going:
                        time.sleep(0.05)
                        continue
                    return  # the server is gone
                with lock:
                    if r.status_code == 200:
                        accepted.append(ids)
                        if answered_at is not None:
                            answered_at.append(time.perf_counter())
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return accepted, unanswered, errors[0]


def stored_ids(data_dir: Path | str) -> set[str]:
    """The event ids in the store: a data directory's SQLite file (what a restart opens: SQLite
    recovers from its WAL), or a PostgreSQL URL."""
    store = open_store(data_dir)
    try:
        return {e.event_id for _, e in store.iter_events()}
    finally:
        store.close()


def make_server(data_dir: Path, log: Path, args) -> Server:
    if args.store:
        return Server(data_dir, log, "off", ["--store", args.store, "--live", args.live],
                      args.workers)
    return Server(data_dir, log, args.trainer)


def run_trial(data_dir: Path, log: Path, trial: int, args, erase_user: str,
              running: Server | None = None, ready_s: float = 0.0) -> dict:
    """One trial. ``running``: a deployment that stays up, of which one worker is killed
    (``--kill worker``); otherwise a server started for this trial and killed whole."""
    server = running or make_server(data_dir, log, args)
    if running is None:
        ready_s = server.start()
    keys = tokens(data_dir)
    if trial == 0:
        items = [{"item_id": f"v{i}", "creator_id": f"c{i % 20}", "duration_ms": 15_000,
                  "created_at": T0 - i * 60_000, "hashtags": [f"t{i % 10}"]}
                 for i in range(N_ITEMS)]
        r = httpx.post(f"{server.base}/v1/items", json={"items": items},
                       headers={"Authorization": f"Bearer {keys['ingest']}"}, timeout=30)
        r.raise_for_status()
    stop = threading.Event()
    result: dict = {}

    answered_at: list[float] = []

    def load() -> None:
        result["accepted"], result["unanswered"], result["errors"] = post_load(
            server.base, keys["ingest"], trial, stop, args.clients, args.batch, erase_user,
            keep_going=running is not None, answered_at=answered_at)

    loader = threading.Thread(target=load)
    started = time.perf_counter()
    loader.start()
    kill_after = random.Random(trial).uniform(args.min_run_s, args.max_run_s)
    time.sleep(kill_after)
    killed_at = time.perf_counter()
    if running is not None:
        victim = server.kill_worker()
        time.sleep(args.after_kill_s)  # the clients go on: the other workers answer
    else:
        server.kill9()
    stop.set()
    loader.join()
    ran_s = killed_at - started
    found = stored_ids(args.store or data_dir)
    accepted_ids = [i for batch in result["accepted"] for i in batch]
    lost = [i for i in accepted_ids if i not in found]
    whole = partial = absent = 0
    for batch in result["unanswered"]:
        present = sum(i in found for i in batch)
        if present == len(batch):
            whole += 1
        elif present == 0:
            absent += 1
        else:
            partial += 1
    return {"trial": trial, "ready_s": round(ready_s, 2), "killed_after_s": round(ran_s, 2),
            "batches_accepted": len(result["accepted"]), "events_accepted": len(accepted_ids),
            "events_found": len(accepted_ids) - len(lost), "events_lost": len(lost),
            "in_flight_batches": len(result["unanswered"]), "in_flight_stored_whole": whole,
            "in_flight_absent": absent, "in_flight_partial": partial,
            "non_200_answers": result["errors"], "events_in_store": len(found),
            "answered_200_after_kill": sum(1 for t in answered_at if t > killed_at),
            **({"killed": f"worker {victim}",
                "replaced_after_s": round(server.wait_replaced(victim) + args.after_kill_s, 2)}
               if running is not None else {"killed": "all"})}


def erasure_check(data_dir: Path, log: Path, args, erase_user: str,
                  running: Server | None = None) -> dict:
    server = running or make_server(data_dir, log, args)
    if running is None:
        server.start()
    keys = tokens(data_dir)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    before = httpx.get(f"{server.base}/v1/users/{erase_user}/data", headers=admin, timeout=60)
    n_events = len(before.json().get("events", [])) if before.status_code == 200 else None
    # The viewer's feed and explanations put them in memory too (traces, served sets).
    httpx.get(f"{server.base}/v1/feed", params={"user_id": erase_user}, headers=admin,
              timeout=30)
    r = httpx.delete(f"{server.base}/v1/users/{erase_user}", headers=admin, timeout=120)
    status = r.status_code
    server.kill9()  # no clean shutdown: what is on disk at the answer must already be clean
    if args.store:
        return {"user": erase_user, "events_before": n_events, "delete_status": status,
                **search_deployment(args, erase_user),
                "events_in_store_after": len(stored_ids(args.store))}
    needles = {"utf-8": erase_user.encode("utf-8"), "utf-16-le": erase_user.encode("utf-16-le")}
    hits: list[str] = []
    files = 0
    scanned = 0
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        files += 1
        content = path.read_bytes()
        scanned += len(content)
        for name, needle in needles.items():
            if needle in content:
                hits.append(f"{path.relative_to(data_dir)} ({name})")
    after = stored_ids(data_dir)
    return {"user": erase_user, "events_before": n_events, "delete_status": status,
            "files_searched": files, "bytes_searched": scanned, "hits": hits,
            "events_in_store_after": len(after)}


def live_state_gap(args) -> dict:
    """Events in the PostgreSQL log that the shared live state never folded in: per viewer,
    the events in the log against the events their Redis state counts (every applied event
    raises ``counts[type]`` by one)."""
    import psycopg
    import redis

    from reelrank.store.redis_codec import decode_user, parse_live_url

    with psycopg.connect(args.store) as con:
        logged = dict(con.execute("SELECT user_id, count(*) FROM events GROUP BY user_id"))
    target, prefix = parse_live_url(args.live)
    client = redis.Redis.from_url(target)
    try:
        ids = list(logged)
        pipe = client.pipeline(transaction=False)
        for uid in ids:
            pipe.hget(prefix + "u:" + uid, "s")
        states = pipe.execute()
    finally:
        client.close()
    missing, extra = {}, {}
    for uid, text in zip(ids, states):
        applied = 0
        if text:
            counts = decode_user(uid, text).counts
            applied = sum(v for k, v in counts.items() if k != "long_view")
        if logged[uid] > applied:
            missing[uid] = logged[uid] - applied
        elif applied > logged[uid]:
            extra[uid] = applied - logged[uid]
    return {"events_in_log": sum(logged.values()), "viewers": len(logged),
            "events_not_in_live_state": sum(missing.values()),
            "viewers_short": len(missing), "events_counted_twice": sum(extra.values())}


def live_state_catch_up(args) -> dict:
    """The gap right after the trials, then polled until the API processes' catch-up from the
    store's outbox (``Engine.catch_up_live``: every 5 s, batches 10 s old) closes it, or
    ``--catch-up-wait-s`` passes."""
    started = time.monotonic()
    first = gap = live_state_gap(args)
    while gap["events_not_in_live_state"] or gap["events_counted_twice"]:
        if time.monotonic() - started > args.catch_up_wait_s:
            break
        time.sleep(1.0)
        gap = live_state_gap(args)
    return {**first, "after": gap, "waited_s": round(time.monotonic() - started, 1)}


def search_deployment(args, erase_user: str) -> dict:
    """A ``pg_dump`` of the database and every Redis key under the prefix (with its value),
    searched for the id in the encodings of ``tests/rd.py``."""
    import redis

    from reelrank.store.redis_codec import parse_live_url
    from tests.rd import encodings, redis_dump

    needles = encodings(erase_user)
    dump = subprocess.run(["pg_dump", "--no-owner", args.store], capture_output=True,
                          timeout=300, check=True).stdout
    target, prefix = parse_live_url(args.live)
    client = redis.Redis.from_url(target)
    try:
        values = redis_dump(client, prefix)
    finally:
        client.close()
    hits = [f"{where} ({name})" for where, text in (("pg_dump", dump), ("Redis", values))
            for name, needle in needles.items() if needle in text]
    return {"searched": f"pg_dump ({len(dump):,} bytes) and Redis keys with values under the "
                        f"prefix ({len(values):,} bytes), {len(needles)} encodings",
            "files_searched": 2, "bytes_searched": len(dump) + len(values), "hits": hits}


def markdown(report: dict) -> str:
    t = report["totals"]
    e = report["erasure"]
    st = report["settings"]
    if st.get("store"):
        setup = (
            f"Deployment: `reelrank serve --store postgresql://... --live redis://... --workers "
            f"{st['workers']}` (auth on, no trainer, niced), one database and Redis prefix "
            f"across all trials; {st['clients']} client threads posting batches of "
            f"{st['batch']} events with unique ids (reconnecting after a failed request), "
            + (f"SIGKILL to one worker process after a random {st['min_run_s']}-"
               f"{st['max_run_s']} s while the clients go on posting for "
               f"{st['after_kill_s']} s more; the supervisor starts a replacement, and the next "
               "trial starts once it is ready. The PostgreSQL log is read afterwards."
               if st["kill"] == "worker" else
               f"SIGKILL to the supervisor and every worker after a random {st['min_run_s']}-"
               f"{st['max_run_s']} s, the deployment restarted for each trial; the PostgreSQL "
               "log is read after the kill."))
    else:
        setup = (
            f"Server: `reelrank serve` (auth on, `--trainer {st['trainer']}`, niced), one data "
            f"directory across all trials; {st['clients']} client threads posting batches of "
            f"{st['batch']} events with unique ids, SIGKILL after a random "
            f"{st['min_run_s']}-{st['max_run_s']} s, the store opened afterwards as a restart "
            "opens it.")
    worker_mode = bool(report["trials"]) and "replaced_after_s" in report["trials"][0]
    lines = [
        "# Durability: accepted events under `kill -9`, and erasure byte search",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}. {setup}",
        "",
        f"**{t['trials']} trials: {t['events_accepted']:,} events answered 200, "
        f"{t['events_found']:,} found after the kill, {t['events_lost']} lost.** "
        f"Batches in flight at the kill (no answer): {t['in_flight_batches']}, of which "
        f"{t['in_flight_stored_whole']} stored whole, {t['in_flight_absent']} absent and "
        f"{t['in_flight_partial']} partly stored.",
        "",
        "| trial | killed after s | restart ready s | events accepted | found | lost "
        "| in flight (whole / absent / partial) |"
        + (" batches answered 200 after the kill | replacement ready after s |"
           if worker_mode else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if worker_mode else ""),
    ]
    for r in report["trials"]:
        lines.append(f"| {r['trial']} | {r['killed_after_s']} | {r['ready_s']} | "
                     f"{r['events_accepted']:,} | {r['events_found']:,} | {r['events_lost']} | "
                     f"{r['in_flight_batches']} ({r['in_flight_stored_whole']} / "
                     f"{r['in_flight_absent']} / {r['in_flight_partial']}) |"
                     + (f" {r['answered_200_after_kill']} | {r['replaced_after_s']} |"
                        if worker_mode else ""))
    gap = report.get("live_state_gap")
    if gap:
        lines += [
            "", "## The live state against the log", "",
            f"Right after the trials, before the erasure (whose rebuild from the log would "
            f"repair it): of {gap['events_in_log']:,} events in the PostgreSQL log, "
            f"{gap['events_not_in_live_state']:,} were not yet counted in their viewer's Redis "
            f"state ({gap['viewers_short']:,} of {gap['viewers']:,} viewers short) and "
            f"{gap['events_counted_twice']:,} were counted twice: batches committed by a "
            "worker killed before `apply_many` finished, which the other processes fold in "
            "from the store's outbox once they are 10 s old.",
            "",
            f"**After {gap['waited_s']} s: {gap['after']['events_not_in_live_state']:,} "
            f"events not in the live state, {gap['after']['events_counted_twice']:,} counted "
            f"twice** ({gap['after']['viewers_short']:,} viewers short)."]
    if "searched" in e:
        lines += [
            "", "## Erasure", "",
            f"The viewer `{e['user']}` had {e['events_before']} events (one in every batch of "
            f"every trial). `DELETE /v1/users/{{id}}` answered {e['delete_status']}; every "
            f"process of the deployment was then killed with SIGKILL and {e['searched']} were "
            f"searched for the id: **{len(e['hits'])} hits**"
            + (f" ({', '.join(e['hits'])})." if e["hits"] else "."), ""]
        return "\n".join(lines)
    lines += [
        "",
        "## Erasure",
        "",
        f"The viewer `{e['user']}` had {e['events_before']} events (one in every batch of every "
        f"trial). `DELETE /v1/users/{{id}}` answered {e['delete_status']}; the server was then "
        f"killed with SIGKILL and {e['files_searched']} files of the data directory "
        f"({e['bytes_searched']:,} bytes: database, WAL, keys) were searched for the id as "
        f"UTF-8 and UTF-16: **{len(e['hits'])} hits**"
        + (f" ({', '.join(e['hits'])})." if e["hits"] else "."),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--catch-up-wait-s", type=float, default=60.0,
                        help="how long to wait for the live state to fold in what killed "
                             "workers left in the outbox (scale-out deployment)")
    parser.add_argument("--min-run-s", type=float, default=1.0)
    parser.add_argument("--max-run-s", type=float, default=3.0)
    parser.add_argument("--trainer", default="off", choices=("process", "off"),
                        help="the server's online trainer (off: no model is trained here)")
    parser.add_argument("--store", default=None,
                        help="a PostgreSQL URL: the scale-out deployment (with --live)")
    parser.add_argument("--live", default=None,
                        help="redis://host:port/db?prefix=... (a prefix of its own)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill", choices=("worker", "all"), default="worker",
                        help="with --store: kill one worker per trial, or every process")
    parser.add_argument("--after-kill-s", type=float, default=1.5,
                        help="with --kill worker: seconds the clients go on after the kill")
    parser.add_argument("--out", type=Path, default=RESULTS / "durability")
    args = parser.parse_args()
    if bool(args.store) != bool(args.live):
        parser.error("--store and --live go together")
    if args.store and args.kill == "worker" and args.workers < 2:
        parser.error("--kill worker needs --workers 2 or more")
    work = Path(tempfile.mkdtemp(prefix="reelrank-durability-"))
    data_dir = work / "data"
    log = work / "server.log"
    erase_user = f"erase-me-{uuid.uuid4().hex[:12]}"
    trials = []
    running = None
    ready_s = 0.0
    if args.store and args.kill == "worker":
        running = make_server(data_dir, log, args)
        ready_s = running.start(timeout_s=600)
    try:
        for trial in range(args.trials):
            result = run_trial(data_dir, log, trial, args, erase_user, running, ready_s)
            trials.append(result)
            ready_s = result.get("replaced_after_s", 0.0)
            print(json.dumps(result), flush=True)
        # Before the erasure, whose rebuild of the live state from the log would repair it.
        gap = live_state_catch_up(args) if args.store else None
        if gap is not None:
            print(json.dumps(gap), flush=True)
        erasure = erasure_check(data_dir, log, args, erase_user, running)
    finally:
        if running is not None and running.proc is not None and running.proc.poll() is None:
            running.kill9()
    print(json.dumps(erasure), flush=True)
    keys = ("events_accepted", "events_found", "events_lost", "in_flight_batches",
            "in_flight_stored_whole", "in_flight_absent", "in_flight_partial")
    totals = {k: sum(t[k] for t in trials) for k in keys}
    totals["trials"] = len(trials)
    report = {
        "command": "python benchmarks/bench_durability.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}, load average (1 min) at the end "
                   f"{os.getloadavg()[0]:.2f} (shared machine)",
        "settings": {k: getattr(args, k) for k in ("clients", "batch", "min_run_s",
                                                   "max_run_s", "trainer", "workers", "kill",
                                                   "after_kill_s")}
                    | {"store": bool(args.store)},
        "totals": totals, "trials": trials, "erasure": erasure, "live_state_gap": gap,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    ok = totals["events_lost"] == 0 and totals["in_flight_partial"] == 0 and not erasure["hits"]
    if gap is not None:
        ok = ok and not gap["after"]["events_not_in_live_state"] \
            and not gap["after"]["events_counted_twice"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
