"""The data every evaluated model sees, and the interface it implements.

Models under evaluation (the engine's own, the baselines, the peer libraries) all learn from an
``Interactions`` table (positive interactions, indexed 0..n-1) and answer through
``Recommender``; the harness owns the split, the id mapping and the metrics, so every model is
measured on exactly the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Interactions:
    """Positive interactions (a long view, a like, a rated or bought item), time-ordered.

    ``user``/``item`` are dense indices into ``user_ids``/``item_ids``; ``ts`` is ms since epoch.
    Items of the catalog that never occur still have an index (``n_items`` counts them).
    """

    user_ids: np.ndarray  # (U,) object: raw id of each user index
    item_ids: np.ndarray  # (I,) object: raw id of each item index
    user: np.ndarray  # (N,) int32
    item: np.ndarray  # (N,) int32
    ts: np.ndarray  # (N,) int64
    item_creator: np.ndarray | None = None  # (I,) int32 creator index, when known
    item_tags: list[tuple[str, ...]] | None = None  # (I,) hashtags, when known
    _sequences: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)

    def sequences(self) -> list[np.ndarray]:
        """Each user's item indices in time order (ties kept in table order)."""
        if self._sequences is None:
            order = np.lexsort((np.arange(len(self.user)), self.ts, self.user))
            users, items = self.user[order], self.item[order]
            bounds = np.searchsorted(users, np.arange(self.n_users + 1))
            self._sequences = [items[bounds[u]:bounds[u + 1]] for u in range(self.n_users)]
        return self._sequences

    def item_popularity(self) -> np.ndarray:
        """(I,) interaction counts."""
        return np.bincount(self.item, minlength=self.n_items)


@runtime_checkable
class Recommender(Protocol):
    """What the harness asks of a model. Scores are only compared within one user's row."""

    name: str

    def fit(self, train: Interactions) -> None: ...

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """(len(users),) user indices -> (len(users), n_items) float32 scores, higher is better."""
        ...


# -- for the adapters of peer libraries (eval/peers.py, eval/peers_recbole.py) ----------------
def library_version(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def as_user_index(users: np.ndarray, n_users: int) -> np.ndarray:
    """User indices as a flat int64 array, each checked to lie in ``[0, n_users)``."""
    u = np.asarray(users, dtype=np.int64).ravel()
    if u.size and (u.min() < 0 or u.max() >= n_users):
        raise IndexError(f"user indices must lie in [0, {n_users})")
    return u
