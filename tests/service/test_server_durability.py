"""The real server in a subprocess: accepted events survive ``kill -9`` right after the 200."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from reelrank.store import open_store

REPO = Path(__file__).resolve().parents[2]
READY_WITHIN_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited early with code {proc.returncode}:\n"
                                 f"{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server was not ready within {READY_WITHIN_S} s:\n"
                         f"{log.read_text()[-2000:]}")


def test_events_survive_kill_9_right_after_the_answer(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = tmp_path / "server.log"
    log_file = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reelrank.service.server", "--data-dir", str(data),
         "--host", "127.0.0.1", "--port", str(port), "--insecure-no-auth",
         "--log-level", "warning"],
        cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(proc, base, log)
        items = [{"item_id": f"v{i}", "creator_id": f"c{i}", "duration_ms": 10_000,
                  "created_at": 1_700_000_000_000} for i in range(3)]
        r = httpx.post(f"{base}/v1/items", json={"items": items}, timeout=10.0)
        assert r.status_code == 200, r.text
        events = [{"event_id": f"e{i}", "user_id": "u1", "item_id": f"v{i % 3}",
                   "ts": 1_700_000_000_000 + i, "type": "play", "watch_ms": 4000}
                  for i in range(25)]
        r = httpx.post(f"{base}/v1/events", json={"events": events}, timeout=10.0)
        assert r.status_code == 200, r.text
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no flush: only what was committed
        proc.wait(timeout=10)
        assert r.json() == {"accepted": 25, "duplicates": 0}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log_file.close()
    assert proc.returncode == -signal.SIGKILL

    store = open_store(data)
    try:
        assert store.count_items() == 3
        assert store.count_events() == 25
        assert sorted(e.event_id for _, e in store.iter_events()) == sorted(
            e["event_id"] for e in events)
    finally:
        store.close()
