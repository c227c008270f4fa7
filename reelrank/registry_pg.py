"""Model versions in PostgreSQL: the registry of ``registry.py`` for processes on several hosts,
which share a database but no directory.

Tables (in the store's database, created if missing)::

    model_versions   version, publish order, meta (JSON text), the plain state (torch.save)
    model_parts      (version, part) -> blob: which large part each version carries
    model_blobs      the large parts, one safetensors file's bytes each
    model_latest     one row: the version serving should use

A version is written in one transaction, its ``model_latest`` row included: a reader on any
host sees the whole version or none of it, and ``latest()`` never names a version it cannot
load. A reused part (``publish(reuse=...)``) is a second ``model_parts`` row on the same blob,
so the online trainer's versions write only their ranker's bytes; ``prune`` drops the blobs no
version refers to. Publishers and pruners take one advisory lock per transaction, so two of
them never pick the same version name or drop a blob being reused.

With a ``fence`` (a trainer's leader lease, ``store/lease.py``), a publish commits only while
that lease's epoch is the newest: a trainer that lost its lease without noticing (paused, cut
off) cannot publish after the one that took over.

The blobs are stored without TOAST compression (``STORAGE EXTERNAL``): float weights barely
compress, and compressing them would cost the publisher CPU for nothing.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch

from reelrank.errors import ModelError, StoreError
from reelrank.registry import PARTS, Artifact, ModelMeta, ModelRegistry, flatten_part, prunable, \
    unflatten_part
from reelrank.store.pg_base import Transaction, open_pool, redact

if TYPE_CHECKING:
    from reelrank.store.lease import Lease

REGISTRY_LOCK = 0x5265_656C_0003  # the store's keys are ..0001 and ..0002 (pg_base.py)
SCHEMA_LOCK = 0x5265_656C_0005  # the lease's is ..0004 (store/lease.py)

SCHEMA = """
CREATE TABLE IF NOT EXISTS model_blobs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data BYTEA NOT NULL
);
ALTER TABLE model_blobs ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS model_versions (
    version TEXT COLLATE "C" PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    published_at BIGINT NOT NULL,
    meta TEXT NOT NULL,
    state BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS model_parts (
    version TEXT COLLATE "C" NOT NULL REFERENCES model_versions ON DELETE CASCADE,
    part TEXT NOT NULL,
    blob_id BIGINT NOT NULL REFERENCES model_blobs,
    PRIMARY KEY (version, part)
);
CREATE INDEX IF NOT EXISTS model_parts_blob ON model_parts (blob_id);
CREATE TABLE IF NOT EXISTS model_latest (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    version TEXT COLLATE "C" NOT NULL REFERENCES model_versions
);
"""


def part_bytes(state: dict[str, Any]) -> bytes:
    """One part as the bytes of a safetensors file (what the directory registry writes)."""
    tensors, header = flatten_part(state)
    return safetensors.torch.save(tensors, metadata={"reelrank": header})


def part_from_bytes(data: bytes) -> dict[str, Any]:
    size = int.from_bytes(data[:8], "little")  # safetensors: header length, JSON header, data
    header = json.loads(data[8:8 + size])["__metadata__"]["reelrank"]
    return unflatten_part(safetensors.torch.load(data), header)


def _one(cursor) -> Any:
    row = cursor.fetchone()
    return None if row is None else row[0]


class PostgresRegistry(ModelRegistry):
    """``ModelRegistry``'s interface over the tables above. ``root`` is this host's directory
    for its own files beside the models (the topic settings), not for the versions."""

    def __init__(self, url: str, root: Path | str, *, max_size: int = 4,
                 timeout_s: float = 30.0, fence: Lease | None = None):
        """``fence``: a lease (``store/lease.py``) on the same database that every publish
        must hold: one whose holder has changed since is refused (``ModelError``)."""
        super().__init__(root)
        self.url = redact(url)
        self.fence = fence
        self._closed = False
        self._pool = open_pool(url, "reelrank-registry", max_size=max_size, timeout_s=timeout_s)
        # Only when missing: ALTER TABLE (and CREATE INDEX, even IF NOT EXISTS) lock the table,
        # which would make a process that starts wait for, and stall, every load in flight.
        # The tables are made in one transaction, the last one last: it stands for them all.
        with self._read() as conn:
            ready = _one(conn.execute("SELECT to_regclass('model_latest')")) is not None
        if not ready:
            with self._tx() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(SCHEMA)

    def _tx(self) -> Transaction:
        if self._closed:
            raise StoreError("model registry is closed")
        return Transaction(self._pool, self.url, write=True)

    def _read(self) -> Transaction:
        if self._closed:
            raise StoreError("model registry is closed")
        return Transaction(self._pool, self.url, write=False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()

    def publish(self, state: dict[str, Any], meta: ModelMeta | dict[str, Any],
                reuse: dict[str, str] | None = None) -> str:
        reuse = reuse or {}
        rest = dict(state)
        # Serialised before the transaction opens: a slow publisher holds no lock meanwhile.
        blobs: dict[str, bytes] = {}
        for part in PARTS:
            if part not in reuse and rest.get(part) is not None:
                blobs[part] = part_bytes(rest[part])
        parts = [p for p in PARTS if p in reuse or p in blobs]
        for part in parts:
            rest[part] = None
        rest["parts"] = parts
        buffer = io.BytesIO()
        torch.save(rest, buffer)
        with self._tx() as conn:
            # Publishers queue here: each sees the versions the one before it committed.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (REGISTRY_LOCK,))
            if self.fence is not None:
                self._check_fence(conn, self.fence)
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            # After the highest number of this second (a prune may have freed lower ones).
            n = 1 + _one(conn.execute(
                "SELECT coalesce(max(split_part(version, '-', 3)::int), 0) FROM model_versions "
                "WHERE version LIKE %s", (stamp + "-%",)))
            version = f"{stamp}-{n:04d}"
            # Last: a meta copied from an earlier version names this one.
            full_meta = {**meta, "version": version, "published_at": int(time.time() * 1000)}
            conn.execute(
                "INSERT INTO model_versions (version, published_at, meta, state) "
                "VALUES (%s, %s, %s, %s)",
                (version, full_meta["published_at"], json.dumps(full_meta, default=str),
                 buffer.getvalue()))
            for part in parts:
                if part in reuse:
                    blob_id = _one(conn.execute(
                        "SELECT blob_id FROM model_parts WHERE version = %s AND part = %s",
                        (reuse[part], part)))
                    if blob_id is None:  # rolls the whole version back
                        raise ModelError(f"cannot reuse {part} of {reuse[part]!r}: the "
                                         "version has no such part")
                else:
                    blob_id = _one(conn.execute(
                        "INSERT INTO model_blobs (data) VALUES (%s) RETURNING id",
                        (blobs[part],)))
                conn.execute("INSERT INTO model_parts (version, part, blob_id) "
                             "VALUES (%s, %s, %s)", (version, part, blob_id))
            conn.execute(
                "INSERT INTO model_latest (one, version) VALUES (TRUE, %s) "
                "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version", (version,))
        return version

    @staticmethod
    def _check_fence(conn, lease: Lease) -> None:
        """The lease's epoch is still the newest. FOR SHARE: a new holder's acquisition
        (which raises the epoch) waits for this publish to commit, so none lands after it."""
        if lease.epoch is None:
            raise ModelError(f"not publishing: the {lease.name!r} lease is not held")
        row = conn.execute("SELECT epoch FROM leases WHERE name = %s FOR SHARE",
                           (lease.name,)).fetchone()
        if row is None or row[0] != lease.epoch:
            raise ModelError(f"not publishing: the {lease.name!r} lease has passed to a "
                             f"newer holder (epoch {lease.epoch} < {row and row[0]})")

    def latest(self) -> str | None:
        with self._read() as conn:
            return _one(conn.execute("SELECT version FROM model_latest"))

    def versions(self) -> list[str]:
        """In the order they were published (the directory registry sorts names, which is
        the same order unless the publishers' clocks disagree)."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT version FROM model_versions ORDER BY seq")]

    def load(self, version: str | None = None, skip: tuple[str, ...] = ()) -> Artifact:
        with self._tx() as conn:
            # One snapshot: a prune committed meanwhile cannot take a part from under us.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            version = version or _one(conn.execute("SELECT version FROM model_latest"))
            if version is None:
                raise ModelError("no model has been published yet")
            # Binary results: bytea in text form would be hex, twice the bytes and a decode.
            row = conn.execute("SELECT state, meta FROM model_versions WHERE version = %s",
                               (version,), binary=True).fetchone()
            if row is None:
                raise ModelError(f"model version {version!r} is missing")
            blobs: dict[str, bytes] = dict(conn.execute(
                "SELECT p.part, b.data FROM model_parts p JOIN model_blobs b ON b.id = p.blob_id "
                "WHERE p.version = %s AND NOT (p.part = ANY(%s))", (version, list(skip)),
                binary=True))
        state = torch.load(io.BytesIO(row[0]), weights_only=True)
        for part in state.pop("parts", []):
            state[part] = None if part in skip else part_from_bytes(blobs[part])
        return Artifact(version, state, json.loads(row[1]))

    def has_part(self, version: str, part: str) -> bool:
        with self._read() as conn:
            return conn.execute("SELECT 1 FROM model_parts WHERE version = %s AND part = %s",
                                (version, part)).fetchone() is not None

    def meta(self, version: str) -> ModelMeta:
        with self._read() as conn:
            text = _one(conn.execute("SELECT meta FROM model_versions WHERE version = %s",
                                     (version,)))
        if text is None:
            raise ModelError(f"model version {version!r} is missing")
        return json.loads(text)

    def prune(self, keep: int = 5) -> list[str]:
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (REGISTRY_LOCK,))
            latest = _one(conn.execute("SELECT version FROM model_latest"))
            metas = {r[0]: r[1] for r in conn.execute(
                "SELECT version, meta FROM model_versions ORDER BY seq")}
            old = prunable(list(metas), latest, keep, lambda v: json.loads(metas[v]))
            if old:
                conn.execute("DELETE FROM model_versions WHERE version = ANY(%s)", (old,))
                conn.execute("DELETE FROM model_blobs b WHERE NOT EXISTS "
                             "(SELECT 1 FROM model_parts p WHERE p.blob_id = b.id)")
        return old


__all__ = ["PostgresRegistry", "part_bytes", "part_from_bytes"]
