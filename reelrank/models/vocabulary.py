"""The id vocabulary of a dynamic embedding table: which ID owns which row (the Monolith design;
torchrec calls this part of a table "managed collision").

IDs (item, creator, sound, hashtag, user ids; ``str`` or ``int``, and ``"5"`` is not ``5``) are
never hashed into a fixed number of rows. Each admitted ID owns one row for as long as it stays
in use; ``IdVocabulary`` decides which, and the table that holds the vectors
(``models.embeddings.DynamicEmbedding``) follows it:

- **Admission.** ``observe(ids, now)`` — called by training, never by serving — counts every
  occurrence. An ID gets its own row once it has been seen ``min_count`` times; until then it
  reads the shared ``UNKNOWN_ROW`` (row 0), which therefore learns what a cold ID looks like.
- **Padding.** ``None`` in an id list means padding and reads ``PAD_ROW`` (row 1).
- **Expiry.** ``evict(now)`` removes IDs (admitted or still counting) not observed for ``ttl``
  clock units; ``now`` is the caller's clock (e.g. event time in ms). An ID last observed at
  ``t`` survives while ``now - t < ttl``. Freed rows go to a free list; the lowest free row is
  handed out first. An evicted ID reads ``UNKNOWN_ROW`` again and must be re-admitted from a
  zero count.
- **Growth.** ``capacity`` is the number of rows the owner's storage holds, the reserved rows
  included. When an admission finds no row free, capacity doubles, before ``on_admit`` hears of
  the new row: the owner grows its storage to ``capacity`` there. ``version`` counts mapping
  changes and growths.
- **Persistence.** ``state()`` gives the vocabulary (id -> row, last-seen times, pending counts)
  as a few tensors and ``load_state`` installs one. Policy (``min_count``, ``ttl``) is the
  receiver's. A loaded vocabulary builds its training bookkeeping (last-seen times, pending
  counts, free rows) only when training first needs it, and ``load_state(state, like=other)``
  shares the id -> row mapping of ``other`` when the state holds exactly its ids and rows
  (copied on first change).

Threads: one writer, no lock (see ``models.embeddings``).
"""

from __future__ import annotations

import copy
import heapq
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

Id = str | int

UNKNOWN_ROW = 0
PAD_ROW = 1
RESERVED_ROWS = 2
_STATE_FORMAT = 2  # 1: plain lists (still loaded)


def _encode_ids(ids: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids (str or int) -> (UTF-8 blob (B,) uint8, byte length per id (N,), is-int flag (N,))."""
    parts = [i.encode() if isinstance(i, str) else str(i).encode() for i in ids]
    blob = b"".join(parts)
    return (torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob
            else torch.zeros(0, dtype=torch.uint8),
            torch.tensor([len(p) for p in parts], dtype=torch.long),
            torch.tensor([not isinstance(i, str) for i in ids], dtype=torch.bool))


def _decode_ids(blob: torch.Tensor, lengths: torch.Tensor, is_int: torch.Tensor) -> list:
    data = blob.numpy().tobytes()
    ends = np.cumsum(lengths.numpy()).tolist()
    starts = [0] + ends[:-1]
    text = data.decode()
    if len(text) == len(data):  # ASCII: byte offsets are character offsets
        data = text
        out = [data[a:b] for a, b in zip(starts, ends)]
    else:
        out = [data[a:b].decode() for a, b in zip(starts, ends)]
    if bool(is_int.any()):
        out = [int(i) if flag else i for i, flag in zip(out, is_int.tolist())]
    return out


def _key(id_: object) -> Id:
    """The dict key for an id; NumPy integers become ``int`` so they match Python ints."""
    if isinstance(id_, (str, int)):
        return id_
    if isinstance(id_, numbers.Integral):
        return int(id_)
    raise TypeError(f"ids must be str or int (or None for padding), got {type(id_).__name__}")


# The containers that hold only ids (immutable) and numbers: a shallow copy is a full copy.
_FLAT = ("_row_of", "_last_seen", "_count", "_free")


class IdVocabulary:
    """Rows for an open, changing set of IDs, without hash collisions.

    Args:
        min_count: observations needed before an ID gets its own row (>= 1).
        ttl: evict IDs not observed for this long (caller's clock units); ``None`` never evicts.
        capacity: rows the owner holds up front, the two reserved rows included (>= 2).
    """

    def __init__(self, min_count: int = 1, ttl: float | None = None,
                 capacity: int = 1024) -> None:
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be > 0 or None, got {ttl}")
        if capacity < RESERVED_ROWS:
            raise ValueError(f"initial_capacity must be >= {RESERVED_ROWS}, got {capacity}")
        self.min_count = min_count
        self.ttl = ttl
        self.capacity = capacity
        self.version = 0
        self._row_of: dict[Id, int] = {}  # admitted id -> its row
        self._last_seen: dict[Id, float] = {}  # admitted and pending ids -> last observation
        self._count: dict[Id, int] = {}  # pending (not yet admitted) id -> observations so far
        self._free: list[int] = []  # min-heap of recycled rows
        self._next_row = RESERVED_ROWS  # rows >= this have never been handed out
        # After a load, the training bookkeeping (last-seen times, pending counts, free rows) is
        # built from the saved tensors only when something needs it: serving never does.
        self._unbuilt: dict[str, Any] | None = None
        # The admitted ids and rows a load installed (None once the mapping changes), and
        # whether ``_row_of`` is shared with another vocabulary (copied before it is changed).
        self._loaded_rows: tuple[torch.Tensor, ...] | None = None
        self._rows_shared = False

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, id_: object) -> bool:
        return id_ is not None and _key(id_) in self._row_of

    def id_to_row(self) -> dict[Id, int]:
        """A copy of the admitted vocabulary."""
        return dict(self._row_of)

    @property
    def rows(self) -> Mapping[Id, int]:
        """The admitted vocabulary itself (id -> row), read-only by contract and without a
        copy: two vocabularies that share one mapping return the same object, which is how a
        serving swap tells that nothing was admitted."""
        return self._row_of

    def lookup(self, ids: Sequence[Id | None]) -> list[int]:
        """Rows for ``ids`` without changing anything (``PAD_ROW`` for ``None``)."""
        get = self._row_of.get
        return [PAD_ROW if i is None else get(_key(i), UNKNOWN_ROW) for i in ids]

    @property
    def next_row(self) -> int:
        """Rows at and above this one have never been handed out."""
        return self._next_row

    @property
    def pending(self) -> Mapping[Id, int]:
        """Ids still counting toward admission -> their observations so far (read-only)."""
        self._build_bookkeeping()
        return self._count

    @property
    def last_seen(self) -> Mapping[Id, float]:
        """Admitted and pending ids -> their last observation (read-only)."""
        self._build_bookkeeping()
        return self._last_seen

    def free_rows(self) -> list[int]:
        """Rows handed out before and free now, ascending."""
        self._build_bookkeeping()
        return sorted(self._free)

    # -- training --------------------------------------------------------------------------------
    def observe(self, ids: Iterable[Id | None], now: float,
                on_admit: Callable[[int], None] | None = None) -> None:
        """Count each occurrence (duplicates too), admit IDs at ``min_count``, refresh last-seen.

        ``on_admit(row)`` runs for each row handed to a newly admitted ID, in order, once the
        ID holds it (and ``capacity`` has grown, if the row needed that).
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now}")
        self._build_bookkeeping()
        for raw in ids:
            if raw is None:
                continue
            id_ = _key(raw)
            previous = self._last_seen.get(id_)
            # max() keeps a late, out-of-order event from shortening an ID's life.
            self._last_seen[id_] = now if previous is None else max(previous, now)
            if id_ in self._row_of:
                continue
            count = self._count.get(id_, 0) + 1
            if count >= self.min_count:
                self._count.pop(id_, None)
                row = self._admit(id_)
                if on_admit is not None:
                    on_admit(row)
            else:
                self._count[id_] = count

    def evict(self, now: float) -> int:
        """Forget IDs with ``now - last_seen >= ttl``; return how many admitted IDs lost their row.

        IDs still counting toward admission expire the same way, so one-off IDs do not pile up.
        Scans every tracked ID: call it periodically, not per event.
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now}")
        if self.ttl is None:
            return 0
        self._build_bookkeeping()
        stale = [i for i, seen in self._last_seen.items() if now - seen >= self.ttl]
        evicted = 0
        if stale:
            self._own_rows()
        for id_ in stale:
            del self._last_seen[id_]
            row = self._row_of.pop(id_, None)
            if row is None:
                self._count.pop(id_, None)
                continue
            heapq.heappush(self._free, row)
            evicted += 1
        if evicted:
            self.version += 1
        return evicted

    def _admit(self, id_: Id) -> int:
        self._own_rows()
        if self._free:
            row = heapq.heappop(self._free)
        else:
            if self._next_row == self.capacity:
                self.capacity *= 2
                self.version += 1
            row = self._next_row
            self._next_row += 1
        self._row_of[id_] = row
        self.version += 1
        return row

    # -- persistence -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The vocabulary as a few tensors (loadable with ``torch.load(weights_only=True)``,
        whose unpickler is pure Python: 100,000 ids as list items took most of a second to
        load, as tensors a few milliseconds). Ids are stored as their UTF-8 bytes, one blob
        with a length per id; integer ids as their decimal text with a flag."""
        self._build_bookkeeping()
        admitted = list(self._row_of)
        pending = list(self._count)
        ids, lengths, is_int = _encode_ids(admitted + pending)
        return {
            "format": _STATE_FORMAT,
            "ids": ids, "id_lengths": lengths, "id_is_int": is_int,
            "admitted": len(admitted),
            "rows": torch.tensor([self._row_of[i] for i in admitted], dtype=torch.long),
            "last_seen": torch.tensor([self._last_seen[i] for i in admitted + pending],
                                      dtype=torch.float64),
            "pending_counts": torch.tensor([self._count[i] for i in pending], dtype=torch.long),
            "next_row": self._next_row,
        }

    def load_state(self, state: dict[str, Any], like: IdVocabulary | None = None) -> None:
        """Install a ``state()`` (or a format-1 state of plain lists). If its admitted ids and
        rows are exactly ``like``'s (itself loaded from a state and unchanged since), share
        ``like``'s id -> row mapping instead of building another (a serving process swapping in
        a newer version of the same vocabulary: rebuilding 100,000 ids' mapping took most of
        the swap). The shared mapping is copied by whichever vocabulary changes it first."""
        if state.get("format") == 1:  # lists: what versions published before format 2 hold
            ids = [_key(i) for i in state["ids"]]
            rows = [int(r) for r in state["rows"]]
            pending = [_key(i) for i in state["pending_ids"]]
            self._install_rows(ids, rows, int(state["next_row"]), key=None)
            self._unbuilt = None
            self._last_seen = dict(zip(ids, (float(x) for x in state["last_seen"]), strict=True))
            self._last_seen.update(zip(pending, (float(x) for x in state["pending_last_seen"]),
                                       strict=True))
            self._count = dict(zip(pending, (int(c) for c in state["pending_counts"]),
                                   strict=True))
            self._free = self._free_rows(rows, int(state["next_row"]))
        elif state.get("format") == _STATE_FORMAT:
            n = int(state["admitted"])
            lengths = state["id_lengths"]
            key = (state["ids"][:int(lengths[:n].sum())], lengths[:n], state["id_is_int"][:n],
                   state["rows"])
            if like is not None and like._loaded_rows is not None and all(
                    a.shape == b.shape and torch.equal(a, b)
                    for a, b in zip(key, like._loaded_rows)):
                self._row_of, self._rows_shared, like._rows_shared = like._row_of, True, True
                self._loaded_rows = like._loaded_rows
                self._next_row = int(state["next_row"])
            else:
                ids = _decode_ids(state["ids"][:key[0].numel()], key[1], key[2])
                self._install_rows(ids, state["rows"].tolist(), int(state["next_row"]), key=key)
            self._unbuilt = state
        else:
            raise ValueError(f"unknown DynamicEmbedding state format {state.get('format')!r}")
        self.version += 1

    def _install_rows(self, ids: list, rows: list[int], next_row: int,
                      key: tuple[torch.Tensor, ...] | None) -> None:
        used = np.asarray(rows, dtype=np.int64)
        if used.size and (used.min() < RESERVED_ROWS or used.max() >= next_row
                          or np.unique(used).size != used.size):
            raise ValueError("DynamicEmbedding state has duplicate or out-of-range rows")
        if next_row > self.capacity:
            raise ValueError(f"state uses {next_row} rows but weight has {self.capacity}")
        self._row_of = dict(zip(ids, rows, strict=True))
        self._rows_shared = False
        self._loaded_rows = key
        self._next_row = next_row

    @staticmethod
    def _free_rows(rows: Any, next_row: int) -> list[int]:
        taken = np.zeros(max(next_row, RESERVED_ROWS), dtype=bool)
        taken[np.asarray(rows, dtype=np.int64)] = True
        # Sorted ascending, so already a heap.
        return (np.flatnonzero(~taken[RESERVED_ROWS:next_row]) + RESERVED_ROWS).tolist()

    def _build_bookkeeping(self) -> None:
        """Last-seen times, pending counts and free rows from the loaded state (once)."""
        state, self._unbuilt = self._unbuilt, None
        if state is None:
            return
        every = _decode_ids(state["ids"], state["id_lengths"], state["id_is_int"])
        n = int(state["admitted"])
        pending = every[n:]
        self._last_seen = dict(zip(every, state["last_seen"].tolist(), strict=True))
        self._count = dict(zip(pending, state["pending_counts"].tolist(), strict=True))
        self._free = self._free_rows(state["rows"], self._next_row)

    def _own_rows(self) -> None:
        """About to change the mapping: stop sharing it, and forget the loaded key."""
        if self._rows_shared:
            self._row_of = dict(self._row_of)
            self._rows_shared = False
        self._loaded_rows = None

    def __deepcopy__(self, memo: dict[int, Any]) -> IdVocabulary:
        """A full copy, ten times faster than ``deepcopy`` walking 100,000 ids: the ids are
        immutable (str or int), so a shallow copy of each container of them is a full copy."""
        out = IdVocabulary.__new__(IdVocabulary)
        memo[id(self)] = out
        for name, value in self.__dict__.items():
            if name in _FLAT:
                if id(value) not in memo:
                    memo[id(value)] = value.copy()
                out.__dict__[name] = memo[id(value)]
            else:
                out.__dict__[name] = copy.deepcopy(value, memo)
        return out
