"""The PostgreSQL store's tables, row mapping and connection plumbing (``postgres.py`` holds the
store itself)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from reelrank.errors import StoreError, ValidationError

# Advisory lock keys (their scope is the database, so two ReelRank databases on one server
# never contend).
SCHEMA_LOCK = 0x5265_656C_0001
APPEND_LOCK = 0x5265_656C_0002

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT COLLATE "C" PRIMARY KEY,
    -- insertion order, which iter_items follows (an upsert keeps the first position)
    pos BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    creator_id TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    caption TEXT NOT NULL DEFAULT '',
    hashtags TEXT NOT NULL DEFAULT '[]',
    sound_id TEXT,
    language TEXT,
    region TEXT,
    visible BOOLEAN NOT NULL DEFAULT TRUE,
    attributes TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    item_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    type TEXT NOT NULL,
    watch_ms BIGINT,
    request_id TEXT,
    position BIGINT,
    device TEXT,
    region TEXT,
    source TEXT,
    session_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS user_settings (
    user_id TEXT COLLATE "C" PRIMARY KEY,
    personalization BOOLEAN NOT NULL,
    muted_keywords TEXT NOT NULL,
    daily_limit_minutes BIGINT,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS access_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_ref TEXT NOT NULL,
    ts BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS access_log_user ON access_log (user_ref, id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT COLLATE "C" PRIMARY KEY,
    scope TEXT NOT NULL,
    user_id TEXT COLLATE "C",
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id);
CREATE TABLE IF NOT EXISTS live_outbox (
    first_seq BIGINT PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
"""


def redact(url: str) -> str:
    """The URL without its password, for logs and ``Store.url``."""
    return re.sub(r"^(\w+://[^:/@]*):[^@]*@", r"\1:***@", url)


def configure(conn: psycopg.Connection) -> None:
    """Session setup for each pooled connection."""
    conn.execute("SET synchronous_commit = on")
    # The staging table of append_events: private to the session and emptied at every commit,
    # so a batch never sees another batch's rows.
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming_events (ord INTEGER NOT NULL, "
        "event_id TEXT, user_id TEXT, item_id TEXT, ts BIGINT, type TEXT, watch_ms BIGINT, "
        "request_id TEXT, position BIGINT, device TEXT, region TEXT, source TEXT, "
        "session_id TEXT) ON COMMIT DELETE ROWS")


class Transaction:
    """``with``-block over one pooled connection (``PostgresStore._tx`` and ``_read``)."""

    __slots__ = ("_pool", "_url", "_write", "_cm", "_tx")

    def __init__(self, pool: ConnectionPool, url: str, write: bool):
        self._pool = pool
        self._url = url
        self._write = write
        self._cm: Any = None  # the pool's connection context, while entered
        self._tx: Any = None

    def __enter__(self) -> psycopg.Connection:
        self._cm = self._pool.connection()
        try:
            conn = self._cm.__enter__()
        except PoolClosed as exc:
            raise StoreError("store is closed") from exc
        except psycopg.OperationalError as exc:  # unreachable server, pool timeout
            raise StoreError(f"PostgreSQL at {self._url}: {exc}") from exc
        if self._write:
            try:
                self._tx = conn.transaction()
                self._tx.__enter__()  # BEGIN
            except BaseException as exc:
                self._cm.__exit__(type(exc), exc, exc.__traceback__)
                if isinstance(exc, psycopg.OperationalError):
                    raise StoreError(f"PostgreSQL at {self._url}: {exc}") from exc
                raise
        return conn

    def __exit__(self, exc_type, exc, tb):
        try:
            try:
                if self._tx is not None:
                    # COMMIT when the block succeeded (returning after the WAL flush), else
                    # ROLLBACK; the exception, if any, goes on.
                    self._tx.__exit__(exc_type, exc, tb)
            finally:
                # The pool takes the connection back (and drops it if it is broken).
                self._cm.__exit__(exc_type, exc, tb)
        except psycopg.OperationalError as err:  # the COMMIT itself failed
            raise StoreError(f"PostgreSQL at {self._url}: {err}") from err
        if isinstance(exc, psycopg.OperationalError):  # the connection broke mid-statement
            raise StoreError(f"PostgreSQL at {self._url}: {exc}") from exc
        if isinstance(exc, psycopg.DataError):
            # Input that SQLite stores but PostgreSQL cannot (a NUL character in a caption, an
            # integer past 64 bits): the caller's data is at fault, not the store (HTTP 422).
            raise ValidationError(f"a value cannot be stored: {exc}") from exc
        return False


def open_pool(url: str, name: str, *, min_size: int = 1, max_size: int = 8,
              timeout_s: float = 30.0, configure=None) -> ConnectionPool:
    """An opened pool of autocommit sessions (writes open their transaction explicitly). A
    pooled connection is checked before it is handed out, so a database restart costs a
    reconnect rather than one failed request per idle connection. ``StoreError`` when no
    connection opens within ``timeout_s``."""
    pool = ConnectionPool(url, min_size=min_size, max_size=max_size, timeout=timeout_s,
                          configure=configure, open=False, kwargs={"autocommit": True},
                          check=ConnectionPool.check_connection, name=name)
    try:
        pool.open(wait=True, timeout=timeout_s)
    except PoolTimeout as exc:
        pool.close()
        raise StoreError(f"cannot open a pool on PostgreSQL at {redact(url)}: {exc}") from exc
    return pool
