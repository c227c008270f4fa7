"""The embedded default store: one SQLite file in WAL mode.

Durability: every write is one transaction committed with ``synchronous=FULL``, so when
``append_events`` returns, the events are in the WAL on disk and survive a ``kill -9`` of the
process (and a power cut). Each thread gets its own connection (SQLite connections are not
shared across threads); WAL lets readers run while one writer commits. Writes are serialised by
a process-wide lock so a batch is checked for duplicates and inserted atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Iterable, Iterator

from reelrank.errors import StoreError
from reelrank.store.base import AppendResult
from reelrank.store.rows import (
    EVENT_COLUMNS, ITEM_COLUMNS, event_row, item_from_row, item_row, settings_from_row,
    settings_row,
)
from reelrank.types import AccessRecord, ApiKey, Event, Item, UserSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    creator_id TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    caption TEXT NOT NULL DEFAULT '',
    hashtags TEXT NOT NULL DEFAULT '[]',
    sound_id TEXT,
    language TEXT,
    region TEXT,
    visible INTEGER NOT NULL DEFAULT 1,
    attributes TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    type TEXT NOT NULL,
    watch_ms INTEGER,
    request_id TEXT,
    position INTEGER,
    device TEXT,
    region TEXT,
    source TEXT,
    session_id TEXT
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS user_settings (
    user_id TEXT PRIMARY KEY,
    personalization INTEGER NOT NULL,
    muted_keywords TEXT NOT NULL,
    daily_limit_minutes INTEGER,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS access_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_ref TEXT NOT NULL,
    ts INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS access_log_user ON access_log (user_ref, id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS live_outbox (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    user_id TEXT,
    created_at INTEGER NOT NULL
);
"""

# SQLite's default limit on host parameters is 32766; stay far below it.
_CHUNK = 900


class _ThreadEnd:
    """Held in a thread's local storage only, so that it dies with the thread."""


class SQLiteStore:
    """Catalog, event log, settings and keys in one SQLite database file."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.url = f"sqlite:///{self.path.resolve()}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc}") from exc
        # One connection per thread. A server's threads come and go (anyio ends a worker idle
        # for 10 s; each erasure's rebuild runs on a new thread), so a thread's connection goes
        # back to ``_idle`` when the thread ends and the next new thread takes it: opened only
        # to be kept until the store closed, they numbered 2,223 after 2,100 requests of the
        # soak's mix in one process, each with its page cache. ``_all``: every one, for close.
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._idle: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._closed = False
        self._readers = 0
        self._readers_done = threading.Condition(threading.Lock())  # every read takes it
        conn = self._conn()
        conn.executescript(SCHEMA)
        self._migrate(conn)
        self._salt = self._access_salt(conn)
        # The file holds viewers' behaviour: readable by its owner only.
        for suffix in ("", "-wal", "-shm"):
            f = Path(f"{self.path}{suffix}")
            if f.exists():
                f.chmod(0o600)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Bring a database made by an earlier version up to this schema."""
        columns = {row[1] for row in conn.execute("PRAGMA table_info(user_settings)")}
        if "extra" not in columns:
            conn.execute("ALTER TABLE user_settings ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'")

    def _access_salt(self, conn: sqlite3.Connection) -> str:
        """The access log names viewers by a salted hash, so an erased viewer's id is not left
        in the file while the record that their data was read (and erased) stays."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'access_salt'").fetchone()
        if row:
            return row[0]
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('access_salt', ?)",
                     (secrets.token_hex(16),))
        return conn.execute("SELECT value FROM meta WHERE key = 'access_salt'").fetchone()[0]

    def _user_ref(self, user_id: str) -> str:
        return hashlib.sha256(f"{self._salt}:{user_id}".encode()).hexdigest()

    # -- connections ----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._all_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                # Erased users' rows must not survive in free pages of the file.
                conn.execute("PRAGMA secure_delete=ON")
                with self._all_lock:
                    self._all.append(conn)
            self._local.conn = conn
            # Dropped with the thread's other thread-local values when the thread ends; its
            # finalizer then hands the connection back (a list's append is atomic).
            self._local.ender = ender = _ThreadEnd()
            weakref.finalize(ender, self._idle.append, conn)
        return conn

    @contextlib.contextmanager
    def _reading(self):
        """Marks a read in progress (long scans run in background threads: the live-state
        rebuild, the online trainer); ``close`` waits for it instead of closing a connection
        under a running statement, which can crash SQLite."""
        with self._readers_done:
            if self._closed:
                raise StoreError("store is closed")
            self._readers += 1
        try:
            yield
        finally:
            with self._readers_done:
                self._readers -= 1
                if self._closed:  # only ``close`` waits for readers
                    self._readers_done.notify_all()

    def _fetch(self, sql: str, args=(), one: bool = False):
        """Run one read to completion under ``_reading``, so that ``close`` never closes the
        connection under it (a background thread's read racing a close crashed the process)."""
        with self._reading():
            cur = self._conn().execute(sql, args)
            return cur.fetchone() if one else cur.fetchall()

    def close(self, wait_s: float = 30.0) -> None:
        with self._readers_done:
            self._closed = True
            self._readers_done.wait_for(lambda: self._readers == 0, timeout=wait_s)
        with self._write_lock, self._all_lock:  # and for a write in progress
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
            self._idle.clear()

    def _write(self, fn):
        """Run ``fn(conn)`` in one IMMEDIATE transaction; all or nothing."""
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    # -- catalog --------------------------------------------------------------------------------
    def upsert_items(self, items: Iterable[Item]) -> int:
        rows = [item_row(i) for i in items]
        if not rows:
            return 0
        sql = (
            f"INSERT INTO items ({ITEM_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(item_id) DO UPDATE SET creator_id=excluded.creator_id, "
            "duration_ms=excluded.duration_ms, created_at=excluded.created_at, "
            "caption=excluded.caption, hashtags=excluded.hashtags, sound_id=excluded.sound_id, "
            "language=excluded.language, region=excluded.region, visible=excluded.visible, "
            "attributes=excluded.attributes"
        )
        self._write(lambda c: c.executemany(sql, rows))
        return len(rows)

    def get_items(self, item_ids: Iterable[str]) -> dict[str, Item]:
        ids = list(dict.fromkeys(item_ids))
        out: dict[str, Item] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._fetch(
                f"SELECT {ITEM_COLUMNS} FROM items WHERE item_id IN ({marks})", chunk
            ):
                out[row[0]] = item_from_row(row)
        return out

    def iter_items(self) -> Iterator[Item]:
        with self._reading():
            cur = self._conn().execute(f"SELECT {ITEM_COLUMNS} FROM items ORDER BY rowid")
        while True:
            with self._reading():
                rows = cur.fetchmany(5000)
            if not rows:
                return
            yield from (item_from_row(r) for r in rows)

    def count_items(self) -> int:
        return self._fetch("SELECT COUNT(*) FROM items", one=True)[0]

    # -- event log ------------------------------------------------------------------------------
    def append_events(self, events: Iterable[Event], outbox: bool = False) -> AppendResult:
        batch = list(events)
        if not batch:
            return AppendResult(accepted=[], duplicates=0)

        def run(conn: sqlite3.Connection) -> AppendResult:
            known: set[str] = set()
            ids = list({e.event_id for e in batch})
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                known.update(r[0] for r in conn.execute(
                    f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk))
            accepted: list[Event] = []
            for e in batch:
                if e.event_id in known:
                    continue
                known.add(e.event_id)
                accepted.append(e)
            conn.executemany(
                f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [event_row(e) for e in accepted],
            )
            first = 0
            if outbox and accepted:  # writes are serialised: the batch's seqs are consecutive
                last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                first = last - len(accepted) + 1
                conn.execute("INSERT INTO live_outbox (first_seq, last_seq, created_ms) "
                             "VALUES (?,?,?)", (first, last, int(time.time() * 1000)))
            return AppendResult(accepted=accepted, duplicates=len(batch) - len(accepted),
                                batch=first)

        return self._write(run)

    def iter_events(
        self, after_seq: int = 0, user_id: str | None = None, since_ts: int | None = None
    ) -> Iterator[tuple[int, Event]]:
        where = ["seq > ?"]
        args: list = [after_seq]
        if user_id is not None:
            where.append("user_id = ?")
            args.append(user_id)
        if since_ts is not None:
            where.append("ts >= ?")
            args.append(since_ts)
        with self._reading():
            cur = self._conn().execute(
                f"SELECT seq, {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
                "ORDER BY seq", args)
        while True:
            with self._reading():
                rows = cur.fetchmany(10000)
            if not rows:
                return
            for r in rows:
                yield r[0], Event(*r[1:])

    def count_events(self, user_id: str | None = None) -> int:
        if user_id is None:
            return self._fetch("SELECT COUNT(*) FROM events", one=True)[0]
        return self._fetch(
            "SELECT COUNT(*) FROM events WHERE user_id = ?", (user_id,), one=True)[0]

    def last_seq(self) -> int:
        return self._fetch("SELECT COALESCE(MAX(seq), 0) FROM events", one=True)[0]

    # -- live-state outbox (store/base.py's LiveOutbox) ------------------------------------------
    def outbox_pending(self, older_than_ms: int = 0) -> list[tuple[int, int]]:
        before = int(time.time() * 1000) - older_than_ms
        return [tuple(r) for r in self._fetch(
            "SELECT first_seq, last_seq FROM live_outbox WHERE created_ms <= ? "
            "ORDER BY first_seq", (before,))]

    def outbox_low(self) -> int:
        return self._fetch(
            "SELECT COALESCE((SELECT MIN(first_seq) FROM live_outbox), "
            "(SELECT COALESCE(MAX(seq), 0) + 1 FROM events))", one=True)[0]

    def outbox_done(self, batches: Iterable[int]) -> None:
        rows = [(b,) for b in batches]
        if rows:
            self._write(lambda c: c.executemany(
                "DELETE FROM live_outbox WHERE first_seq = ?", rows))

    def outbox_done_through(self, seq: int) -> None:
        self._write(lambda c: c.execute("DELETE FROM live_outbox WHERE last_seq <= ?", (seq,)))

    # -- settings -------------------------------------------------------------------------------
    def get_settings(self, user_id: str) -> UserSettings:
        row = self._fetch(
            "SELECT personalization, muted_keywords, daily_limit_minutes, extra FROM user_settings "
            "WHERE user_id = ?", (user_id,), one=True)
        if row is None:
            return UserSettings(user_id=user_id)
        return settings_from_row(user_id, row)

    def iter_settings(self) -> Iterator[UserSettings]:
        rows = self._fetch(
            "SELECT user_id, personalization, muted_keywords, daily_limit_minutes, extra "
            "FROM user_settings ORDER BY user_id")
        for row in rows:
            yield settings_from_row(row[0], row[1:])

    def put_settings(self, settings: UserSettings) -> None:
        row = settings_row(settings)
        self._write(lambda c: c.execute(
            "INSERT INTO user_settings (user_id, personalization, muted_keywords, "
            "daily_limit_minutes, extra) VALUES (?,?,?,?,?) ON CONFLICT(user_id) DO UPDATE SET "
            "personalization=excluded.personalization, muted_keywords=excluded.muted_keywords, "
            "daily_limit_minutes=excluded.daily_limit_minutes, extra=excluded.extra", row))

    # -- access log -----------------------------------------------------------------------------
    def log_access(self, user_id: str, actor: str, action: str, ts: int | None = None) -> None:
        ts = ts if ts is not None else int(time.time() * 1000)
        self._write(lambda c: c.execute(
            "INSERT INTO access_log (user_ref, ts, actor, action) VALUES (?,?,?,?)",
            (self._user_ref(user_id), ts, actor, action)))

    def access_log(self, user_id: str, limit: int = 1000) -> list[AccessRecord]:
        rows = self._fetch(
            "SELECT ts, actor, action FROM access_log WHERE user_ref = ? ORDER BY id DESC LIMIT ?",
            (self._user_ref(user_id), limit))
        return [AccessRecord(*r) for r in rows]

    # -- retention ------------------------------------------------------------------------------
    def delete_events_before(self, ts: int) -> int:
        removed = self._write(lambda c: c.execute(
            "DELETE FROM events WHERE ts < ?", (ts,)).rowcount)
        if removed:
            self._checkpoint()
        return removed

    # -- keys -----------------------------------------------------------------------------------
    def put_key(self, key: ApiKey) -> None:
        created = key.created_at or int(time.time() * 1000)
        self._write(lambda c: c.execute(
            "INSERT OR REPLACE INTO api_keys (key_hash, scope, user_id, created_at) "
            "VALUES (?,?,?,?)", (key.key_hash, key.scope, key.user_id, created)))

    def find_key(self, key_hash: str) -> ApiKey | None:
        row = self._fetch(
            "SELECT key_hash, scope, user_id, created_at FROM api_keys WHERE key_hash = ?",
            (key_hash,), one=True)
        return ApiKey(*row) if row else None

    def count_keys(self, scope: str | None = None) -> int:
        if scope is None:
            return self._fetch("SELECT COUNT(*) FROM api_keys", one=True)[0]
        return self._fetch(
            "SELECT COUNT(*) FROM api_keys WHERE scope = ?", (scope,), one=True)[0]

    # -- erasure --------------------------------------------------------------------------------
    def erase_user(self, user_id: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            n = conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            conn.execute("DELETE FROM user_settings WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM api_keys WHERE user_id = ?", (user_id,))
            # The old entries go; one pseudonymous entry records that the erasure happened.
            ref = self._user_ref(user_id)
            conn.execute("DELETE FROM access_log WHERE user_ref = ?", (ref,))
            conn.execute("INSERT INTO access_log (user_ref, ts, actor, action) VALUES (?,?,?,?)",
                         (ref, int(time.time() * 1000), "system", "erased"))
            return n

        removed = self._write(run)
        self._checkpoint()
        return removed

    def _checkpoint(self) -> None:
        # Deleted rows linger in the WAL until it is written back and truncated (secure_delete
        # zeroes them in the main file's free pages).
        with self._write_lock:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
