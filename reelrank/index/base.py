"""What both indexes share: ids to rows, the float32 vectors, a reader-writer lock, and saving
to one ``.npz`` file."""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Collection, Iterator, Sequence

import numpy as np

Hit = tuple[str, float]
_MIN_POOL = 32  # the ANN re-ranks at least rerank * 32 candidates, however small k is
_EXACT_SCORES = 8_000_000  # floats in one (queries, N) score matrix of an exact batch: 32 MB


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _as_matrix(vectors: np.ndarray, dim: int | None, n: int) -> np.ndarray:
    m = np.ascontiguousarray(vectors, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] != n:
        raise ValueError(f"expected vectors of shape ({n}, D), got {tuple(m.shape)}")
    if dim is not None and m.shape[1] != dim:
        raise ValueError(f"expected dimension {dim}, got {m.shape[1]}")
    if not np.isfinite(m).all():
        raise ValueError("vectors must be finite")
    return m


class _Store:
    """Ids <-> labels and the float32 vectors by label (grown by doubling), with an alive mask."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.rows = 0
        self.vectors = np.zeros((0, dim), np.float32)  # (capacity, D)
        self.alive = np.zeros(0, bool)  # (capacity,)
        self.ids: list[str | None] = []  # label -> id, None once removed
        self.labels: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def _reserve(self, rows: int) -> None:
        if rows <= len(self.vectors):
            return
        # Grow by a quarter: at a million rows, doubling would reserve another 256 MB at once.
        cap = max(rows, len(self.vectors) + len(self.vectors) // 4, 1024)
        vectors = np.zeros((cap, self.dim), np.float32)
        vectors[: self.rows] = self.vectors[: self.rows]
        alive = np.zeros(cap, bool)
        alive[: self.rows] = self.alive[: self.rows]
        self.vectors, self.alive = vectors, alive

    def put(self, ids: Sequence[str], m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store rows; returns (labels of replaced ids, labels of new ids), both in input order."""
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique within one call")
        old = [(i, self.labels[x]) for i, x in enumerate(ids) if x in self.labels]
        new = [i for i, x in enumerate(ids) if x not in self.labels]
        old_rows = np.array([r for _, r in old], np.int64)
        if old:
            self.vectors[old_rows] = m[[i for i, _ in old]]
        self._reserve(self.rows + len(new))
        new_rows = np.arange(self.rows, self.rows + len(new), dtype=np.int64)
        self.vectors[new_rows] = m[new]
        self.alive[new_rows] = True
        for i, row in zip(new, new_rows.tolist()):
            self.ids.append(ids[i])
            self.labels[ids[i]] = row
        self.rows += len(new)
        return old_rows, new_rows

    def drop(self, ids: Collection[str]) -> np.ndarray:
        rows = np.array([self.labels.pop(x) for x in set(ids) if x in self.labels], np.int64)
        self.alive[rows] = False
        for row in rows.tolist():
            self.ids[row] = None
        return rows

    def rows_of(self, ids: Collection[str] | None) -> np.ndarray:
        """Sorted unique labels of the given ids that are stored (unknown ids are ignored)."""
        if not ids:
            return np.zeros(0, np.int64)
        get = self.labels.get
        rows = np.array([get(x, -1) for x in ids], np.int64)
        return np.unique(rows[rows >= 0])

    def scores(self, q: np.ndarray, banned: np.ndarray) -> np.ndarray:
        """Exact scores of queries (B, D) against every stored row: (B, rows), -inf where
        a row is dead or banned."""
        scores = q @ self.vectors[: self.rows].T  # (B, rows)
        scores[:, ~self.alive[: self.rows]] = -np.inf
        scores[:, banned] = -np.inf
        return scores

    def top(self, q: np.ndarray, rows: np.ndarray | None, k: int, banned: np.ndarray,
            scores: np.ndarray | None = None) -> list[Hit]:
        """Exact top k of ``q`` (D,) over ``rows`` (every stored row if None), skipping
        dead/banned rows; ``scores`` may carry this query's precomputed row of ``self.scores``."""
        if rows is None:
            if scores is None:
                scores = self.scores(q[None, :], banned)[0]
            rows = np.arange(self.rows)
        else:
            # Candidate rows come without repeats (each label sits in one inverted list).
            keep = self.alive[rows]
            if len(banned):  # membership in the sorted ``banned`` by binary search
                at = np.minimum(np.searchsorted(banned, rows), len(banned) - 1)
                keep &= banned[at] != rows
            rows = rows[keep]
            scores = self.vectors[rows] @ q  # (len(rows),)
        kk = min(k, len(rows))
        if kk <= 0:
            return []
        best = np.argpartition(-scores, kk - 1)[:kk] if kk < len(rows) else np.arange(len(rows))
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(self.ids[r], float(s)) for r, s in zip(rows[best].tolist(), scores[best].tolist())
                if s != -np.inf]

    def to_arrays(self) -> dict[str, np.ndarray]:
        ids = json.dumps([x or "" for x in self.ids[: self.rows]]).encode()
        return {"vectors": self.vectors[: self.rows], "alive": self.alive[: self.rows],
                "ids": np.frombuffer(ids, np.uint8)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "_Store":
        store = cls(int(arrays["vectors"].shape[1]))
        store.rows = int(arrays["vectors"].shape[0])
        store.vectors = np.array(arrays["vectors"], np.float32)
        store.alive = np.array(arrays["alive"], bool)
        names = json.loads(arrays["ids"].tobytes().decode())
        store.ids = [x if a else None for x, a in zip(names, store.alive.tolist())]
        store.labels = {x: i for i, x in enumerate(store.ids) if x is not None}
        return store


def _queries(query: np.ndarray, dim: int | None) -> np.ndarray:
    q = np.asarray(query, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or (dim is not None and q.shape[1] != dim):
        raise ValueError(f"expected a query of shape (D,) or (B, D) with D={dim}, got {q.shape}")
    return np.ascontiguousarray(q)


def _save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temp file + rename), so a reader never sees half an index."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


class _Base:
    kind = ""

    def __init__(self) -> None:
        self._store: _Store | None = None
        self._lock = _ReadWriteLock()

    @property
    def dim(self) -> int | None:
        return self._store.dim if self._store is not None else None

    def __len__(self) -> int:
        return len(self._store) if self._store is not None else 0

    def __contains__(self, item_id: object) -> bool:
        return self._store is not None and item_id in self._store.labels

    def vector(self, item_id: str) -> np.ndarray:
        with self._lock.read():
            if self._store is None:
                raise KeyError(item_id)
            return self._store.vectors[self._store.labels[item_id]].copy()

    def _start(self, ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        m = _as_matrix(vectors, None, len(ids))
        self._store = _Store(m.shape[1])
        self._store.put(list(ids), m)
        return m

    def _header(self) -> dict[str, np.ndarray]:
        return {"kind": np.array(self.kind)}
