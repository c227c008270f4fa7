"""Several API processes for real: ``reelrank serve --live redis://...`` started twice (two
ports) on one PostgreSQL store and one Redis live state, and ``--workers 2`` on one port.
An event posted to one process is in the very next feed of the other; an erasure on one leaves
no trace of the viewer in the other; a killed worker is replaced and the port keeps serving;
``--workers`` is refused with the embedded backends."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reelrank.cli import app as cli
from reelrank.store import open_store
from tests.pg import throwaway_database
from tests.polling import wait_for
from tests.rd import encodings, keys_under, redis_dump, throwaway_prefix
from tests.service.test_api import T0, ev, make_item

httpx = pytest.importorskip("httpx")
redis = pytest.importorskip("redis")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``reelrank serve`` as a child process on its own port."""

    def __init__(self, tmp: Path, name: str, args: list[str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reelrank.cli", "serve", "--data-dir", str(tmp / name),
             "--port", str(self.port), "--insecure-no-auth", "--trainer", "off", *args],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def ready(self, timeout: float = 120.0) -> "Server":
        def up() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return httpx.get(self.base + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        assert wait_for(up, timeout), self.log.read_text()
        return self

    def get(self, path: str, **params):
        return httpx.get(self.base + path, params=params, timeout=30)

    def feed(self, user: str, n: int = 40) -> list[str]:
        r = self.get("/v1/feed", user_id=user, n=n)
        assert r.status_code == 200, r.text
        return [i["item_id"] for i in r.json()["items"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def backends():
    with throwaway_database() as url, throwaway_prefix() as (redis_url, prefix):
        store = open_store(url)
        try:
            store.upsert_items([make_item(i) for i in range(40)])
        finally:
            store.close()
        yield url, f"{redis_url}?prefix={prefix}", redis_url, prefix


def test_workers_are_refused_with_the_embedded_backends(tmp_path):
    runner = CliRunner()
    for extra in ([], ["--store", "postgresql://x@127.0.0.1/db"],
                  ["--live", "redis://127.0.0.1:6379/0"]):
        result = runner.invoke(cli, ["serve", "--data-dir", str(tmp_path), "--workers", "2",
                                     *extra], env={"COLUMNS": "200"})
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert "--workers above 1 needs" in text
    result = runner.invoke(cli, ["serve", "--data-dir", str(tmp_path), "--workers", "2",
                                 "--store", "postgresql://x@127.0.0.1/db", "--live",
                                 "redis://127.0.0.1:6379/0", "--trainer", "thread"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "trainer runs apart" in " ".join(result.output.split())


def test_two_processes_share_events_and_erasures(backends, tmp_path):
    url, live, redis_url, prefix = backends
    args = ["--store", url, "--live", live]
    a = Server(tmp_path, "a", args)
    b = Server(tmp_path, "b", args)
    try:
        a.ready()
        b.ready()
        # What B would serve a viewer it knows nothing of.
        first = b.feed("control")
        assert len(first) >= 6
        r = httpx.post(a.base + "/v1/events", timeout=30, json={"events": [
            ev(f"w{k}", "u", item, "impression", ts=T0 + k) for k, item in enumerate(first[:3])
        ] + [ev("ni", "u", first[3], "not_interested", ts=T0 + 10)]})
        assert r.status_code == 200, r.text
        page = b.feed("u")  # the very next page, from the other process
        assert page and not set(first[:4]) & set(page)

        who = "viewer-to-erase-k3p"
        r = httpx.post(a.base + "/v1/events", timeout=30, json={"events": [
            ev(f"x{k}", who, f"v{k}", "play", ts=T0 + 20 + k, watch_ms=15_000)
            for k in range(4)]})
        assert r.status_code == 200, r.text
        shown = b.feed(who)
        assert shown
        # B kept the page's trace: its explanation says the item was shown.
        assert b.get("/v1/explain", user_id=who, item_id=shown[0]).json()["shown"] is True

        assert httpx.delete(a.base + f"/v1/users/{who}", timeout=30).status_code == 204

        # B hears of it through the stream and drops the trace: the item was never shown.
        assert wait_for(lambda: b.get("/v1/explain", user_id=who,
                                      item_id=shown[0]).json()["shown"] is False)
        client = redis.Redis.from_url(redis_url)
        try:
            assert wait_for(lambda: not [k for k in keys_under(client, prefix)
                                         if who.encode() in k])
        finally:
            client.close()
    finally:
        a.stop()
        b.stop()
    for s in (a, b):
        assert who not in s.log.read_text()


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def test_workers_on_one_port_survive_a_killed_worker(backends, tmp_path):
    url, live, _, _ = backends
    s = Server(tmp_path, "w", ["--store", url, "--live", live, "--workers", "2"])
    try:
        s.ready()
        # Both workers up (the supervisor's children, spawned interpreters).
        assert wait_for(lambda: len(children(s.proc.pid)) >= 2, 60), s.log.read_text()
        r = httpx.post(s.base + "/v1/events", timeout=30, json={"events": [
            ev("k1", "u", "v1", "impression", ts=T0)]})
        assert r.status_code == 200, r.text
        for _ in range(6):  # whichever worker answers, it sees the event
            assert "v1" not in s.feed("u")
        # Answers are not held back by Nagle's algorithm (40 ms a request against the client's
        # delayed ACK when the shared socket's connections lack TCP_NODELAY).
        with httpx.Client(base_url=s.base, timeout=30) as keep_alive:
            took = []
            for _ in range(21):
                t0 = time.perf_counter()
                assert keep_alive.get("/healthz").status_code == 200
                took.append(time.perf_counter() - t0)
        assert sorted(took)[10] < 0.03, took
        victim = max(children(s.proc.pid))
        os.kill(victim, signal.SIGKILL)
        for _ in range(10):  # the other worker keeps serving meanwhile
            r = s.get("/healthz")
            assert r.status_code == 200
        assert wait_for(lambda: len([p for p in children(s.proc.pid) if p != victim]) >= 2,
                        120), s.log.read_text()
    finally:
        s.stop()
    assert s.proc.returncode == 0 or s.proc.returncode == -signal.SIGTERM


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_an_erased_viewer_is_absent_from_pg_dump_and_redis(backends, tmp_path):
    """Two API processes; the viewer leaves events, settings, feeds, traces, an export and a
    reset on both; erased through A. Afterwards neither a ``pg_dump`` of the database nor the
    values of the Redis keys under the prefix hold the id in any common encoding, before and
    after the rebuild the erasure starts; the viewer who stays is found in both (the search
    works)."""
    url, live, redis_url, prefix = backends
    args = ["--store", url, "--live", live]
    who, kept = "zz-erase-7q2Zx4kP-é", "zz-keep-5tR9wLm3-é"
    a = Server(tmp_path, "a", args)
    b = Server(tmp_path, "b", args)
    client = redis.Redis.from_url(redis_url)
    try:
        a.ready()
        b.ready()
        for k, (server, user) in enumerate([(a, who), (b, who), (a, kept), (b, kept)]):
            r = httpx.post(server.base + "/v1/events", timeout=30, json={"events": [
                ev(f"{user}-{k}-{j}", user, f"v{j + 4 * k}", kind, ts=T0 + 100 * k + j,
                   watch_ms=15_000, request_id=f"req-{user}")
                for j, kind in enumerate(("play", "like", "impression", "not_interested"))]})
            assert r.status_code == 200, r.text
        for server in (a, b):
            assert server.feed(who, n=5) and server.feed(kept, n=5)
        r = httpx.put(b.base + f"/v1/users/{who}/settings", timeout=30,
                      json={"muted_keywords": ["cats"], "hidden_creators": ["c3"]})
        assert r.status_code == 200, r.text
        assert httpx.post(b.base + f"/v1/users/{who}/not_interested", timeout=30,
                          json={"item_id": "v20", "scope": "creator"}).status_code == 200
        assert b.get(f"/v1/users/{who}/data").status_code == 200
        assert b.get("/v1/explain", user_id=who, item_id="v1").status_code == 200
        assert httpx.post(a.base + f"/v1/users/{who}/reset", timeout=30).status_code == 200
        assert b.feed(who, n=5)
        needles = encodings(who)
        before = redis_dump(client, prefix)
        assert any(n in before for n in needles.values())  # the search finds the viewer

        stream = prefix + "stream"
        last = client.xrevrange(stream, count=1)[0][0].decode()
        assert httpx.delete(a.base + f"/v1/users/{who}", timeout=30).status_code == 204
        assert wait_for(lambda: b.get("/v1/users/" + who + "/data").json()["events"] == [])

        dump = subprocess.run(["pg_dump", "--no-owner", url], capture_output=True, timeout=60,
                              check=True).stdout
        after = redis_dump(client, prefix)
        for name, text in (("pg_dump", dump), ("Redis", after)):
            assert any(n in text for n in encodings(kept).values()), name
            found = [enc for enc, n in needles.items() if n in text]
            assert not found, f"{name} holds the erased id as {found}"

        # The rebuild of the aggregates that the erasure started swaps in a state replayed
        # from the log: nothing of the viewer comes back with it.
        def rebuilt() -> bool:
            return any(b'"kind":"rebuilt"' in f.get(b"m", b"")
                       for _, f in client.xrange(stream, min="(" + last))
        assert wait_for(rebuilt, 60)
        after = redis_dump(client, prefix)
        assert not [enc for enc, n in needles.items() if n in after]
    finally:
        client.close()
        a.stop()
        b.stop()
    for s in (a, b):
        text = s.log.read_bytes()
        assert not [enc for enc, n in needles.items() if n in text]
