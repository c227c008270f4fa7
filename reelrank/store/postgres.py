"""The scale-out store: PostgreSQL through psycopg 3 and a connection pool.

It holds what the SQLite store holds (catalog, event log, settings, token hashes, access log)
and keeps the same promises:

- Durable at return: every write is one transaction, and ``append_events`` returns after its
  COMMIT, which PostgreSQL answers once the WAL is flushed. Each session sets
  ``synchronous_commit = on`` itself, so a server or role configured with it off cannot make
  an acknowledged event losable.
- Nothing half-stored: a batch is copied into a session-local staging table and moved into the
  log by one ``INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING`` in the same
  transaction; any failure rolls all of it back.
- Log order is commit order: appends take one transaction-scoped advisory lock before taking
  sequence numbers. Without it two writers could commit out of order (seq 11 visible before
  seq 10), and a reader tailing ``seq > last_seen`` (the online trainer, another API process)
  would skip seq 10 for ever. Writers in other processes on the same database queue on the
  same lock.
- Ordering and comparison of ids are bytewise (``COLLATE "C"``), as in SQLite, not the
  database's locale.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from typing import Any, Iterable, Iterator

import psycopg

from reelrank.errors import StoreError
from reelrank.store.base import AppendResult
from reelrank.store.pg_base import (
    APPEND_LOCK, SCHEMA, SCHEMA_LOCK, Transaction, configure, open_pool, redact,
)
from reelrank.store.rows import (
    EVENT_COLUMNS, ITEM_COLUMNS, event_row, item_from_row, item_row, settings_from_row,
    settings_row,
)
from reelrank.types import AccessRecord, ApiKey, Event, Item, UserSettings

log = logging.getLogger(__name__)


def _one(cursor: psycopg.Cursor) -> Any:
    """The first column of the one row a query returns."""
    row = cursor.fetchone()
    if row is None:
        raise StoreError("PostgreSQL returned no row where one was expected")
    return row[0]


# Rows per page of a scan: each page is its own short query, so a scan of a large log holds
# no transaction (and no snapshot that would hold back VACUUM) between pages.
_PAGE = 10_000
# Tables that hold a viewer's rows: vacuumed after erasure.
_USER_TABLES = ("events", "user_settings", "api_keys", "access_log")


class PostgresStore:
    """Catalog, event log, settings and keys in one PostgreSQL database."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8,
                 timeout_s: float = 30.0):
        self.url = redact(url)
        self._closed = False
        # One plain connection first: an unreachable server or a refused login is reported
        # at once with PostgreSQL's own words, not as a pool timeout after retries.
        try:
            with psycopg.connect(url, connect_timeout=int(timeout_s)) as conn:
                self._salt = self._prepare_schema(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open PostgreSQL at {self.url}: {exc}") from exc
        # Writes open their transaction explicitly (``_tx``).
        self._pool = open_pool(url, "reelrank-store", min_size=min_size, max_size=max_size,
                               timeout_s=timeout_s, configure=configure)

    def _prepare_schema(self, conn: psycopg.Connection) -> str:
        """Create what is missing (two processes starting at once queue on a lock) and return
        the access log's salt."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute(SCHEMA)
            conn.execute("INSERT INTO meta (key, value) VALUES ('access_salt', %s) "
                         "ON CONFLICT (key) DO NOTHING", (secrets.token_hex(16),))
            salt = _one(conn.execute("SELECT value FROM meta WHERE key = 'access_salt'"))
        fsync = _one(conn.execute("SHOW fsync"))
        if fsync != "on":
            log.warning("PostgreSQL at %s runs with fsync=%s: accepted events can be lost in a "
                        "crash of the server's machine", self.url, fsync)
        return salt

    # -- connections ----------------------------------------------------------------------------
    def _tx(self):
        """A pooled connection inside one transaction: committed when the block ends, rolled
        back if it raises. Connection failures become ``StoreError`` (the API answers 503)."""
        if self._closed:
            raise StoreError("store is closed")
        return Transaction(self._pool, self.url, write=True)

    def _read(self):
        """A pooled connection for one statement, in autocommit: a read on the request path
        (token, settings) costs one round trip, not BEGIN, SELECT and COMMIT."""
        if self._closed:
            raise StoreError("store is closed")
        return Transaction(self._pool, self.url, write=False)

    def close(self, wait_s: float = 30.0) -> None:
        """Close the pool. A query running in another thread finishes on its connection first
        (the pool closes a connection only once it is returned), and a later page of a scan
        raises ``StoreError``."""
        if self._closed:
            return
        self._closed = True
        self._pool.close(timeout=wait_s)

    def _user_ref(self, user_id: str) -> str:
        # Salted as in SQLite: an erased viewer's id is not left behind in the access log.
        return hashlib.sha256(f"{self._salt}:{user_id}".encode()).hexdigest()

    def _one(self, sql: str, args: tuple = ()):
        with self._read() as conn:
            return conn.execute(sql, args).fetchone()

    # -- catalog --------------------------------------------------------------------------------
    def upsert_items(self, items: Iterable[Item]) -> int:
        rows = [item_row(i) for i in items]
        if not rows:
            return 0
        # One statement per row (pipelined by executemany), so an item twice in one batch is
        # simply written twice, the last copy winning, as in SQLite.
        sql = (
            f"INSERT INTO items ({ITEM_COLUMNS}) VALUES "
            "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (item_id) DO UPDATE SET creator_id=excluded.creator_id, "
            "duration_ms=excluded.duration_ms, created_at=excluded.created_at, "
            "caption=excluded.caption, hashtags=excluded.hashtags, sound_id=excluded.sound_id, "
            "language=excluded.language, region=excluded.region, visible=excluded.visible, "
            "attributes=excluded.attributes"
        )
        with self._tx() as conn, conn.cursor() as cur:
            cur.executemany(sql, rows)
        return len(rows)

    def get_items(self, item_ids: Iterable[str]) -> dict[str, Item]:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {ITEM_COLUMNS} FROM items WHERE item_id = ANY(%s)", (ids,)).fetchall()
        return {r[0]: item_from_row(r) for r in rows}

    def iter_items(self) -> Iterator[Item]:
        last = 0
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    f"SELECT pos, {ITEM_COLUMNS} FROM items WHERE pos > %s ORDER BY pos "
                    "LIMIT %s", (last, _PAGE)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield from (item_from_row(r[1:]) for r in rows)

    def count_items(self) -> int:
        return self._one("SELECT COUNT(*) FROM items")[0]

    # -- event log ------------------------------------------------------------------------------
    def append_events(self, events: Iterable[Event], outbox: bool = False) -> AppendResult:
        batch = list(events)
        if not batch:
            return AppendResult(accepted=[], duplicates=0)
        # An id twice in one batch: the first copy is the one offered to the log.
        first: dict[str, Event] = {}
        for e in batch:
            first.setdefault(e.event_id, e)
        unique = list(first.values())
        with self._tx() as conn, conn.cursor() as cur:
            # Staged before the lock, so the lock covers only the INSERT and the commit.
            with cur.copy(f"COPY incoming_events (ord, {EVENT_COLUMNS}) FROM STDIN") as copy:
                for n, e in enumerate(unique):
                    copy.write_row((n, *event_row(e)))
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            # ORDER BY ord: sequence numbers follow the input order.
            cur.execute(
                f"INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} "
                "FROM incoming_events ORDER BY ord "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id, seq")
            rows = cur.fetchall()
            start = 0
            if outbox and rows:
                # Appends hold the lock to their commit: no other batch's seq falls between.
                start = min(r[1] for r in rows)
                cur.execute("INSERT INTO live_outbox (first_seq, last_seq, created_ms) "
                            "VALUES (%s, %s, %s)",
                            (start, max(r[1] for r in rows), int(time.time() * 1000)))
        stored = {r[0] for r in rows}
        accepted = [e for e in unique if e.event_id in stored]
        return AppendResult(accepted=accepted, duplicates=len(batch) - len(accepted),
                            batch=start)

    def iter_events(
        self, after_seq: int = 0, user_id: str | None = None, since_ts: int | None = None
    ) -> Iterator[tuple[int, Event]]:
        where = ["seq > %s", "seq <= %s"]
        args: list = []
        if user_id is not None:
            where.append("user_id = %s")
            args.append(user_id)
        if since_ts is not None:
            where.append("ts >= %s")
            args.append(since_ts)
        sql = (f"SELECT seq, {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
               "ORDER BY seq LIMIT %s")
        # The scan covers the log as it was when it started (as SQLite's read transaction
        # does): commits are in seq order, so "seq <= the last seq now" is that snapshot.
        upper = self.last_seq()
        last = after_seq
        while True:
            with self._read() as conn:
                rows = conn.execute(sql, (last, upper, *args, _PAGE)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            for r in rows:
                if self._closed:  # a scan outliving its store stops with a clear error
                    raise StoreError("store is closed")
                yield r[0], Event(*r[1:])
            if len(rows) < _PAGE:
                return

    def count_events(self, user_id: str | None = None) -> int:
        if user_id is None:
            return self._one("SELECT COUNT(*) FROM events")[0]
        return self._one("SELECT COUNT(*) FROM events WHERE user_id = %s", (user_id,))[0]

    def last_seq(self) -> int:
        return self._one("SELECT COALESCE(MAX(seq), 0) FROM events")[0]

    # -- live-state outbox (store/base.py's LiveOutbox) ------------------------------------------
    def outbox_pending(self, older_than_ms: int = 0) -> list[tuple[int, int]]:
        before = int(time.time() * 1000) - older_than_ms
        with self._read() as conn:
            rows = conn.execute("SELECT first_seq, last_seq FROM live_outbox "
                                "WHERE created_ms <= %s ORDER BY first_seq", (before,)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def outbox_low(self) -> int:
        return self._one("SELECT COALESCE((SELECT MIN(first_seq) FROM live_outbox), "
                         "(SELECT COALESCE(MAX(seq), 0) + 1 FROM events))")[0]

    def outbox_done(self, batches: Iterable[int]) -> None:
        done = list(batches)
        if done:
            with self._tx() as conn:
                conn.execute("DELETE FROM live_outbox WHERE first_seq = ANY(%s)", (done,))

    def outbox_done_through(self, seq: int) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM live_outbox WHERE last_seq <= %s", (seq,))

    # -- settings -------------------------------------------------------------------------------
    def get_settings(self, user_id: str) -> UserSettings:
        row = self._one(
            "SELECT personalization, muted_keywords, daily_limit_minutes, extra "
            "FROM user_settings WHERE user_id = %s", (user_id,))
        if row is None:
            return UserSettings(user_id=user_id)
        return settings_from_row(user_id, row)

    def iter_settings(self) -> Iterator[UserSettings]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT user_id, personalization, muted_keywords, daily_limit_minutes, extra "
                "FROM user_settings ORDER BY user_id").fetchall()
        for row in rows:
            yield settings_from_row(row[0], row[1:])

    def put_settings(self, settings: UserSettings) -> None:
        row = settings_row(settings)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO user_settings (user_id, personalization, muted_keywords, "
                "daily_limit_minutes, extra) VALUES (%s,%s,%s,%s,%s) ON CONFLICT (user_id) DO "
                "UPDATE SET personalization=excluded.personalization, "
                "muted_keywords=excluded.muted_keywords, "
                "daily_limit_minutes=excluded.daily_limit_minutes, extra=excluded.extra", row)

    # -- access log -----------------------------------------------------------------------------
    def log_access(self, user_id: str, actor: str, action: str, ts: int | None = None) -> None:
        ts = ts if ts is not None else int(time.time() * 1000)
        with self._tx() as conn:
            conn.execute("INSERT INTO access_log (user_ref, ts, actor, action) "
                         "VALUES (%s,%s,%s,%s)", (self._user_ref(user_id), ts, actor, action))

    def access_log(self, user_id: str, limit: int = 1000) -> list[AccessRecord]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT ts, actor, action FROM access_log WHERE user_ref = %s "
                "ORDER BY id DESC LIMIT %s", (self._user_ref(user_id), limit)).fetchall()
        return [AccessRecord(*r) for r in rows]

    # -- retention ------------------------------------------------------------------------------
    def delete_events_before(self, ts: int) -> int:
        with self._tx() as conn:
            removed = conn.execute("DELETE FROM events WHERE ts < %s", (ts,)).rowcount
        if removed:
            self._vacuum(("events",))
        return removed

    # -- keys -----------------------------------------------------------------------------------
    def put_key(self, key: ApiKey) -> None:
        created = key.created_at or int(time.time() * 1000)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO api_keys (key_hash, scope, user_id, created_at) "
                "VALUES (%s,%s,%s,%s) ON CONFLICT (key_hash) DO UPDATE SET "
                "scope=excluded.scope, user_id=excluded.user_id, "
                "created_at=excluded.created_at", (key.key_hash, key.scope, key.user_id, created))

    def find_key(self, key_hash: str) -> ApiKey | None:
        row = self._one("SELECT key_hash, scope, user_id, created_at FROM api_keys "
                        "WHERE key_hash = %s", (key_hash,))
        return ApiKey(*row) if row else None

    def count_keys(self, scope: str | None = None) -> int:
        if scope is None:
            return self._one("SELECT COUNT(*) FROM api_keys")[0]
        return self._one("SELECT COUNT(*) FROM api_keys WHERE scope = %s", (scope,))[0]

    # -- erasure --------------------------------------------------------------------------------
    def erase_user(self, user_id: str) -> int:
        ref = self._user_ref(user_id)
        with self._tx() as conn:
            n = conn.execute("DELETE FROM events WHERE user_id = %s", (user_id,)).rowcount
            conn.execute("DELETE FROM user_settings WHERE user_id = %s", (user_id,))
            conn.execute("DELETE FROM api_keys WHERE user_id = %s", (user_id,))
            # The old entries go; one pseudonymous entry records that the erasure happened.
            conn.execute("DELETE FROM access_log WHERE user_ref = %s", (ref,))
            conn.execute("INSERT INTO access_log (user_ref, ts, actor, action) "
                         "VALUES (%s,%s,%s,%s)", (ref, int(time.time() * 1000), "system",
                                                  "erased"))
        self._vacuum(_USER_TABLES)
        return n

    def _vacuum(self, tables: Iterable[str]) -> None:
        """Deleted rows stay in the table files as dead tuples until VACUUM reclaims them; run
        it now rather than whenever autovacuum gets there. (Plain VACUUM: it does not block
        ingestion, unlike VACUUM FULL.) A failure is logged: the rows are already gone from
        every query and dump, and autovacuum will reclaim them later."""
        if self._closed:
            return
        try:
            # VACUUM cannot run inside a transaction: a plain autocommit statement.
            with self._read() as conn:
                conn.execute(f"VACUUM {', '.join(tables)}")
        except (psycopg.Error, StoreError):
            log.exception("VACUUM after a delete failed; autovacuum will reclaim the rows")
