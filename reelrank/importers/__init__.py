"""Importers: real datasets on disk -> items and events in a store.

Each dataset module (``kuairand``, ``movielens``, ``sequences``) turns a dataset into plain
``Item`` and ``Event`` values (``read_items`` / ``read_events``) and writes them with
``import_into``, which only needs the two narrow write protocols of the store. Event ids are
derived from the data itself, so importing the same dataset twice adds nothing: the store counts
the second copy as duplicates.

The datasets are never copied into the project; callers pass the path of their own copy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from itertools import islice
from typing import Protocol, TypeVar

from tqdm import tqdm

from reelrank.errors import ValidationError
from reelrank.ids import id_problem
from reelrank.store.base import CatalogWriter, EventWriter
from reelrank.types import Event, Item

__all__ = [
    "DATASETS", "DatasetFormatError", "ImportReport", "ImportTarget", "import_into",
    "import_kuairand", "import_movielens", "import_sequences",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class DatasetFormatError(ValidationError, ValueError):
    """A dataset file whose content does not have the expected shape; the message names the
    file and the line. A ``ValueError`` too, so plain callers can catch it without our tree."""


class ImportTarget(CatalogWriter, EventWriter, Protocol):
    """What an import writes to: the catalog and the event log, nothing else."""


@dataclass(frozen=True)
class ImportReport:
    """What an import did: items written (inserted or replaced), events newly stored, events
    skipped because their id was already known, and the wall time of the whole import."""

    items: int
    events: int
    duplicates: int
    seconds: float


def _chunks(values: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(values)
    while chunk := list(islice(it, size)):
        yield chunk


def _total(values: Iterable) -> int | None:
    return len(values) if isinstance(values, Sized) else None


class Counted(Iterable[T]):
    """A one-shot iterable that knows its length in advance, so progress bars show a total."""

    def __init__(self, values: Iterable[T], n: int):
        self._values = values
        self._n = n

    def __iter__(self) -> Iterator[T]:
        return iter(self._values)

    def __len__(self) -> int:
        return self._n


ITEM_ID_FIELDS = ("item_id", "creator_id", "sound_id")
EVENT_ID_FIELDS = ("event_id", "user_id", "item_id", "request_id", "session_id")


def _checked(values: Iterable[T], fields: tuple[str, ...], what: str, desc: str) -> Iterable[T]:
    """``values`` with every id checked against the API's rule (``reelrank.ids``) on the way
    to the store: an id the API would refuse cannot enter through an import either (an id
    with a tab or a newline would break every text format it later travels through)."""

    def check() -> Iterator[T]:
        for n, value in enumerate(values):
            for field in fields:
                text = getattr(value, field)
                if text is None and field in ("sound_id", "request_id", "session_id"):
                    continue
                problem = id_problem(text)
                if problem is not None:
                    raise DatasetFormatError(
                        f"{desc or 'import'}: {what} {n} ({field}={text!r:.80}): {field} "
                        f"{problem}; nothing after it was imported")
            yield value

    total = _total(values)
    return Counted(check(), total) if total is not None else check()


def import_into(
    store: ImportTarget,
    items: Iterable[Item],
    events: Iterable[Event],
    *,
    progress: bool = True,
    batch_size: int = 50_000,
    desc: str = "",
) -> ImportReport:
    """Upsert ``items`` then append ``events``, ``batch_size`` at a time.

    Items go first so that live state rebuilt from the log finds every event's item. Each batch
    is one store transaction: an interrupted import leaves whole batches behind, and running it
    again fills in the rest (known event ids are skipped). An id that breaks the API's id rule
    stops the import with a ``DatasetFormatError`` naming the element and the field; its batch
    is not written. Progress bars go to stderr.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    label = f"{desc}: " if desc else ""
    items = _checked(items, ITEM_ID_FIELDS, "item", desc)
    events = _checked(events, EVENT_ID_FIELDS, "event", desc)
    start = time.perf_counter()
    n_items = n_events = duplicates = 0
    with tqdm(total=_total(items), desc=f"{label}items", unit=" items", disable=not progress,
              dynamic_ncols=True) as bar:
        for chunk in _chunks(items, batch_size):
            n_items += store.upsert_items(chunk)
            bar.update(len(chunk))
    with tqdm(total=_total(events), desc=f"{label}events", unit=" events",
              disable=not progress, dynamic_ncols=True) as bar:
        for chunk in _chunks(events, batch_size):
            result = store.append_events(chunk)
            n_events += len(result.accepted)
            duplicates += result.duplicates
            bar.set_postfix(duplicates=duplicates, refresh=False)
            bar.update(len(chunk))
    report = ImportReport(items=n_items, events=n_events, duplicates=duplicates,
                          seconds=time.perf_counter() - start)
    logger.info("imported %s%d items, %d events (%d duplicates) in %.1fs", label, report.items,
                report.events, report.duplicates, report.seconds)
    return report


# The dataset modules import ``import_into`` and ``DatasetFormatError`` from here, so they are
# imported only once those names exist.
from reelrank.importers.kuairand import import_kuairand  # noqa: E402
from reelrank.importers.movielens import import_movielens  # noqa: E402
from reelrank.importers.sequences import import_sequences  # noqa: E402

# Dataset name (as typed on the command line) -> importer taking (path, store, *, progress).
DATASETS: dict[str, Callable[..., ImportReport]] = {
    "kuairand": import_kuairand,
    "movielens": import_movielens,
    "sequences": import_sequences,
}
