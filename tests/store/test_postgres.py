"""What the PostgreSQL store promises beyond the shared contract: several writers and stores on
one database, tailing by seq, durability settings, erasure in a dump, and serving on it.

Each test gets a throwaway database (tests/pg.py): skipped without a server, failed under CI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest
from fastapi.testclient import TestClient

from reelrank.errors import StoreError
from reelrank.store import open_store
from reelrank.types import ApiKey, Event, Item, UserSettings
from tests.pg import throwaway_database


@pytest.fixture
def url():
    with throwaway_database() as u:
        yield u


def ev(n: int, user: str = "u1", **kw) -> Event:
    base = dict(event_id=f"e{n}", user_id=user, item_id="v1", ts=1000 + n, type="play",
                watch_ms=500)
    base.update(kw)
    return Event(**base)


def test_a_tail_by_seq_misses_nothing_while_writers_race(url):
    """Readers that follow the log by ``seq > last_seen`` (the trainer, other processes) rely on
    commits arriving in seq order; two stores stand for two API processes."""
    stores = [open_store(url), open_store(url)]
    writers_done = threading.Event()
    seen: list[tuple[int, str]] = []

    def write(w: int) -> None:
        s = stores[w % 2]
        for b in range(40):
            s.append_events([ev(w * 100_000 + b * 10 + k, user=f"u{w}") for k in range(10)])

    def tail() -> None:
        reader, last = stores[0], 0
        while True:
            finished = writers_done.is_set()  # read before the final pass
            for seq, e in reader.iter_events(after_seq=last):
                seen.append((seq, e.event_id))
                last = seq
            if finished:
                return

    tailer = threading.Thread(target=tail)
    tailer.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writers_done.set()
    tailer.join()
    try:
        assert len(seen) == 6 * 40 * 10 == stores[1].count_events()
        assert len({eid for _, eid in seen}) == len(seen)
        assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    finally:
        for s in stores:
            s.close()


def test_two_stores_share_ids_salt_and_schema(url):
    # Opened at once, as two processes starting together would: the schema lock serialises them.
    opened: list = []
    threads = [threading.Thread(target=lambda: opened.append(open_store(url))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b, c = opened
    try:
        assert [e.event_id for e in a.append_events([ev(1), ev(2)]).accepted] == ["e1", "e2"]
        res = b.append_events([ev(2), ev(3)])
        assert [e.event_id for e in res.accepted] == ["e3"] and res.duplicates == 1
        a.log_access("u1", "user", "export", ts=5)
        assert [r.action for r in c.access_log("u1")] == ["export"]
        assert c.count_events() == 3
    finally:
        for s in opened:
            s.close()


def test_commits_are_durable_even_where_the_database_says_otherwise(url):
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    s = open_store(url)
    try:
        with s._tx() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    finally:
        s.close()


def test_connections_killed_under_the_pool_cost_no_failed_call(url):
    """As after a database restart: every pooled session is gone; the next calls reconnect."""
    import psycopg

    s = open_store(url)
    try:
        s.append_events([ev(1)])
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(url, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()[0]
        assert killed >= 1
        assert [e.event_id for e in s.append_events([ev(2)]).accepted] == ["e2"]
        assert s.count_events() == 2 and s.get_settings("u1") == UserSettings(user_id="u1")
    finally:
        s.close()


def test_a_duplicate_inside_one_batch_keeps_the_first_copy(url):
    s = open_store(url)
    try:
        res = s.append_events([ev(1, ts=7), ev(2), ev(1, ts=9)])
        assert [(e.event_id, e.ts) for e in res.accepted] == [("e1", 7), ("e2", 1002)]
        assert res.duplicates == 1
        assert [(e.event_id, e.ts) for _, e in s.iter_events()] == [("e1", 7), ("e2", 1002)]
        # An item twice in one batch: the last copy wins, as in SQLite.
        it = dict(creator_id="c", duration_ms=1, created_at=1)
        s.upsert_items([Item(item_id="v", caption="a", **it), Item(item_id="v", caption="b", **it)])
        assert s.get_items(["v"])["v"].caption == "b"
    finally:
        s.close()


def test_text_postgresql_cannot_hold_is_refused_as_invalid_input(url):
    from reelrank.errors import ValidationError

    s = open_store(url)
    try:
        it = dict(creator_id="c", duration_ms=1, created_at=1)
        with pytest.raises(ValidationError, match="NUL"):
            s.upsert_items([Item(item_id="ok", **it), Item(item_id="v", caption="a\x00b", **it)])
        with pytest.raises(ValidationError):
            s.append_events([ev(1), ev(2, device="x\x00")])
        assert s.count_items() == 0 and s.count_events() == 0
    finally:
        s.close()


def test_scans_page_through_a_large_log_in_order(url, monkeypatch):
    from reelrank.store import postgres

    monkeypatch.setattr(postgres, "_PAGE", 7)
    s = open_store(url)
    try:
        s.append_events([ev(n, user=f"u{n % 3}") for n in range(50)])
        assert [e.event_id for _, e in s.iter_events()] == [f"e{n}" for n in range(50)]
        assert [e.event_id for _, e in s.iter_events(user_id="u2")] == \
            [f"e{n}" for n in range(50) if n % 3 == 2]
        s.upsert_items([Item(item_id=f"v{n}", creator_id="c", duration_ms=1, created_at=1)
                        for n in range(20)])
        assert [i.item_id for i in s.iter_items()] == [f"v{n}" for n in range(20)]
        # A scan covers the log as it was when it started.
        scan = s.iter_events()
        next(scan)
        s.append_events([ev(99)])
        assert len(list(scan)) == 49
    finally:
        s.close()


def test_ids_sort_bytewise_whatever_the_database_locale(url):
    s = open_store(url)
    try:
        for u in ("b", "B", "a", "_x", "é"):
            s.put_settings(UserSettings(user_id=u))
        assert [x.user_id for x in s.iter_settings()] == sorted(["b", "B", "a", "_x", "é"])
    finally:
        s.close()


def test_an_unreachable_server_is_a_store_error_without_the_password():
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        open_store("postgresql://someone:s3cret-pw@127.0.0.1:1/none")
    assert "s3cret-pw" not in str(err.value) and "***" in str(err.value)
    assert time.monotonic() - started < 15


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_an_erased_viewer_is_absent_from_a_dump(url):
    s = open_store(url)
    gone, kept = "viewer-to-erase-7f3a", "viewer-who-stays-2b9c"
    try:
        s.append_events([ev(n, user=gone if n % 2 else kept) for n in range(20)])
        s.put_settings(UserSettings(user_id=gone, muted_keywords=("x",)))
        s.put_key(ApiKey(key_hash="h-gone", scope="user", user_id=gone))
        s.log_access(gone, "user", "export")
        assert s.erase_user(gone) == 10
    finally:
        s.close()
    dump = subprocess.run(["pg_dump", "--data-only", url], capture_output=True, timeout=60,
                          check=True).stdout
    assert kept.encode() in dump  # the dump does hold the data
    assert gone.encode() not in dump and b"h-gone" not in dump


def test_serve_on_postgresql(url, tmp_path):
    from reelrank.service.server import prepare

    with pytest.raises(ValueError, match="trainer"):
        prepare(tmp_path / "d", trainer="process", store_url=url)
    app, keys_path = prepare(tmp_path / "d", trainer="off", store_url=url)
    try:
        tokens = json.loads(keys_path.read_text())
        engine = app.state.engine
        engine.ingest_items([Item(item_id=f"v{i}", creator_id=f"c{i % 3}", duration_ms=15_000,
                                  created_at=1_000 + i) for i in range(30)])
        with TestClient(app) as c:
            head = {"Authorization": f"Bearer {tokens['ingest']}"}
            batch = {"events": [{"event_id": f"e{i}", "user_id": "u1", "item_id": f"v{i}",
                                 "ts": 2_000 + i, "type": "play", "watch_ms": 15_000}
                                for i in range(5)]}
            r = c.post("/v1/events", json=batch, headers=head)
            assert r.status_code == 200 and r.json() == {"accepted": 5, "duplicates": 0}
            r = c.get("/v1/feed", params={"user_id": "u1", "n": 5},
                      headers={"Authorization": f"Bearer {tokens['serve']}"})
            assert r.status_code == 200 and r.json()["items"]
    finally:
        app.state.engine.store.close()
    # In the database, not in the data directory's SQLite file.
    other = open_store(url)
    try:
        assert other.count_events("u1") == 5 and other.count_keys() == 3
    finally:
        other.close()
    assert not (tmp_path / "d" / "reelrank.db").exists()


def test_events_answered_200_survive_kill_9_of_the_server(url, tmp_path):
    """The real server on PostgreSQL, killed while batches are in flight: every batch answered
    200 is in the database, whole, and no other batch is there even in part."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reelrank.cli", "serve", "--data-dir", str(tmp_path / "d"),
         "--store", url, "--port", str(port), "--insecure-no-auth", "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT)
    answered: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        items = [{"item_id": f"v{i}", "creator_id": "c", "duration_ms": 10_000,
                  "created_at": 1} for i in range(10)]
        assert httpx.post(f"{base}/v1/items", json={"items": items}).status_code == 200
        with httpx.Client(base_url=base, timeout=10) as http:
            for b in range(10_000):
                if b == 8:  # a few batches in: kill it while the next one is on its way
                    threading.Timer(0.01, os.kill, (proc.pid, signal.SIGKILL)).start()
                batch = [{"event_id": f"b{b}-{k}", "user_id": f"u{k % 7}",
                          "item_id": f"v{k % 10}", "ts": 1_000 + k, "type": "play",
                          "watch_ms": 500} for k in range(500)]
                try:
                    r = http.post("/v1/events", json={"events": batch})
                except httpx.TransportError:
                    break
                assert r.status_code == 200, r.text
                answered.append(b)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    assert proc.returncode == -signal.SIGKILL and len(answered) >= 8
    s = open_store(url)
    try:
        per_batch: dict[int, int] = {}
        for _, e in s.iter_events():
            b = int(e.event_id[1:].split("-")[0])
            per_batch[b] = per_batch.get(b, 0) + 1
    finally:
        s.close()
    assert all(per_batch.get(b) == 500 for b in answered)
    assert set(per_batch.values()) == {500}  # a batch in flight at the kill: all or nothing
