"""The request guard on the real server (uvicorn in a subprocess): a 50 MB body without a token
is answered before it is read, and the server's memory does not grow."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from tests.service.test_server_durability import REPO, free_port, wait_ready

MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def post_raw(port: int, headers: str, body_bytes: int) -> tuple[int, float]:
    """Send a request head, then up to ``body_bytes`` of body for as long as the server takes
    them; return the status line's code and the seconds until it came."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(headers.encode())
        chunk = b"[" + b"1," * (MB // 2 - 1) + b"1]"
        sent = 0
        sock.settimeout(0.05)
        answer = b""
        while sent < body_bytes and b"\r\n" not in answer:
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
                             if "chunked" in headers else chunk)
                sent += len(chunk)
            except OSError:
                break  # the server answered and closed: the rest is never read
            try:
                answer += sock.recv(4096)
            except (socket.timeout, OSError):
                pass
        sock.settimeout(10)
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    return int(answer.split(b" ", 2)[1]), time.perf_counter() - started


def test_a_50mb_body_without_a_token_is_refused_unread(tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reelrank.service.server", "--data-dir",
             str(tmp_path / "data"), "--port", str(port), "--trainer", "off",
             "--log-level", "warning"], cwd=REPO, env=env, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", log)
        before = rss_mb(proc.pid)
        declared = ("POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {50 * MB}\r\n\r\n")
        chunked = ("POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n")
        answers = [post_raw(port, head, 50 * MB) for head in (declared, chunked, declared)]
        after = rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert [status for status, _ in answers] == [413, 401, 413]
    assert all(seconds < 5 for _, seconds in answers), answers
    # Parsing one such body used to cost about 1.3 GB; unread, it costs nothing that shows.
    assert after - before < 30, (before, after)
