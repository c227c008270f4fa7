"""Interaction sequences in a text file (e.g. Amazon Beauty as prepared for BERT4Rec) -> items and
events.

Each non-blank line that does not start with ``#`` is either ``user item`` (one interaction) or
``user item1 item2 ...`` (a user's items in order); the number of tokens on the line decides, so
both forms may be mixed in one file. A line with a single token is an error. The file's order is
the time order: such files carry no timestamps, only each user's sequence.

- Items: ``item_id`` = the token; ``creator_id`` = ``item_id`` (the file says nothing about
  creators, so each item is its own creator rather than all sharing a made-up one);
  ``duration_ms`` = ``ITEM_DURATION_MS`` (15 s); ``created_at`` = 0 (unknown). In first-use order.
- Events: each interaction becomes an ``impression`` and a ``play`` watched to the end
  (``watch_ms = ITEM_DURATION_MS``), both at a synthetic time ``START_MS + k * STEP_MS`` where ``k``
  is the interaction's position in the file (counting every item of a multi-item line), so the
  file's order, and each user's order, is the time order, with one second between interactions.
  Event ids are ``seq:<user>:<n>:<type>`` with ``n`` the user's interaction index (0-based), so a
  re-import adds nothing, and a file that grew at the end adds only the new interactions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from reelrank.importers import Counted, DatasetFormatError, ImportReport, ImportTarget, import_into
from reelrank.types import Event, Item

__all__ = [
    "read_items", "read_events", "import_sequences", "ITEM_DURATION_MS", "START_MS", "STEP_MS",
]

ITEM_DURATION_MS = 15_000
START_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
STEP_MS = 1_000


def _interactions(path: str | Path) -> Iterator[tuple[str, str]]:
    """``(user, item)`` pairs in file order."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            if len(tokens) == 1:
                raise DatasetFormatError(
                    f"{path}:{number}: expected 'user item' or 'user item1 item2 ...', "
                    f"got a single token {tokens[0]!r}")
            user = tokens[0]
            for item in tokens[1:]:
                yield user, item


def _items(pairs: Iterable[tuple[str, str]]) -> list[Item]:
    ids = dict.fromkeys(item for _user, item in pairs)
    return [Item(item_id=i, creator_id=i, duration_ms=ITEM_DURATION_MS, created_at=0) for i in ids]


def _events(pairs: Iterable[tuple[str, str]]) -> Iterator[Event]:
    index: dict[str, int] = {}
    for k, (user, item) in enumerate(pairs):
        n = index.get(user, 0)
        index[user] = n + 1
        ts = START_MS + k * STEP_MS
        prefix = f"seq:{user}:{n}:"
        yield Event(event_id=prefix + "impression", user_id=user, item_id=item, ts=ts,
                    type="impression")
        yield Event(event_id=prefix + "play", user_id=user, item_id=item, ts=ts, type="play",
                    watch_ms=ITEM_DURATION_MS)


def read_items(path: str | Path) -> Iterator[Item]:
    """The items of a sequence file, in first-use order."""
    yield from _items(_interactions(path))


def read_events(path: str | Path) -> Iterator[Event]:
    """The interactions of a sequence file as events, in file order (= time order)."""
    yield from _events(_interactions(path))


def import_sequences(
    path: str | Path, store: ImportTarget, *, progress: bool = True
) -> ImportReport:
    """Import a sequence file into ``store``; safe to run again (adds nothing new)."""
    pairs = list(_interactions(path))
    return import_into(store, _items(pairs), Counted(_events(pairs), 2 * len(pairs)),
                       progress=progress, desc="sequences")
