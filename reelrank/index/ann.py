"""``AnnIndex``: faiss IVF with 4-bit product-quantized codes, re-ranked exactly."""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Collection, Sequence

import numpy as np

from reelrank.index.base import (
    _MIN_POOL, Hit, _as_matrix, _Base, _load_npz, _queries, _save_npz, _Store,
)

log = logging.getLogger(__name__)


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
