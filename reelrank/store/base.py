"""Narrow interfaces of the durable store, one per consumer.

The service's ingest path needs only ``CatalogWriter`` and ``EventWriter``; the start-up rebuild of
live state needs only ``EventReader``; auth needs only ``KeyStore``. A backend (SQLite by default,
PostgreSQL at scale) implements all of them in one object, ``Store``, and must pass the contract
suite in ``tests/store/test_contract.py`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, runtime_checkable

from reelrank.types import AccessRecord, ApiKey, Event, Item, UserSettings


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: the events newly stored (in input order) and how many were known;
    ``batch``: with ``outbox=True``, the first sequence number of the stored events, which
    names the batch in the outbox (0: nothing stored, or no outbox asked for)."""

    accepted: list[Event]
    duplicates: int
    batch: int = 0


class CatalogReader(Protocol):
    def get_items(self, item_ids: Iterable[str]) -> dict[str, Item]: ...
    def iter_items(self) -> Iterator[Item]: ...
    def count_items(self) -> int: ...


class CatalogWriter(Protocol):
    def upsert_items(self, items: Iterable[Item]) -> int:
        """Insert or replace items atomically; returns how many were written."""
        ...


class EventWriter(Protocol):
    def append_events(self, events: Iterable[Event], outbox: bool = False) -> AppendResult:
        """Append atomically and durably. An event whose ``event_id`` is known (in the log or
        earlier in the same batch) is skipped and counted as a duplicate. ``outbox``: record
        the stored batch in the live-state outbox (``LiveOutbox``) in the same transaction."""
        ...


class LiveOutbox(Protocol):
    """Batches stored but maybe not yet folded into a live state shared by several processes.

    The process that stores a batch folds it into the shared state next; if it dies in
    between, the batch is durable and missing from live state. So a batch appended with
    ``outbox=True`` is recorded (by its sequence numbers only: no viewer's data) in the same
    transaction, marked done once folded in, and any process folds in the batches left
    pending past a grace period (``Engine.catch_up_live``)."""

    def outbox_pending(self, older_than_ms: int = 0) -> list[tuple[int, int]]:
        """(first seq, last seq) of the batches recorded at least ``older_than_ms`` ago and
        not marked done, oldest first."""
        ...

    def outbox_low(self) -> int:
        """The first seq of the oldest pending batch, else one past the log's end: any batch
        that may still be folded in again starts at or above it (one snapshot)."""
        ...

    def outbox_done(self, batches: Iterable[int]) -> None:
        """Mark batches (by first seq) done."""
        ...

    def outbox_done_through(self, seq: int) -> None:
        """Mark done every batch whose events all have ``seq`` or less (a full rebuild read
        the log through ``seq``)."""
        ...


class EventReader(Protocol):
    def iter_events(
        self, after_seq: int = 0, user_id: str | None = None, since_ts: int | None = None
    ) -> Iterator[tuple[int, Event]]:
        """Events in log order as ``(seq, event)``; ``seq`` grows with each append."""
        ...

    def count_events(self, user_id: str | None = None) -> int: ...
    def last_seq(self) -> int: ...


class SettingsStore(Protocol):
    def get_settings(self, user_id: str) -> UserSettings:
        """The user's settings, or the defaults for a user who never set any."""
        ...

    def put_settings(self, settings: UserSettings) -> None: ...
    def iter_settings(self) -> Iterator[UserSettings]:
        """Every viewer who has stored settings (for the start-up rebuild)."""
        ...


class AccessLog(Protocol):
    def log_access(self, user_id: str, actor: str, action: str, ts: int | None = None) -> None: ...
    def access_log(self, user_id: str, limit: int = 1000) -> list[AccessRecord]:
        """Newest first."""
        ...


class Retention(Protocol):
    def delete_events_before(self, ts: int) -> int:
        """Remove events with ``ts`` before the given time; returns how many."""
        ...


class KeyStore(Protocol):
    def put_key(self, key: ApiKey) -> None: ...
    def find_key(self, key_hash: str) -> ApiKey | None: ...
    def count_keys(self, scope: str | None = None) -> int: ...


class UserEraser(Protocol):
    def erase_user(self, user_id: str) -> int:
        """Remove every stored row about the user (events, settings, tokens, access log
        entries, leaving one pseudonymous "erased" entry); returns how many events were
        removed. Deleted rows must not survive in the backend's files."""
        ...


@runtime_checkable
class Store(CatalogReader, CatalogWriter, EventWriter, EventReader, SettingsStore, KeyStore,
            UserEraser, AccessLog, Retention, LiveOutbox, Protocol):
    """Everything a backend provides. Entry points hold this; components take the narrow parts."""

    url: str

    def close(self) -> None: ...
