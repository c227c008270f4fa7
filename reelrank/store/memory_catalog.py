"""The catalog in process memory (``store/live.py``'s ``Catalog``), for the in-process live
state (``store/memory.py``): the items by id, the newest first, and each creator's items.
Loaded from the store at start-up; the store stays the durable copy."""

from __future__ import annotations

import bisect
import threading
from typing import Iterable

from reelrank.types import Item

__all__ = ["MemoryCatalog"]


class MemoryCatalog:
    """Items in memory, for the feed path (the store stays the durable copy)."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._by_created: list[tuple[int, str]] = []  # sorted ascending by created_at
        self._by_creator: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.version = 0  # bumped by every upsert: lets readers tell the catalog is unchanged

    def upsert(self, items: list[Item]) -> None:
        with self._lock:
            for it in items:
                old = self._items.get(it.item_id)
                if old is not None:
                    pos = bisect.bisect_left(self._by_created, (old.created_at, old.item_id))
                    if pos < len(self._by_created) and self._by_created[pos] == (old.created_at, old.item_id):
                        del self._by_created[pos]
                    self._by_creator.get(old.creator_id, set()).discard(old.item_id)
                self._items[it.item_id] = it
                bisect.insort(self._by_created, (it.created_at, it.item_id))
                self._by_creator.setdefault(it.creator_id, set()).add(it.item_id)
            # After the changes: a reader that read the old number and then saw part of this
            # upsert reads again next time.
            self.version += 1

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def get_many(self, item_ids: Iterable[str]) -> list[Item | None]:
        """``get`` for many ids in one C-level pass (ranking reads 500 per request)."""
        return list(map(self._items.get, item_ids))

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def ids(self) -> list[str]:
        return list(self._items)

    def newest(self, n: int, created_after: int | None = None) -> list[Item]:
        """Up to ``n`` items, newest first, optionally only those created after a time."""
        out: list[Item] = []
        for created, item_id in reversed(self._by_created):
            if created_after is not None and created <= created_after:
                break
            out.append(self._items[item_id])
            if len(out) >= n:
                break
        return out

    def by_creator(self, creator_id: str) -> set[str]:
        return set(self._by_creator.get(creator_id, ()))
