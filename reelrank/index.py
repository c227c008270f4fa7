"""Nearest-neighbour search over item vectors (maximum inner product) behind one small Protocol.

The retrieval model scores a viewer against a video by ``user_vector · item_vector``; this module
finds the best-scoring videos for a query vector. Two backends share one contract (``VectorIndex``):

- ``ExactIndex``: brute force, float32 matmul + argpartition. The reference the ANN is tested
  against, and the right choice for small catalogs.
- ``AnnIndex``: faiss IVF with 4-bit product-quantized codes scanned by faiss' "fast scan"
  kernels (IndexIVFPQFastScan, inner-product metric), then an exact re-rank of the best
  ``rerank * max(k, 32)`` candidates against the float32 vectors this index keeps.

The ANN was chosen by benchmarks/bench_index.py (benchmarks/results/index.md). On structured
item vectors (topic clusters, low rank, skewed norms) no HNSW graph reached recall@100 0.95
(faiss or hnswlib, inner product or the MIPS->L2 reduction: 0.84-0.88 at efSearch=800). IVF
did; at 1M items this one reached 0.96 at p50 1.4 ms / p99 1.7 ms on one thread, where IVF-Flat
needed about 1.5-2x the CPU for the same recall (it scans full floats, not 4-bit codes).
A serving process should also run BLAS on one thread per request (OPENBLAS_NUM_THREADS=1): on a
busy machine numpy's thread pool made a 20k-row exact scan 10-30x slower.

Both return exact inner-product scores (the ANN re-ranks), best first, as ``(item_id, score)``.
``exclude`` (e.g. videos the viewer has seen) is honoured while still returning ``k`` items when
the index holds that many: the ANN over-fetches and retries wider, and finally scans exactly.

Ids are strings; each index maps them to dense internal labels (row numbers) that are never
reused until the next ``build``. Removing an item frees nothing until then; re-adding an id that
is present replaces its vector. Reads run concurrently; ``build``/``add``/``remove`` take a writer
lock. Nothing here changes faiss' global OpenMP thread count: a serving process that runs one
request per thread should call ``faiss.omp_set_num_threads(1)`` itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Collection, Iterator, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

Hit = tuple[str, float]
_MIN_POOL = 32  # the ANN re-ranks at least rerank * 32 candidates, however small k is
_EXACT_SCORES = 8_000_000  # floats in one (queries, N) score matrix of an exact batch: 32 MB


class VectorIndex(Protocol):
    """Maximum-inner-product search over ``(item_id, vector)`` pairs."""

    @property
    def dim(self) -> int | None:
        """Vector dimension; None until the first build/add."""

    def build(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Replace the whole content with ``vectors`` (N, D) float32 for ``ids``."""

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert new items (or replace the vectors of present ones) between builds."""

    def remove(self, ids: Collection[str]) -> int:
        """Make items unsearchable; returns how many were present."""

    def search(self, query: np.ndarray, k: int,
               exclude: Collection[str] | None = None) -> list[list[Hit]]:
        """Top ``k`` by inner product for each query row ((D,) or (B, D)), best first."""

    def vector(self, item_id: str) -> np.ndarray:
        """The stored vector of an item (KeyError if absent)."""

    def __len__(self) -> int: ...

    def __contains__(self, item_id: object) -> bool: ...

    def save(self, path: str | os.PathLike) -> None: ...


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


def _faiss():
    try:
        import faiss
    except ImportError as e:  # a core dependency: say which one instead of failing later
        raise ImportError("AnnIndex needs faiss-cpu (pinned in pyproject.toml)") from e
    return faiss


class AnnIndex(_Base):
    """Approximate MIPS: faiss IVF + 4-bit PQ fast scan for candidates, exact re-rank.

    Parameters (defaults chosen by benchmarks/bench_index.py on structured D=64 vectors, where
    they give recall@100 >= 0.95 against ``ExactIndex`` at 100k and 1M items):

    - ``nlist``: inverted lists (k-means centroids). None: ``4 * sqrt(N)`` at build time, at most
      ``N // 39`` so that each centroid has enough training points.
    - ``nprobe``: lists scanned per query. None: ``ceil(probe_fraction * nlist)``, at least
      ``min_probe``. Recall is governed by the fraction of the catalog scanned, and small indexes
      need a larger fraction (their top 100 is a larger share of the catalog); latency grows
      linearly with the number of items scanned. Settable after build (``index.nprobe``).
    - ``rerank``: candidates fetched per wanted result (``rerank * max(k, 32)`` in all, so that
      a small k still gets a useful pool), then re-scored exactly against the float32 vectors:
      returned scores are exact inner products.
    - ``pq_m``: PQ sub-quantizers of 4 bits each. None: one per dimension (64 -> 32 bytes/item).
    - ``exact_below``: with fewer items than this the index scans exactly (k-means would have too
      little to learn from, and brute force is cheap at that size).
    - ``train_points``: k-means sample size per centroid; ``kmeans_iters`` and ``seed`` make a
      build reproducible.

    New items (``add``) are encoded with the centroids of the last build; after the catalog has
    grown or drifted a lot, ``build`` again. Removed items leave the faiss lists at once; their
    rows in the float32 store are reclaimed by the next ``build``.
    """

    kind = "ann"

    def __init__(self, *, nlist: int | None = None, nprobe: int | None = None,
                 probe_fraction: float = 0.08, min_probe: int = 64, rerank: int = 10,
                 pq_m: int | None = None,
                 exact_below: int = 10_000, train_points: int = 50, kmeans_iters: int = 10,
                 seed: int = 0, max_retries: int = 3) -> None:
        super().__init__()
        if not 0.0 < probe_fraction <= 1.0 or rerank < 1 or exact_below < 100:
            # Below ~100 items the PQ codebooks (16 centroids each) have nothing to learn from.
            raise ValueError("need 0 < probe_fraction <= 1, rerank >= 1, exact_below >= 100")
        self.params = dict(nlist=nlist, nprobe=nprobe, probe_fraction=probe_fraction,
                           min_probe=min_probe, rerank=rerank, pq_m=pq_m, exact_below=exact_below,
                           train_points=train_points, kmeans_iters=kmeans_iters, seed=seed,
                           max_retries=max_retries)
        self._faiss = _faiss()
        self._ivf = None  # faiss.IndexIVFPQFastScan once trained
        self.nlist = 0
        self.nprobe = 0

    def build(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        with self._lock.write():
            self._start(ids, vectors)
            self._train()

    def _train(self) -> None:
        """(Re)train centroids and PQ codebooks on the stored vectors and index them all."""
        faiss, store, p = self._faiss, self._store, self.params
        self._ivf = None
        n = len(store)
        if n < p["exact_below"]:
            return
        rows = np.flatnonzero(store.alive[: store.rows])
        data = store.vectors[rows]  # (n, D)
        nlist = p["nlist"] or round(4 * math.sqrt(n))
        nlist = int(max(1, min(nlist, n // 39)))
        rng = np.random.default_rng(p["seed"])
        sample = data[rng.choice(n, size=min(n, nlist * p["train_points"]), replace=False)]
        quantizer = faiss.IndexFlatIP(store.dim)
        kmeans = faiss.Clustering(store.dim, nlist)
        kmeans.niter, kmeans.seed = p["kmeans_iters"], p["seed"]
        kmeans.max_points_per_centroid = max(p["train_points"], 39)
        kmeans.train(sample, quantizer)
        ivf = faiss.IndexIVFPQFastScan(quantizer, store.dim, nlist, p["pq_m"] or store.dim, 4,
                                       faiss.METRIC_INNER_PRODUCT)
        ivf.train(sample)  # the quantizer is already trained: this learns the PQ codebooks only
        ivf.add_with_ids(data, rows)
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index owns and frees its quantizer from now on
        self._ivf, self.nlist = ivf, nlist
        self.nprobe = int(min(nlist, p["nprobe"] or max(p["min_probe"],
                                                        math.ceil(p["probe_fraction"] * nlist))))
        log.info("ann index trained: %d items, nlist=%d, nprobe=%d", n, nlist, self.nprobe)

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        with self._lock.write():
            if self._store is None:
                self._start(ids, vectors)
                self._train()
                return
            m = _as_matrix(vectors, self._store.dim, len(ids))
            old, new = self._store.put(list(ids), m)
            if self._ivf is None:
                if len(self._store) >= self.params["exact_below"]:
                    self._train()
                return
            if len(old):
                self._ivf.remove_ids(old)
            rows = np.concatenate([old, new])
            if len(rows):
                self._ivf.add_with_ids(self._store.vectors[rows], rows)

    def remove(self, ids: Collection[str]) -> int:
        with self._lock.write():
            if self._store is None:
                return 0
            rows = self._store.drop(ids)
            if self._ivf is not None and len(rows):
                self._ivf.remove_ids(rows)
            return len(rows)

    def search(self, query: np.ndarray, k: int,
               exclude: Collection[str] | None = None) -> list[list[Hit]]:
        with self._lock.read():
            q = _queries(query, self.dim)
            store = self._store
            if store is None or k <= 0:
                return [[] for _ in range(len(q))]
            banned = store.rows_of(exclude)
            if self._ivf is None:
                return [store.top(row, None, k, banned) for row in q]
            want = min(k, len(store) - len(banned))
            fetch = self.params["rerank"] * max(k, _MIN_POOL) + len(banned)
            nprobe = self.nprobe
            labels = self._candidates(q, fetch, nprobe)  # (B, fetch)
            out = []
            for row, cand in zip(q, labels):
                hits = store.top(row, cand[cand >= 0], k, banned)
                f, p = fetch, nprobe
                for _ in range(self.params["max_retries"]):
                    if len(hits) >= want:
                        break
                    # Too few survived the exclusions: look wider before giving up.
                    f, p = 2 * f, min(self.nlist, 2 * p)
                    cand = self._candidates(row[None, :], f, p)[0]
                    hits = store.top(row, cand[cand >= 0], k, banned)
                if len(hits) < want:
                    hits = store.top(row, None, k, banned)
                out.append(hits)
            return out

    def _candidates(self, q: np.ndarray, fetch: int, nprobe: int) -> np.ndarray:
        fetch = max(1, min(fetch, self._ivf.ntotal))
        params = self._faiss.SearchParametersIVF(nprobe=nprobe)
        _, labels = self._ivf.search(q, fetch, params=params)
        return labels

    def save(self, path: str | os.PathLike) -> None:
        with self._lock.read():
            store = self._store or _Store(0)
            blob = (self._faiss.serialize_index(self._ivf) if self._ivf is not None
                    else np.zeros(0, np.uint8))
            state = dict(self.params, _nlist=self.nlist, _nprobe=self.nprobe)
            _save_npz(path, {**self._header(), **store.to_arrays(), "faiss": blob,
                             "params": np.frombuffer(json.dumps(state).encode(), np.uint8)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AnnIndex":
        arrays = _load_npz(path)
        state = json.loads(arrays["params"].tobytes().decode())
        nlist, nprobe = state.pop("_nlist"), state.pop("_nprobe")
        index = cls(**state)
        if arrays["vectors"].shape[1]:
            index._store = _Store.from_arrays(arrays)
        if len(arrays["faiss"]):
            index._ivf = index._faiss.deserialize_index(arrays["faiss"])
            index.nlist, index.nprobe = nlist, nprobe
        return index


def make_index(kind: str = "ann", **params) -> VectorIndex:
    """``"ann"`` (AnnIndex, ``params`` are its keyword arguments) or ``"exact"`` (ExactIndex)."""
    if kind == "ann":
        return AnnIndex(**params)
    if kind == "exact":
        if params:
            raise ValueError(f"ExactIndex takes no parameters, got {sorted(params)}")
        return ExactIndex()
    raise ValueError(f"unknown index kind {kind!r}: expected 'ann' or 'exact'")


def load_index(path: str | os.PathLike) -> VectorIndex:
    """Load whichever kind of index ``save`` wrote at ``path``."""
    with np.load(path, allow_pickle=False) as z:
        kind = str(z["kind"])
    return {"ann": AnnIndex, "exact": ExactIndex}[kind].load(path)
