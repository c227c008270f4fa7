"""Store ingestion benchmark: events/s of ``append_events`` in batches, PostgreSQL beside SQLite.

Each backend gets the same events (synthetic ids, about the size of real ones) appended in
batches of --batch-size, one call per batch, each call returning only once its batch is
committed (durable). Reported per backend: total events/s over all batches, and the median and
worst batch. A second pass re-sends the first --dup-batches batches to time the duplicate path
(every event known; nothing is written). The PostgreSQL run uses a throwaway database on the
loopback server (tests/pg.py; or --pg-url for a database of your own, whose tables it fills).

--http adds the same through the real server: `reelrank serve` (auth on, no trainer) on each
store, the catalog posted first, then the batches POSTed to /v1/events one at a time from one
client thread, bodies serialised before the clock starts; each 200 means committed.

    python benchmarks/bench_store_ingest.py --http                # 30 batches of 10,000
    python benchmarks/bench_store_ingest.py --batches 5 --out /tmp/quick

Results go to benchmarks/results/store_ingest.json and .md, with the command that made them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reelrank.store import open_store  # noqa: E402
from reelrank.types import Event  # noqa: E402

TYPES = ("impression", "play", "skip", "like", "impression", "play")


def make_batch(b: int, size: int) -> list[Event]:
    out = []
    for k in range(size):
        n = b * size + k
        out.append(Event(
            event_id=f"ev-{n:012d}-{n * 2654435761 % 2**32:08x}", user_id=f"u{n % 10_000}",
            item_id=f"v{n * 7 % 100_000}", ts=1_700_000_000_000 + n, type=TYPES[n % len(TYPES)],
            watch_ms=(n % 30_000) if n % 3 else None, request_id=f"r{n // 10}", position=n % 10,
            device="ios", region="US", source="feed", session_id=f"s{n // 200}"))
    return out


def run(store, batches: int, size: int, dup_batches: int) -> dict:
    times = []
    for b in range(batches):
        batch = make_batch(b, size)
        t0 = time.perf_counter()
        res = store.append_events(batch)
        times.append(time.perf_counter() - t0)
        assert len(res.accepted) == size and res.duplicates == 0
    dup_times = []
    for b in range(min(dup_batches, batches)):
        batch = make_batch(b, size)
        t0 = time.perf_counter()
        res = store.append_events(batch)
        dup_times.append(time.perf_counter() - t0)
        assert not res.accepted and res.duplicates == size
    assert store.count_events() == batches * size
    rates = [size / t for t in times]
    return {
        "events": batches * size,
        "events_per_s": round(batches * size / sum(times)),
        "median_batch_events_per_s": round(statistics.median(rates)),
        "slowest_batch_events_per_s": round(min(rates)),
        "median_batch_ms": round(statistics.median(times) * 1000, 1),
        "duplicate_batches_median_events_per_s":
            round(statistics.median(size / t for t in dup_times)) if dup_times else None,
    }


def event_json(e: Event) -> dict:
    body = {"event_id": e.event_id, "user_id": e.user_id, "item_id": e.item_id, "ts": e.ts,
            "type": e.type, "context": {"device": e.device, "region": e.region,
                                        "session_id": e.session_id}}
    if e.watch_ms is not None:
        body["watch_ms"] = e.watch_ms
    return body


def run_http(data_dir: Path, store_url: str | None, batches: int, size: int) -> dict:
    """Events/s through POST /v1/events on a real server process over this store."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "reelrank.cli", "serve", "--data-dir", str(data_dir),
           "--port", str(port), "--trainer", "off", "--max-body-mb", "32",
           "--log-level", "warning"]
    if store_url:
        cmd += ["--store", store_url]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            for _ in range(600):
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None:
                    raise SystemExit(f"server exited: {server.stderr.read().decode()}")
                time.sleep(0.1)
            keys = json.loads((data_dir / "keys.json").read_text())
            head = {"Authorization": f"Bearer {keys['ingest']}",
                    "Content-Type": "application/json"}
            n_items = 100_000
            for start in range(0, n_items, 10_000):
                items = [{"item_id": f"v{i}", "creator_id": f"c{i % 5000}", "duration_ms": 15_000,
                          "created_at": 1_600_000_000_000} for i in range(start, start + 10_000)]
                http.post("/v1/items", json={"items": items}, headers=head).raise_for_status()
            bodies = [json.dumps({"events": [event_json(e) for e in make_batch(b, size)]})
                      for b in range(batches)]
            times = []
            for body in bodies:
                t0 = time.perf_counter()
                r = http.post("/v1/events", content=body, headers=head)
                times.append(time.perf_counter() - t0)
                r.raise_for_status()
                assert r.json() == {"accepted": size, "duplicates": 0}, r.text
    finally:
        server.terminate()
        server.wait(timeout=60)
    rates = [size / t for t in times]
    return {"events": batches * size, "events_per_s": round(batches * size / sum(times)),
            "median_batch_events_per_s": round(statistics.median(rates)),
            "slowest_batch_events_per_s": round(min(rates)),
            "median_batch_ms": round(statistics.median(times) * 1000, 1),
            "duplicate_batches_median_events_per_s": None}


def _rate(value: int | None) -> str:
    return "-" if value is None else f"{value:,}/s"


@contextlib.contextmanager
def pg_database(url: str | None):
    if url:
        yield url
        return
    from tests.pg import throwaway_database

    with throwaway_database() as fresh:
        yield fresh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--dup-batches", type=int, default=5)
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--backends", default="postgresql,sqlite")
    ap.add_argument("--http", action="store_true", help="also through the HTTP server")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "store_ingest"))
    args = ap.parse_args()
    results: dict[str, dict] = {}
    for name in args.backends.split(","):
        if name == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                store = open_store(f"sqlite:///{tmp}/bench.db")
                try:
                    results[name] = run(store, args.batches, args.batch_size, args.dup_batches)
                finally:
                    store.close()
        elif name == "postgresql":
            with pg_database(args.pg_url) as url:
                store = open_store(url)
                try:
                    results[name] = run(store, args.batches, args.batch_size, args.dup_batches)
                finally:
                    store.close()
        else:
            raise SystemExit(f"unknown backend {name!r}")
    for name in args.backends.split(",") if args.http else ():
        with tempfile.TemporaryDirectory() as tmp:
            if name == "sqlite":
                results[f"{name}, HTTP"] = run_http(Path(tmp), None, args.batches,
                                                    args.batch_size)
            else:
                with pg_database(args.pg_url) as url:
                    results[f"{name}, HTTP"] = run_http(Path(tmp), url, args.batches,
                                                        args.batch_size)
    command = "python benchmarks/bench_store_ingest.py " + " ".join(sys.argv[1:])
    report = {"command": command.strip(), "batch_size": args.batch_size,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
              "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Store ingestion: append_events in batches", "",
        f"Command: `{report['command']}`  ", f"Machine: {report['machine']}", "",
        f"Batches of {args.batch_size:,} events, one durable (committed) call per batch; the "
        "duplicate column re-sends batches already stored. Rows named HTTP are POST /v1/events "
        "on a `reelrank serve` process (auth on, no trainer), client on the same machine.", "",
        "| backend | events | events/s | median batch | slowest batch | median batch ms | "
        "duplicates, median batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['events']:,} | {r['events_per_s']:,} | "
            f"{r['median_batch_events_per_s']:,}/s | {r['slowest_batch_events_per_s']:,}/s | "
            f"{r['median_batch_ms']} | {_rate(r['duplicate_batches_median_events_per_s'])} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
