"""Peer libraries behind the ``Recommender`` protocol, for comparisons on the harness's own split.

Optional extra ``.[peers]``: ``implicit`` (ALS, BPR matrix factorisation) and ``recbole`` (SASRec).
Each peer learns only from the ``Interactions`` the harness passes to ``fit`` and answers
``score_users`` with a dense ``(len(users), n_items)`` float32 block whose column ``j`` is our
item index ``j``. Libraries are imported inside ``fit`` so this module imports without them;
``available_peers()`` lists the peers whose library imports here.

Every peer carries ``settings: dict`` (library versions, hyper-parameters, data handling, timings)
for the harness to write into its report. Setup notes and pins: ``benchmarks/peers_setup.md``.

The implicit adapters are here; RecBole's SASRec is ``eval/peers_recbole.py`` (RecBole 1.2.1
predates NumPy 2 and needs a few runtime shims, all scoped to our own calls).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from reelrank.eval.data import Interactions, Recommender, as_user_index, library_version
from reelrank.eval.peers_recbole import RecBoleSASRec, _import_recbole_models, write_atomic_files

log = logging.getLogger(__name__)

__all__ = [
    "ImplicitALS",
    "ImplicitBPR",
    "RecBoleSASRec",
    "available_peers",
    "user_item_matrix",
    "write_atomic_files",
]


# --- implicit: ALS and BPR ------------------------------------------------------------------


def user_item_matrix(train: Interactions, weighting: str = "binary") -> Any:
    """(n_users, n_items) scipy CSR float32 matrix of the training interactions.

    ``weighting="binary"``: 1.0 wherever the user interacted with the item at least once;
    ``"count"``: the number of interactions (repeats add up). Users and items without any
    interaction keep an empty row/column, so indices stay ours.
    """
    import scipy.sparse as sp

    if weighting not in ("binary", "count"):
        raise ValueError(f"weighting must be 'binary' or 'count', got {weighting!r}")
    data = np.ones(len(train), dtype=np.float32)
    m = sp.csr_matrix(
        (data, (np.asarray(train.user, dtype=np.int64), np.asarray(train.item, dtype=np.int64))),
        shape=(train.n_users, train.n_items),
        dtype=np.float32,
    )
    m.sum_duplicates()
    if weighting == "binary":
        m.data[:] = 1.0
    return m


@contextlib.contextmanager
def _blas_threads(n: int) -> Iterator[None]:
    """Limit BLAS (OpenBLAS/MKL) thread pools while implicit trains.

    implicit parallelises over users/items with its own threads and warns when BLAS runs a
    thread pool of its own on top (nested pools oversubscribe the cores and can be ~10x slower).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


class _ImplicitMF:
    """Shared fit/score for implicit's matrix factorisation models (CPU implementations)."""

    name = "implicit"

    def __init__(self, weighting: str, num_threads: int, seed: int) -> None:
        if weighting not in ("binary", "count"):
            raise ValueError(f"weighting must be 'binary' or 'count', got {weighting!r}")
        self.weighting = weighting
        self.num_threads = num_threads
        self.seed = seed
        self.settings: dict[str, Any] = {}
        self._user_factors: np.ndarray | None = None
        self._item_factors: np.ndarray | None = None

    def _make_model(self) -> Any:
        raise NotImplementedError

    def fit(self, train: Interactions) -> None:
        # implicit's extension modules may load a BLAS of their own: import them before the
        # thread limit is applied, or that library escapes it.
        import implicit.cpu.als  # noqa: F401
        import implicit.cpu.bpr  # noqa: F401

        matrix = user_item_matrix(train, self.weighting)
        start = time.perf_counter()
        with _blas_threads(1):
            model = self._make_model()
            model.fit(matrix, show_progress=False)
        self.settings["fit_seconds"] = round(time.perf_counter() - start, 3)
        users = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        items = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        if users.shape[0] != train.n_users or items.shape[0] != train.n_items:
            raise RuntimeError("implicit returned factors that do not match the matrix shape")
        self._user_factors, self._item_factors = users, items
        self.settings["n_train_nonzeros"] = int(matrix.nnz)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        if self._user_factors is None or self._item_factors is None:
            raise RuntimeError(f"{self.name}: call fit() before score_users()")
        u = as_user_index(users, self._user_factors.shape[0])
        return np.asarray(self._user_factors[u] @ self._item_factors.T, dtype=np.float32)


class ImplicitALS(_ImplicitMF):
    """implicit's ``AlternatingLeastSquares`` (Hu, Koren & Volinsky 2008; conjugate gradient).

    The input is the user-item matrix of ``user_item_matrix(train, weighting)``; implicit
    multiplies it by ``alpha`` to weight observed entries against the unobserved ones. Scores are
    ``user_factors @ item_factors.T``; a user without training interactions gets all zeros.
    """

    name = "implicit_als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        iterations: int = 15,
        alpha: float = 40.0,
        weighting: str = "binary",
        num_threads: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__(weighting, num_threads, seed)
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.settings = {
            "library": "implicit",
            "implicit_version": library_version("implicit"),
            "model": "AlternatingLeastSquares (cpu, conjugate gradient)",
            "factors": factors,
            "regularization": regularization,
            "iterations": iterations,
            "alpha": alpha,
            "matrix": weighting,
            "num_threads": num_threads,
            "blas_threads": 1,
            "seed": seed,
        }

    def _make_model(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            num_threads=self.num_threads,
            random_state=self.seed,
        )


class ImplicitBPR(_ImplicitMF):
    """implicit's ``BayesianPersonalizedRanking`` (Rendle et al. 2009), trained by parallel SGD.

    implicit keeps an item bias as the last item factor (users carry a constant 1 there), so
    ``user_factors @ item_factors.T`` includes it. Multi-threaded SGD is not bit-reproducible
    across runs even with a fixed seed; use ``num_threads=1`` for that.
    """

    name = "implicit_bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 600,
        weighting: str = "binary",
        num_threads: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__(weighting, num_threads, seed)
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.settings = {
            "library": "implicit",
            "implicit_version": library_version("implicit"),
            "model": "BayesianPersonalizedRanking (cpu)",
            "factors": factors,
            "learning_rate": learning_rate,
            "regularization": regularization,
            "iterations": iterations,
            "matrix": weighting,
            "verify_negative_samples": True,
            "num_threads": num_threads,
            "blas_threads": 1,
            "seed": seed,
        }

    def _make_model(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            num_threads=self.num_threads,
            verify_negative_samples=True,
            random_state=self.seed,
        )


# --- registry -------------------------------------------------------------------------------

_PEERS: dict[str, tuple[str, Callable[[], Recommender]]] = {
    "implicit_als": ("implicit", ImplicitALS),
    "implicit_bpr": ("implicit", ImplicitBPR),
    # Bounded like ReelRank's own training target (15 minutes on the 2-core machine).
    "recbole_sasrec": ("recbole", functools.partial(RecBoleSASRec, time_budget_s=900.0)),
}


def _import_error(module: str) -> str | None:
    """Why ``module`` (with the pieces our peer uses) cannot be imported here, or None."""
    try:
        if module == "implicit":
            import implicit.cpu.als  # noqa: F401
            import implicit.cpu.bpr  # noqa: F401
            import threadpoolctl  # noqa: F401
        elif module == "recbole":
            _import_recbole_models()
        else:
            raise ImportError(f"unknown peer library {module}")
    except Exception as exc:  # noqa: BLE001 - an optional extra may fail in any way on import
        return f"{type(exc).__name__}: {exc}"
    return None


def available_peers() -> dict[str, Callable[[], Recommender]]:
    """Factories of the peers whose library imports here, by name.

    A factory is the peer's class: ``factory()`` gives the default settings, keyword arguments
    override them. Missing peers are logged at INFO with the reason (install ``.[peers]``).
    """
    found: dict[str, Callable[[], Recommender]] = {}
    errors: dict[str, str | None] = {}
    for key, (module, factory) in _PEERS.items():
        if module not in errors:
            errors[module] = _import_error(module)
        if errors[module] is None:
            found[key] = factory
        else:
            log.info("peer %s unavailable (%s does not import: %s)", key, module, errors[module])
    return found
