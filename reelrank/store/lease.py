"""A lease that one process at a time holds across hosts: the trainer that publishes versions.

It is a session-level PostgreSQL advisory lock, taken on a connection of its own that does
nothing else. PostgreSQL releases it when that session ends, so a holder that dies (its
process killed, its host gone, its connection cut) frees it without anyone's help, and a
standby that polls ``try_acquire`` takes over:

- process killed: the kernel closes the socket and the backend ends at once;
- host or network gone: the backend finds out through TCP keepalives, which this session
  sets short (``KEEPALIVE_S``): takeover within about ``3 * KEEPALIVE_S`` seconds.

A holder must ask ``held()`` before each act the lease guards (a publish): a connection that
broke behind its back (a server restart, a cut the other way) means another process may hold
the lease now. ``held()`` answers from the server, not from memory.

Each acquisition also increments the lease's ``epoch`` in the ``leases`` table (with who holds
it and since when): a fencing token, higher for every new holder, that a guarded write can
check in its own transaction so that a holder paused past its loss (a long GC, a stopped VM)
cannot write after its successor.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zlib

import psycopg

from reelrank.errors import StoreError
from reelrank.store.pg_base import redact

LEASE_SCHEMA_LOCK = 0x5265_656C_0004  # beside pg_base's store keys and the registry's
KEY_BASE = 0x5265_656C << 32  # a lease's lock key: this plus the CRC-32 of its name
KEEPALIVE_S = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL,
    acquired_at BIGINT NOT NULL
)
"""


def lease_key(name: str) -> int:
    return KEY_BASE | zlib.crc32(name.encode())


class Lease:
    """``Lease(url, "trainer")``: ``try_acquire()`` or ``acquire(timeout_s)``, then ``held()``
    before each guarded act and ``release()`` (or ``close()``) at the end. Thread-safe."""

    def __init__(self, url: str, name: str, holder: str | None = None):
        self._url = url
        self.url = redact(url)
        self.name = name
        self.key = lease_key(name)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.epoch: int | None = None  # the fencing token of the current hold
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> psycopg.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=10,
                # Both ends notice a dead peer: libpq on this side, the backend on the other
                # (only the server's side frees the lock).
                keepalives=1, keepalives_idle=KEEPALIVE_S, keepalives_interval=KEEPALIVE_S,
                keepalives_count=2, application_name=f"reelrank-lease-{self.name}")
            conn.execute(f"SET tcp_keepalives_idle = {KEEPALIVE_S}")
            conn.execute(f"SET tcp_keepalives_interval = {KEEPALIVE_S}")
            conn.execute("SET tcp_keepalives_count = 2")
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEASE_SCHEMA_LOCK,))
                conn.execute(SCHEMA)
        except psycopg.OperationalError as exc:
            raise StoreError(f"PostgreSQL at {self.url}: {exc}") from exc
        self._conn = conn
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self.epoch = None

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True if this object holds it now."""
        with self._lock:
            if self.epoch is not None:
                if self._alive():
                    return True
                self._drop()  # a hold whose session is gone is no hold
            conn = self._connect()
            try:
                got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                if not (got and got[0]):
                    return False
                row = conn.execute(
                    "INSERT INTO leases (name, epoch, holder, acquired_at) VALUES (%s, 1, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET epoch = leases.epoch + 1, "
                    "holder = EXCLUDED.holder, acquired_at = EXCLUDED.acquired_at "
                    "RETURNING epoch", (self.name, self.holder, int(time.time() * 1000))
                ).fetchone()
            except psycopg.Error as exc:
                self._drop()  # closing the session lets go of a lock it may have taken
                raise StoreError(f"PostgreSQL at {self.url}: {exc}") from exc
            self.epoch = int(row[0]) if row else None
            return self.epoch is not None

    def acquire(self, timeout_s: float | None = None, poll_s: float = 1.0,
                stop: threading.Event | None = None) -> bool:
        """Wait for the lease (polling every ``poll_s``) until ``timeout_s`` (None: for ever)
        or ``stop`` is set; True if it is held. An unreachable server is waited out too."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                if self.try_acquire():
                    return True
            except StoreError:
                pass  # the database is away: a standby keeps waiting for it
            left = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            if left <= 0:
                return False
            if stop is None:
                time.sleep(left)
            elif stop.wait(left):
                return False

    def _alive(self) -> bool:
        """Whether this session still holds the lock, asked of the server."""
        conn = self._conn
        if conn is None or conn.closed:
            return False
        try:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND objsubid = 1 "
                "AND ((classid::bigint << 32) | objid::bigint) = %s", (self.key,)).fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0])

    def held(self) -> bool:
        """True while this object holds the lease; False once its session is gone."""
        with self._lock:
            if self.epoch is None:
                return False
            if self._alive():
                return True
            self._drop()
            return False

    def current_holder(self) -> tuple[str, int] | None:
        """Who acquired the lease last and its epoch (it may have died since)."""
        with self._lock:
            row = self._connect().execute(
                "SELECT holder, epoch FROM leases WHERE name = %s", (self.name,)).fetchone()
        return None if row is None else (row[0], int(row[1]))

    def release(self) -> None:
        """Give the lease up, keeping the connection for a later ``try_acquire``."""
        with self._lock:
            if self.epoch is None:
                return
            self.epoch = None
            try:
                if self._conn is not None:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except psycopg.Error:
                self._drop()  # gone with the session anyway

    def close(self) -> None:
        """Release and close the connection (the lease goes with it)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
