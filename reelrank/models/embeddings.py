"""A collision-free, dynamic embedding table (the Monolith design).

IDs (item, creator, sound, hashtag, user ids; ``str`` or ``int``, and ``"5"`` is not ``5``) are
never hashed into a fixed table. Each admitted ID owns one row of ``weight`` for as long as it
stays in use:

- **Admission.** ``observe(ids, now)`` — called by training, never by serving — counts every
  occurrence. An ID gets its own row once it has been seen ``min_count`` times; until then it
  reads the shared, learned ``UNKNOWN_ROW`` (row 0), which therefore learns what a cold ID looks
  like.
- **Padding.** ``None`` in an id list means padding and reads ``PAD_ROW`` (row 1): it is zero and
  receives no gradient, so padded history positions contribute nothing.
- **Expiry.** ``evict(now)`` removes IDs (admitted or still counting) not observed for ``ttl``
  clock units; ``now`` is the caller's clock (e.g. event time in ms). An ID last observed at
  ``t`` survives while ``now - t < ttl``. Freed rows go to a free list; the lowest free row is
  reused first and is re-initialised when a new ID takes it. An evicted ID reads ``UNKNOWN_ROW``
  again and must be re-admitted from a zero count.
- **Growth.** When no row is free, capacity doubles. The ``weight`` Parameter object is kept and
  its storage swapped, so existing rows keep their values bit for bit and an optimizer built on
  ``weight`` still refers to it. Its per-row state (momentum, Adam moments, Adagrad sums) still
  has the old length, so call ``sync_optimizer(optimizer)`` after ``observe``/``evict`` and
  before ``optimizer.step()``: it zero-pads that state to the new capacity and zeroes the state
  of rows re-initialised for a new ID (zero is the initial state of SGD momentum, Adam/AdamW/
  SparseAdam moments and Adagrad with its default ``initial_accumulator_value=0``). Forgetting it
  fails loudly with a shape error in ``step``. ``version`` counts mapping changes and growths.
- **Persistence.** ``state_dict()`` carries the vocabulary (id -> row, last-seen times, pending
  counts) as extra state, and ``load_state_dict`` resizes ``weight`` to the saved capacity, so a
  saved model restores its lookups exactly. Policy (``min_count``, ``ttl``) is the receiver's.
  A loaded table builds its training bookkeeping (last-seen times, pending counts, free rows)
  only when training first needs it, and ``reuse_vocabulary_of`` lets a newer state of the same
  vocabulary share the id -> row mapping of the table it replaces (copied on first change).

Threads: one writer, no lock. ``observe``, ``evict``, ``sync_optimizer`` and ``load_state_dict``
mutate the table and must not run concurrently with ``lookup_rows``/``forward`` on the same
instance. The trainer owns its table and publishes snapshots (``state_dict`` through the model
registry); serving loads a snapshot into its own model and swaps the reference. A lock inside
would not help: eviction can recycle a row between a ``lookup_rows`` and the ``forward`` using it.
"""

from __future__ import annotations

import heapq
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Id = str | int

UNKNOWN_ROW = 0
PAD_ROW = 1
_RESERVED_ROWS = 2
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


class DynamicEmbedding(nn.Module):
    """Embedding rows for an open, changing set of IDs, without hash collisions.

    Args:
        dim: embedding width ``D``.
        min_count: observations needed before an ID gets its own row (>= 1).
        ttl: evict IDs not observed for this long (caller's clock units); ``None`` never evicts.
        initial_capacity: rows allocated up front, the two reserved rows included (>= 2).
        init_std: std of the normal init of the unknown row and of each newly admitted row.
        sparse: produce sparse gradients (for ``torch.optim.SparseAdam`` / sparse Adagrad).
    """

    def __init__(
        self,
        dim: int,
        min_count: int = 1,
        ttl: float | None = None,
        initial_capacity: int = 1024,
        init_std: float = 0.02,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be > 0 or None, got {ttl}")
        if initial_capacity < _RESERVED_ROWS:
            raise ValueError(
                f"initial_capacity must be >= {_RESERVED_ROWS}, got {initial_capacity}"
            )
        self.dim = dim
        self.min_count = min_count
        self.ttl = ttl
        self.init_std = init_std
        self.sparse = sparse
        # Unused rows stay zero until an ID takes them; the pad row stays zero forever.
        self.weight = nn.Parameter(torch.zeros(initial_capacity, dim))
        with torch.no_grad():
            self.weight[UNKNOWN_ROW].normal_(0.0, init_std)
        self.version = 0
        self._row_of: dict[Id, int] = {}  # admitted id -> its row
        self._last_seen: dict[Id, float] = {}  # admitted and pending ids -> last observation
        self._count: dict[Id, int] = {}  # pending (not yet admitted) id -> observations so far
        self._free: list[int] = []  # min-heap of recycled rows
        self._next_row = _RESERVED_ROWS  # rows >= this have never been handed out
        self._reinit_rows: set[int] = set()  # rows whose optimizer state sync_optimizer resets
        # After a load, the training bookkeeping (last-seen times, pending counts, free rows) is
        # built from the saved tensors only when something needs it: serving never does.
        self._unbuilt: dict[str, Any] | None = None
        # The admitted ids and rows a load installed (None once the mapping changes), and
        # whether ``_row_of`` is shared with another table (copied before it is changed).
        self._loaded_rows: tuple[torch.Tensor, ...] | None = None
        self._rows_shared = False
        self._vocab_hint: DynamicEmbedding | None = None  # see ``reuse_vocabulary_of``
        self.register_load_state_dict_pre_hook(DynamicEmbedding._resize_for_load)

    @property
    def capacity(self) -> int:
        """Rows currently allocated in ``weight``, reserved rows included."""
        return self.weight.shape[0]

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
        copy: two tables that share one vocabulary return the same object, which is how a
        serving swap tells that nothing was admitted."""
        return self._row_of

    def lookup_rows(self, ids: Sequence[Id | None]) -> torch.Tensor:
        """Rows for ``ids`` without changing anything; flat ``(N,)``, reshape for ``(B, L)``."""
        get = self._row_of.get
        rows = [PAD_ROW if i is None else get(_key(i), UNKNOWN_ROW) for i in ids]
        return torch.tensor(rows, dtype=torch.long)  # (N,)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Vectors for row indices from ``lookup_rows``: ``(...) -> (..., D)``."""
        # (B, L) -> (B, L, D), or (N,) -> (N, D)
        return F.embedding(rows, self.weight, padding_idx=PAD_ROW, sparse=self.sparse)

    def observe(self, ids: Iterable[Id | None], now: float) -> None:
        """Count each occurrence (duplicates too), admit IDs at ``min_count``, refresh last-seen.

        Call it before the forward pass of a training step: admission can grow ``weight``.
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
                self._admit(id_)
            else:
                self._count[id_] = count

    def rows_for(self, ids: Sequence[Id | None], now: float) -> torch.Tensor:
        """Training shortcut: ``observe(ids, now)`` then ``lookup_rows(ids)``."""
        self.observe(ids, now)
        return self.lookup_rows(ids)

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

    def sync_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Fit ``optimizer``'s state for ``weight`` to the current table (see module docstring)."""
        state = optimizer.state.get(self.weight)
        if state:
            device = self.weight.device
            rows = torch.tensor(sorted(self._reinit_rows), dtype=torch.long, device=device)
            for name, value in list(state.items()):
                if not torch.is_tensor(value) or value.dim() != 2 or value.shape[1] != self.dim:
                    continue  # e.g. Adam's scalar ``step``
                if value.shape[0] != self.capacity:
                    value = self._resized(value, self.capacity)
                    state[name] = value
                if rows.numel():
                    value.index_fill_(0, rows, 0.0)
        self._reinit_rows.clear()

    def _admit(self, id_: Id) -> None:
        self._own_rows()
        if self._free:
            row = heapq.heappop(self._free)
        else:
            if self._next_row == self.capacity:
                self._grow()
            row = self._next_row
            self._next_row += 1
        self._row_of[id_] = row
        with torch.no_grad():
            self.weight[row].normal_(0.0, self.init_std)
        self._reinit_rows.add(row)
        self.version += 1

    def _grow(self) -> None:
        new_capacity = 2 * self.capacity
        self.weight.data = self._resized(self.weight.data, new_capacity)
        grad = self.weight.grad
        if grad is not None:  # keep a gradient accumulated before the growth, with the new shape
            if grad.is_sparse:
                self.weight.grad = torch.sparse_coo_tensor(
                    grad._indices(),
                    grad._values(),
                    (new_capacity, self.dim),
                    check_invariants=False,  # indices of a valid gradient of the smaller table
                )
            else:
                self.weight.grad = self._resized(grad, new_capacity)
        self.version += 1

    @staticmethod
    def _resized(value: torch.Tensor, rows: int) -> torch.Tensor:
        """``value`` with its first ``rows`` rows kept and any extra rows zero."""
        out = value.new_zeros((rows, *value.shape[1:]))
        keep = min(rows, value.shape[0])
        out[:keep] = value[:keep]
        return out

    def get_extra_state(self) -> dict[str, Any]:
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

    def reuse_vocabulary_of(self, other: "DynamicEmbedding | None") -> None:
        """Before ``load_state_dict``: if the state's admitted ids and rows are exactly
        ``other``'s (itself loaded from a state and unchanged since), share ``other``'s
        id -> row mapping instead of building another (a serving process swapping in a newer
        version of the same vocabulary: rebuilding 100,000 ids' mapping took most of the
        swap). The shared mapping is copied by whichever table changes it first."""
        self._vocab_hint = other

    def set_extra_state(self, state: dict[str, Any]) -> None:
        hint, self._vocab_hint = self._vocab_hint, None
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
            if hint is not None and hint._loaded_rows is not None and all(
                    a.shape == b.shape and torch.equal(a, b)
                    for a, b in zip(key, hint._loaded_rows)):
                self._row_of, self._rows_shared, hint._rows_shared = hint._row_of, True, True
                self._loaded_rows = hint._loaded_rows
                self._next_row = int(state["next_row"])
            else:
                ids = _decode_ids(state["ids"][:key[0].numel()], key[1], key[2])
                self._install_rows(ids, state["rows"].tolist(), int(state["next_row"]), key=key)
            self._unbuilt = state
        else:
            raise ValueError(f"unknown DynamicEmbedding state format {state.get('format')!r}")
        self._reinit_rows.clear()
        self.version += 1

    def _install_rows(self, ids: list, rows: list[int], next_row: int,
                      key: tuple[torch.Tensor, ...] | None) -> None:
        used = np.asarray(rows, dtype=np.int64)
        if used.size and (used.min() < _RESERVED_ROWS or used.max() >= next_row
                          or np.unique(used).size != used.size):
            raise ValueError("DynamicEmbedding state has duplicate or out-of-range rows")
        if next_row > self.capacity:
            raise ValueError(f"state uses {next_row} rows but weight has {self.capacity}")
        self._row_of = dict(zip(ids, rows, strict=True))
        self._rows_shared = False
        self._loaded_rows = key
        self._next_row = next_row

    @staticmethod
    def _free_rows(rows, next_row: int) -> list[int]:
        taken = np.zeros(max(next_row, _RESERVED_ROWS), dtype=bool)
        taken[np.asarray(rows, dtype=np.int64)] = True
        # Sorted ascending, so already a heap.
        return (np.flatnonzero(~taken[_RESERVED_ROWS:next_row]) + _RESERVED_ROWS).tolist()

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

    def _resize_for_load(self, state_dict: dict[str, Any], prefix: str,
                         local_metadata: dict[str, Any], *_: Any) -> None:
        """Give ``weight`` the saved capacity so the default loader can copy into it (or, with
        ``load_state_dict(assign=True)``, replace it: then the new rows need no zeroing)."""
        incoming = state_dict.get(prefix + "weight")
        if (
            torch.is_tensor(incoming)
            and incoming.dim() == 2
            and incoming.shape[1] == self.dim
            and incoming.shape[0] != self.capacity
        ):
            if local_metadata.get("assign_to_params_buffers"):
                self.weight.data = self.weight.data.new_empty(incoming.shape)
            else:
                self.weight.data = self.weight.data.new_zeros(incoming.shape)
            self.weight.grad = None

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, min_count={self.min_count}, ttl={self.ttl}, "
            f"capacity={self.capacity}, admitted={len(self)}, sparse={self.sparse}"
        )
