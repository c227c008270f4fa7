"""A collision-free, dynamic embedding table (the Monolith design): the vectors of an
``IdVocabulary`` (``models.vocabulary``: which ID owns which row, admission, expiry, growth).

- **Rows.** ``lookup_rows(ids)`` maps ids to rows through the vocabulary (an id not admitted
  reads ``UNKNOWN_ROW``, row 0, which is learned; ``None`` reads ``PAD_ROW``, row 1, which is
  zero and receives no gradient, so padded history positions contribute nothing), and
  ``forward(rows)`` gives their vectors. ``observe``/``evict`` change the vocabulary (training
  only); each row handed to a newly admitted ID is re-initialised here.
- **Growth.** When the vocabulary's capacity doubles, the ``weight`` Parameter object is kept
  and its storage swapped, so existing rows keep their values bit for bit and an optimizer
  built on ``weight`` still refers to it. Its per-row state (momentum, Adam moments, Adagrad
  sums) still has the old length, so call ``sync_optimizer(optimizer)`` after
  ``observe``/``evict`` and before ``optimizer.step()``: it zero-pads that state to the new
  capacity and zeroes the state of rows re-initialised for a new ID (zero is the initial state
  of SGD momentum, Adam/AdamW/SparseAdam moments and Adagrad with its default
  ``initial_accumulator_value=0``). Forgetting it fails loudly with a shape error in ``step``.
  ``version`` (the vocabulary's) counts mapping changes and growths.
- **Persistence.** ``state_dict()`` carries the vocabulary as extra state, and
  ``load_state_dict`` resizes ``weight`` to the saved capacity, so a saved model restores its
  lookups exactly. ``reuse_vocabulary_of`` lets a newer state of the same vocabulary share the
  id -> row mapping of the table it replaces (copied on first change).

Threads: one writer, no lock. ``observe``, ``evict``, ``sync_optimizer`` and ``load_state_dict``
mutate the table and must not run concurrently with ``lookup_rows``/``forward`` on the same
instance. The trainer owns its table and publishes snapshots (``state_dict`` through the model
registry); serving loads a snapshot into its own model and swaps the reference. A lock inside
would not help: eviction can recycle a row between a ``lookup_rows`` and the ``forward`` using it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reelrank.models.vocabulary import PAD_ROW, UNKNOWN_ROW, Id, IdVocabulary


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
        self.vocabulary = IdVocabulary(min_count, ttl, initial_capacity)
        self.dim = dim
        self.init_std = init_std
        self.sparse = sparse
        # Unused rows stay zero until an ID takes them; the pad row stays zero forever.
        self.weight = nn.Parameter(torch.zeros(initial_capacity, dim))
        with torch.no_grad():
            self.weight[UNKNOWN_ROW].normal_(0.0, init_std)
        self._reinit_rows: set[int] = set()  # rows whose optimizer state sync_optimizer resets
        self._vocab_hint: IdVocabulary | None = None  # see ``reuse_vocabulary_of``
        self.register_load_state_dict_pre_hook(DynamicEmbedding._resize_for_load)

    @property
    def capacity(self) -> int:
        """Rows currently allocated in ``weight``, reserved rows included."""
        return self.weight.shape[0]

    @property
    def min_count(self) -> int:
        return self.vocabulary.min_count

    @property
    def ttl(self) -> float | None:
        return self.vocabulary.ttl

    @property
    def version(self) -> int:
        """The vocabulary's: counts mapping changes and growths."""
        return self.vocabulary.version

    def __len__(self) -> int:
        return len(self.vocabulary)

    def __contains__(self, id_: object) -> bool:
        return id_ in self.vocabulary

    def id_to_row(self) -> dict[Id, int]:
        """A copy of the admitted vocabulary."""
        return self.vocabulary.id_to_row()

    @property
    def rows(self) -> Mapping[Id, int]:
        """The vocabulary's id -> row mapping, without a copy (``IdVocabulary.rows``)."""
        return self.vocabulary.rows

    def lookup_rows(self, ids: Sequence[Id | None]) -> torch.Tensor:
        """Rows for ``ids`` without changing anything; flat ``(N,)``, reshape for ``(B, L)``."""
        return torch.tensor(self.vocabulary.lookup(ids), dtype=torch.long)  # (N,)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Vectors for row indices from ``lookup_rows``: ``(...) -> (..., D)``."""
        # (B, L) -> (B, L, D), or (N,) -> (N, D)
        return F.embedding(rows, self.weight, padding_idx=PAD_ROW, sparse=self.sparse)

    def observe(self, ids: Iterable[Id | None], now: float) -> None:
        """Count each occurrence (duplicates too), admit IDs at ``min_count``, refresh last-seen
        (``IdVocabulary.observe``); each admitted ID's row is re-initialised.

        Call it before the forward pass of a training step: admission can grow ``weight``.
        """
        self.vocabulary.observe(ids, now, on_admit=self._take_row)

    def rows_for(self, ids: Sequence[Id | None], now: float) -> torch.Tensor:
        """Training shortcut: ``observe(ids, now)`` then ``lookup_rows(ids)``."""
        self.observe(ids, now)
        return self.lookup_rows(ids)

    def evict(self, now: float) -> int:
        """Forget IDs with ``now - last_seen >= ttl``; return how many admitted IDs lost their row
        (``IdVocabulary.evict``). Their rows are re-initialised when a new ID takes them."""
        return self.vocabulary.evict(now)

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

    def _take_row(self, row: int) -> None:
        """A newly admitted ID holds ``row``: grow to the vocabulary's capacity, initialise it."""
        if self.vocabulary.capacity != self.capacity:
            self._grow(self.vocabulary.capacity)
        with torch.no_grad():
            self.weight[row].normal_(0.0, self.init_std)
        self._reinit_rows.add(row)

    def _grow(self, new_capacity: int) -> None:
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

    @staticmethod
    def _resized(value: torch.Tensor, rows: int) -> torch.Tensor:
        """``value`` with its first ``rows`` rows kept and any extra rows zero."""
        out = value.new_zeros((rows, *value.shape[1:]))
        keep = min(rows, value.shape[0])
        out[:keep] = value[:keep]
        return out

    def get_extra_state(self) -> dict[str, Any]:
        """The vocabulary (``IdVocabulary.state``)."""
        return self.vocabulary.state()

    def reuse_vocabulary_of(self, other: DynamicEmbedding | None) -> None:
        """Before ``load_state_dict``: if the state's admitted ids and rows are exactly
        ``other``'s (itself loaded from a state and unchanged since), share ``other``'s
        id -> row mapping instead of building another (``IdVocabulary.load_state``)."""
        self._vocab_hint = other.vocabulary if other is not None else None

    def set_extra_state(self, state: dict[str, Any]) -> None:
        hint, self._vocab_hint = self._vocab_hint, None
        self.vocabulary.load_state(state, like=hint)
        self._reinit_rows.clear()

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
            self.vocabulary.capacity = self.capacity

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, min_count={self.min_count}, ttl={self.ttl}, "
            f"capacity={self.capacity}, admitted={len(self)}, sparse={self.sparse}"
        )
