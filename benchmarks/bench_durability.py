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

    def __init__(self, data_dir: Path, log: Path, trainer: str):
        self.data_dir, self.log, self.trainer = data_dir, log, trainer
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
                 "--port", str(self.port), "--trainer", self.trainer, "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)  # its trainer child too is in this group
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1.0).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    def kill9(self) -> None:
        assert self.proc is not None
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
              batch: int, erase_user: str) -> tuple[list[list[str]], list[list[str]], int]:
    """Client threads posting batches until ``stop`` or the server dies. Returns the batches
    answered 200, the batches without an answer (in flight at the kill), and errors seen."""
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
                    return  # the server is gone
                with lock:
                    if r.status_code == 200:
                        accepted.append(ids)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return accepted, unanswered, errors[0]


def stored_ids(data_dir: Path) -> set[str]:
    store = open_store(data_dir)  # what a restart opens: SQLite recovers from its WAL
    try:
        return {e.event_id for _, e in store.iter_events()}
    finally:
        store.close()


def run_trial(data_dir: Path, log: Path, trial: int, args, erase_user: str) -> dict:
    server = Server(data_dir, log, args.trainer)
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

    def load() -> None:
        result["accepted"], result["unanswered"], result["errors"] = post_load(
            server.base, keys["ingest"], trial, stop, args.clients, args.batch, erase_user)

    loader = threading.Thread(target=load)
    started = time.perf_counter()
    loader.start()
    kill_after = random.Random(trial).uniform(args.min_run_s, args.max_run_s)
    time.sleep(kill_after)
    server.kill9()
    stop.set()
    loader.join()
    ran_s = time.perf_counter() - started
    found = stored_ids(data_dir)
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
            "non_200_answers": result["errors"], "events_in_store": len(found)}


def erasure_check(data_dir: Path, log: Path, args, erase_user: str) -> dict:
    server = Server(data_dir, log, args.trainer)
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


def markdown(report: dict) -> str:
    t = report["totals"]
    e = report["erasure"]
    lines = [
        "# Durability: accepted events under `kill -9`, and erasure byte search",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}. Server: `reelrank serve` (auth on, `--trainer "
        f"{report['settings']['trainer']}`, niced), one data directory across all trials; "
        f"{report['settings']['clients']} client threads posting batches of "
        f"{report['settings']['batch']} events with unique ids, SIGKILL after a random "
        f"{report['settings']['min_run_s']}-{report['settings']['max_run_s']} s, the store "
        "opened afterwards as a restart opens it.",
        "",
        f"**{t['trials']} trials: {t['events_accepted']:,} events answered 200, "
        f"{t['events_found']:,} found after the kill, {t['events_lost']} lost.** "
        f"Batches in flight at the kill (no answer): {t['in_flight_batches']}, of which "
        f"{t['in_flight_stored_whole']} stored whole, {t['in_flight_absent']} absent and "
        f"{t['in_flight_partial']} partly stored.",
        "",
        "| trial | killed after s | restart ready s | events accepted | found | lost "
        "| in flight (whole / absent / partial) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["trials"]:
        lines.append(f"| {r['trial']} | {r['killed_after_s']} | {r['ready_s']} | "
                     f"{r['events_accepted']:,} | {r['events_found']:,} | {r['events_lost']} | "
                     f"{r['in_flight_batches']} ({r['in_flight_stored_whole']} / "
                     f"{r['in_flight_absent']} / {r['in_flight_partial']}) |")
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
    parser.add_argument("--min-run-s", type=float, default=1.0)
    parser.add_argument("--max-run-s", type=float, default=3.0)
    parser.add_argument("--trainer", default="off", choices=("process", "off"),
                        help="the server's online trainer (off: no model is trained here)")
    parser.add_argument("--out", type=Path, default=RESULTS / "durability")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reelrank-durability-"))
    data_dir = work / "data"
    log = work / "server.log"
    erase_user = f"erase-me-{uuid.uuid4().hex[:12]}"
    trials = []
    for trial in range(args.trials):
        result = run_trial(data_dir, log, trial, args, erase_user)
        trials.append(result)
        print(json.dumps(result), flush=True)
    erasure = erasure_check(data_dir, log, args, erase_user)
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
                                                   "max_run_s", "trainer")},
        "totals": totals, "trials": trials, "erasure": erasure,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    ok = totals["events_lost"] == 0 and totals["in_flight_partial"] == 0 and not erasure["hits"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
