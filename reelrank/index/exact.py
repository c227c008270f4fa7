"""``ExactIndex``: brute force, the reference the ANN is tested against."""

from __future__ import annotations

import os
from typing import Collection, Sequence

import numpy as np

from reelrank.index.base import (
    _EXACT_SCORES, Hit, _as_matrix, _Base, _load_npz, _queries, _save_npz, _Store,
)


class ExactIndex(_Base):
    """Brute-force inner product over every stored vector; exact by construction."""

    kind = "exact"

    def build(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        with self._lock.write():
            self._start(ids, vectors)

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        with self._lock.write():
            if self._store is None:
                self._start(ids, vectors)
            else:
                self._store.put(list(ids), _as_matrix(vectors, self._store.dim, len(ids)))

    def remove(self, ids: Collection[str]) -> int:
        with self._lock.write():
            return 0 if self._store is None else len(self._store.drop(ids))

    def search(self, query: np.ndarray, k: int,
               exclude: Collection[str] | None = None) -> list[list[Hit]]:
        with self._lock.read():
            q = _queries(query, self.dim)
            if self._store is None or k <= 0:
                return [[] for _ in range(len(q))]
            banned = self._store.rows_of(exclude)
            out: list[list[Hit]] = []
            step = max(1, _EXACT_SCORES // max(1, self._store.rows))
            for start in range(0, len(q), step):
                chunk = q[start:start + step]
                scores = self._store.scores(chunk, banned)  # (chunk, rows)
                out += [self._store.top(row, None, k, banned, s) for row, s in zip(chunk, scores)]
            return out

    def save(self, path: str | os.PathLike) -> None:
        with self._lock.read():
            store = self._store or _Store(0)
            _save_npz(path, {**self._header(), **store.to_arrays()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExactIndex":
        arrays = _load_npz(path)
        index = cls()
        if arrays["vectors"].shape[1]:
            index._store = _Store.from_arrays(arrays)
        return index
