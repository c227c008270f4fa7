"""Durable store (catalog, event log, settings, keys) and live state.

``base.py`` is the durable store's interface and ``live.py`` the live state's; the backends sit
beside them. ``open_store`` and ``new_live_state`` pick a backend, so that nothing above this
package imports one."""

from __future__ import annotations

from pathlib import Path

from reelrank.errors import StoreError
from reelrank.store.base import AppendResult, Store
from reelrank.store.live import Catalog, LiveState

__all__ = ["AppendResult", "Catalog", "LiveState", "Store", "new_catalog", "new_live_state",
           "open_store"]


def new_catalog() -> Catalog:
    """An empty catalog in this process's memory."""
    from reelrank.store.memory import MemoryCatalog

    return MemoryCatalog()


def new_live_state(catalog: Catalog | str | None = None, url: str | None = None,
                   **options) -> LiveState:
    """An empty live state over ``catalog`` (a new one if None), in this process's memory: the
    served state of a single-process server, and every scratch state that training and replays
    build for themselves. ``options``: ``store.memory.MemoryLiveState``'s (trending window,
    top-list refresh, ``background_refresh``, ``max_feed_only_viewers``, ``co_engagement``).

    With ``url`` ``redis://host:port/db?prefix=name:`` (or ``rediss://``, ``unix://``; also
    accepted in place of the catalog) the state is the shared one in Redis
    (``store.redis_live.RedisLiveState``, which takes the same options and a few of its own);
    ``memory`` or None is the in-process default."""
    from reelrank.store.memory import MemoryCatalog, MemoryLiveState

    if isinstance(catalog, str):
        catalog, url = None, catalog
    if catalog is None:
        catalog = MemoryCatalog()
    if url in (None, "", "memory"):
        return MemoryLiveState(catalog, **options)
    if url.startswith(("redis://", "rediss://", "unix://")):
        # Imported here: redis-py is needed only by those who use this backend.
        from reelrank.store.redis_live import RedisLiveState

        return RedisLiveState.from_url(catalog, url, **options)
    raise StoreError(f"no live-state backend for {url.split('://', 1)[0]!r}")


def open_store(url: str | Path) -> Store:
    """Open a backend chosen by the URL's scheme.

    - ``sqlite:///abs/path/reelrank.db`` or ``sqlite:relative.db``: the embedded default;
    - a bare path: a file ending in .db / .sqlite / .sqlite3, else a directory
      (``reelrank.db`` inside it);
    - ``postgresql://user:password@host:port/dbname`` (or ``postgres://``): the PostgreSQL
      store, for several processes on one database.
    """
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        # Imported here: psycopg is needed only by those who use this backend.
        from reelrank.store.postgres import PostgresStore

        return PostgresStore(text)
    if text.startswith("sqlite:"):
        path = text[len("sqlite:"):]
        if path.startswith("///"):
            path = path[2:]
        elif path.startswith("//"):
            raise StoreError(f"sqlite URL must be sqlite:///path, got {text!r}")
        from reelrank.store.sqlite import SQLiteStore

        return SQLiteStore(Path(path))
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise StoreError(f"no store backend for scheme {scheme!r}")
    file = Path(text)
    if file.suffix not in (".db", ".sqlite", ".sqlite3") or file.is_dir():
        file = file / "reelrank.db"
    from reelrank.store.sqlite import SQLiteStore

    return SQLiteStore(file)
