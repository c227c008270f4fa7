"""Durable store (catalog, event log, settings, keys) and live in-memory state."""

from __future__ import annotations

from pathlib import Path

from reelrank.errors import StoreError
from reelrank.store.base import AppendResult, Store

__all__ = ["AppendResult", "Store", "open_store"]


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
    path = Path(text)
    if path.suffix not in (".db", ".sqlite", ".sqlite3") or path.is_dir():
        path = path / "reelrank.db"
    from reelrank.store.sqlite import SQLiteStore

    return SQLiteStore(path)
