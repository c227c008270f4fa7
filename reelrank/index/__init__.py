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

import os
from typing import Collection, Protocol, Sequence

import numpy as np

from reelrank.index.ann import AnnIndex
from reelrank.index.base import Hit
from reelrank.index.exact import ExactIndex

__all__ = ["AnnIndex", "ExactIndex", "Hit", "VectorIndex", "load_index", "make_index"]


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
