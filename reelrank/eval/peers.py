"""Peer libraries behind the ``Recommender`` protocol, for comparisons on the harness's own split.

Optional extra ``.[peers]``: ``implicit`` (ALS, BPR matrix factorisation) and ``recbole`` (SASRec).
Each peer learns only from the ``Interactions`` the harness passes to ``fit`` and answers
``score_users`` with a dense ``(len(users), n_items)`` float32 block whose column ``j`` is our
item index ``j``. Libraries are imported inside ``fit`` so this module imports without them;
``available_peers()`` lists the peers whose library imports here.

Every peer carries ``settings: dict`` (library versions, hyper-parameters, data handling, timings)
for the harness to write into its report. Setup notes and pins: ``benchmarks/peers_setup.md``.

RecBole 1.2.1 predates NumPy 2 and needs a few runtime shims, all scoped to our own calls (no file
in site-packages is touched); see ``_recbole_runtime`` and ``_recbole_config``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from reelrank.eval.data import Interactions, Recommender

log = logging.getLogger(__name__)

__all__ = [
    "ImplicitALS",
    "ImplicitBPR",
    "RecBoleSASRec",
    "available_peers",
    "user_item_matrix",
    "write_atomic_files",
]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _as_user_index(users: np.ndarray, n_users: int) -> np.ndarray:
    u = np.asarray(users, dtype=np.int64).ravel()
    if u.size and (u.min() < 0 or u.max() >= n_users):
        raise IndexError(f"user indices must lie in [0, {n_users})")
    return u


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
        u = _as_user_index(users, self._user_factors.shape[0])
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
            "implicit_version": _version("implicit"),
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
            "implicit_version": _version("implicit"),
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


# --- RecBole: SASRec ------------------------------------------------------------------------

# NumPy 1.x aliases that RecBole 1.2.1 reads at run time: ``np.float`` in
# ``recbole.data.interaction._convert_to_tensor`` (every Interaction built from lists/arrays) and
# in ``recbole.evaluator.metrics``. RecBole installs them itself in
# ``Config.compatibility_settings``, but that method also reads ``np.float_``, ``np.complex_`` and
# ``np.unicode_``, which NumPy 2.0 removed, so it raises AttributeError. We skip that method and
# set the same aliases (to their NumPy 2 equivalents) only while RecBole code runs, then remove
# them again. ``np.bool`` and ``np.long`` are left alone: they exist in NumPy 2 already.
_NUMPY_ALIASES: dict[str, Any] = {
    "float": np.float64,
    "int": np.int_,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "unicode": np.str_,
}


@contextlib.contextmanager
def _recbole_runtime(num_threads: int | None = None) -> Iterator[None]:
    """Run RecBole code: NumPy 1.x aliases present, optional torch thread count; all restored.

    Also silences the deprecation warnings RecBole 1.2.1 triggers with current pandas, torch and
    NumPy (chained ``fillna(inplace=True)``, ``torch.cuda.amp.GradScaler``, a read-only array
    handed to ``torch.LongTensor``, ``np.argsort`` of a tensor); none of them changes what it
    computes on our data (atomic files without missing values, CPU, no mixed precision).
    """
    import torch

    added = [name for name in _NUMPY_ALIASES if name not in np.__dict__]
    for name in added:
        setattr(np, name, _NUMPY_ALIASES[name])
    threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
            warnings.filterwarnings(
                "ignore", message="The given NumPy array is not writable", category=UserWarning
            )
            # Interaction.sort calls np.argsort on a torch tensor; NumPy sorts a converted copy
            # (stable, as asked) and wraps the result back through a deprecated path.
            warnings.filterwarnings(
                "ignore", message="__array_wrap__ must accept context", category=DeprecationWarning
            )
            yield
    finally:
        torch.set_num_threads(threads)
        for name in added:
            np.__dict__.pop(name, None)


@contextlib.contextmanager
def _global_rng_preserved() -> Iterator[None]:
    """RecBole's ``init_seed`` reseeds ``random``, ``numpy.random`` and torch: put them back."""
    import random

    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _recbole_config(model_class: Any, dataset: str, config_dict: dict[str, Any]) -> Any:
    """``recbole.config.Config`` built from ``config_dict`` alone, without process side effects.

    * RecBole merges ``--key=value`` words of ``sys.argv`` over ``config_dict`` (a harness run as
      ``... --dataset=x`` would silently reconfigure it): ``sys.argv`` is emptied meanwhile.
    * ``Config._init_device`` writes ``CUDA_VISIBLE_DEVICES`` into ``os.environ``: restored after.
    * ``Config.compatibility_settings`` fails on NumPy 2 (see ``_NUMPY_ALIASES``): skipped.
    """
    from recbole.config import Config

    class _Config(Config):  # type: ignore[misc, valid-type]
        def compatibility_settings(self) -> None:
            """Replaced by ``_recbole_runtime`` (NumPy 2 has no ``np.float_``)."""

    argv = sys.argv
    cuda_env = os.environ.get("CUDA_VISIBLE_DEVICES")
    sys.argv = argv[:1]
    try:
        return _Config(model=model_class, dataset=dataset, config_dict=config_dict)
    finally:
        sys.argv = argv
        if cuda_env is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_env


class _NullSummaryWriter:
    """Stands in for the TensorBoard writer RecBole's Trainer opens under ``./log_tensorboard``."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class _StopTraining(Exception):
    """Raised from the per-epoch callback to end RecBole's training loop (time budget)."""


def write_atomic_files(train: Interactions, directory: Path, dataset: str) -> None:
    """Write ``train`` as RecBole atomic files ``<dataset>.inter`` and ``<dataset>.item``.

    Tokens are our indices as decimal strings. The ``timestamp`` column is each interaction's
    position in its user's ``train.sequences()`` (0, 1, 2, ...), so RecBole's time ordering
    reproduces exactly our sequence order, ties included. The ``.item`` file lists the whole
    catalog (``n_items`` tokens) so that items without a training interaction still get a RecBole
    id and a (never positively trained) embedding, and a score in every column.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{dataset}.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, seq in enumerate(train.sequences()):
            f.writelines(f"{u}\t{int(i)}\t{pos}\n" for pos, i in enumerate(seq))
    with open(directory / f"{dataset}.item", "w", encoding="utf-8") as f:
        f.write("item_id:token\n")
        f.writelines(f"{j}\n" for j in range(train.n_items))


class RecBoleSASRec:
    """RecBole's SASRec (Kang & McAuley 2018) with full-softmax cross-entropy, on our split.

    ``fit(train)`` writes ``train`` as atomic files to a temporary directory, lets RecBole load
    it (no filtering, no de-duplication: the numbers of rows and items are checked afterwards) and
    trains RecBole's own SASRec with RecBole's ``Trainer`` (``loss_type='CE'``,
    ``train_neg_sample_args=None``, CPU unless ``device`` says otherwise).

    Training examples are RecBole's usual prefix -> next item pairs of each training sequence
    (prefixes cut to the last ``max_seq_length`` items). With ``validation=True`` (default)
    RecBole's leave-one-out ``{'LS': 'valid_only'}`` split holds out the last pair of each user
    with at least 3 training items: the model does not train on that pair, and it serves only to
    pick the epoch (best ``valid_metric``, early stopping after ``stopping_step`` epochs without
    improvement); the weights of the best epoch are kept. The harness's test item is never
    passed in at all. With ``validation=False`` every pair is trained on for exactly ``epochs``
    epochs and the last weights are kept.

    ``time_budget_s`` (needs ``validation=True``) bounds training plus per-epoch validation,
    not data loading: after each epoch, training stops if one more epoch of the average length so
    far would overrun the budget. At least one epoch always runs, so a budget shorter than one
    epoch gives one epoch. RecBole's validation ranks all items without removing the user's
    history (RecBole's rule for sequential models); it only steers epoch selection.

    ``score_users`` feeds each user's whole training sequence (its last ``max_seq_length``
    items) to ``SASRec.full_sort_predict`` and maps RecBole's internal item ids back to our
    column order. A user without training interactions gets a row of zeros.
    """

    name = "recbole_sasrec"

    def __init__(
        self,
        max_seq_length: int = 50,
        hidden_size: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        inner_size: int = 256,
        hidden_dropout_prob: float = 0.5,
        attn_dropout_prob: float = 0.5,
        learning_rate: float = 1e-3,
        train_batch_size: int = 256,
        epochs: int = 200,
        validation: bool = True,
        stopping_step: int = 10,
        valid_metric: str = "NDCG@10",
        time_budget_s: float | None = None,
        eval_batch_size: int = 1024,
        num_threads: int | None = None,
        device: str = "cpu",
        seed: int = 2020,
    ) -> None:
        if time_budget_s is not None and not validation:
            raise ValueError("time_budget_s is checked after validated epochs: needs validation")
        self.config_dict: dict[str, Any] = {
            "MAX_ITEM_LIST_LENGTH": max_seq_length,
            "hidden_size": hidden_size,
            "n_layers": n_layers,
            "n_heads": n_heads,
            "inner_size": inner_size,
            "hidden_dropout_prob": hidden_dropout_prob,
            "attn_dropout_prob": attn_dropout_prob,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-12,
            "initializer_range": 0.02,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "learner": "adam",
            "learning_rate": learning_rate,
            "weight_decay": 0.0,
            "train_batch_size": train_batch_size,
            "epochs": epochs,
            "eval_step": 1 if validation else 0,
            "stopping_step": stopping_step,
            "metrics": ["Hit", "NDCG"],
            "topk": [10],
            "valid_metric": valid_metric,
            "valid_metric_bigger": True,
            "eval_batch_size": eval_batch_size,
            "seed": seed,
            "reproducibility": True,
        }
        self.max_seq_length = max_seq_length
        self.validation = validation
        self.time_budget_s = time_budget_s
        self.num_threads = num_threads
        self.device = device
        self.settings: dict[str, Any] = {
            "library": "recbole",
            "recbole_version": _version("recbole"),
            "torch_version": _version("torch"),
            "model": "SASRec",
            "device": device,
            "num_threads": num_threads,
            "validation": (
                "last training item of each user (>= 3 training items) held out, for epoch "
                "selection / early stopping only" if validation else "none: trains on all pairs"
            ),
            "time_budget_s": time_budget_s,
            **{k: v for k, v in self.config_dict.items() if k != "eval_step"},
        }
        self._model: Any = None
        self._sequences: list[np.ndarray] | None = None
        self._rb_of_ours: np.ndarray | None = None  # (n_items,) RecBole item id of our item j
        self._n_items = 0

    # -- fit -------------------------------------------------------------------------------

    def _full_config(self, data_path: str) -> dict[str, Any]:
        split = {"LS": "valid_only"} if self.validation else {"RS": [1.0, 0.0, 0.0]}
        use_gpu = self.device != "cpu"
        return {
            **self.config_dict,
            "data_path": data_path,
            "checkpoint_dir": os.path.join(data_path, "saved"),
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "field_separator": "\t",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]},
            "rm_dup_inter": None,
            "val_interval": None,
            "filter_inter_by_user_or_item": True,
            "user_inter_num_interval": "[0,inf)",
            "item_inter_num_interval": "[0,inf)",
            "eval_args": {"split": split, "order": "TO", "group_by": "user", "mode": "full"},
            "repeatable": True,  # RecBole requires it for sequential models
            "use_gpu": use_gpu,
            "gpu_id": "0" if use_gpu else "",
            "worker": 0,
            "shuffle": True,
            "show_progress": False,
            "save_dataset": False,
            "save_dataloaders": False,
            "log_wandb": False,
            "state": "WARNING",
        }

    def fit(self, train: Interactions) -> None:
        import torch
        from recbole.data import create_dataset, data_preparation
        _import_recbole_models()
        from recbole.model.sequential_recommender import SASRec
        from recbole.utils import init_seed

        rb_trainer = importlib.import_module("recbole.trainer.trainer")

        sequences = [np.asarray(s, dtype=np.int64) for s in train.sequences()]
        expected_pairs = sum(max(len(s) - 1, 0) for s in sequences)
        if expected_pairs == 0:
            raise ValueError("RecBoleSASRec needs at least one user with two training items")
        start = time.perf_counter()
        with (
            tempfile.TemporaryDirectory(prefix="reelrank-recbole-") as tmp,
            _recbole_runtime(self.num_threads),
            _global_rng_preserved(),
        ):
            dataset_name = "reelrank"
            write_atomic_files(train, Path(tmp) / dataset_name, dataset_name)
            config = _recbole_config(SASRec, dataset_name, self._full_config(tmp))
            seed = self.config_dict["seed"]
            init_seed(seed, True)
            dataset = create_dataset(config)
            train_data, valid_data, _ = data_preparation(config, dataset)

            # RecBole must have kept every item and every training pair.
            if dataset.item_num != train.n_items + 1:
                raise RuntimeError(
                    f"RecBole has {dataset.item_num - 1} items, expected {train.n_items}"
                )
            n_train_pairs = len(train_data.dataset)
            n_valid_pairs = len(valid_data.dataset) if self.validation else 0
            if n_train_pairs + n_valid_pairs != expected_pairs:
                raise RuntimeError(
                    f"RecBole made {n_train_pairs}+{n_valid_pairs} training/validation pairs,"
                    f" expected {expected_pairs}: it filtered or re-split our data"
                )
            tokens = dataset.field2id_token["item_id"]  # RecBole id -> token (str of our index)
            ours = np.asarray([int(t) for t in tokens[1:]], dtype=np.int64)
            if not np.array_equal(np.sort(ours), np.arange(train.n_items)):
                raise RuntimeError("RecBole's item vocabulary is not our item catalog")
            rb_of_ours = np.zeros(train.n_items, dtype=np.int64)
            rb_of_ours[ours] = np.arange(1, len(tokens))

            init_seed(seed, True)
            model = SASRec(config, train_data.dataset).to(config["device"])
            tensorboard = rb_trainer.get_tensorboard
            rb_trainer.get_tensorboard = lambda logger: _NullSummaryWriter()
            try:
                trainer = rb_trainer.Trainer(config, model)
            finally:
                rb_trainer.get_tensorboard = tensorboard

            best: dict[str, Any] = {"state": None, "epoch": -1, "score": None}
            epochs_run = [0]
            curve: list[float] = []  # valid_metric after each epoch
            t_fit = time.perf_counter()

            def on_epoch(epoch_idx: int, valid_score: float) -> None:
                epochs_run[0] = epoch_idx + 1
                curve.append(round(float(valid_score), 5))
                if trainer.cur_step == 0:  # RecBole's early_stopping just recorded a new best
                    best["state"] = {
                        k: v.detach().clone() for k, v in model.state_dict().items()
                    }
                    best["epoch"], best["score"] = epoch_idx, float(valid_score)
                elapsed = time.perf_counter() - t_fit
                per_epoch = elapsed / (epoch_idx + 1)
                if self.time_budget_s is not None and elapsed + per_epoch > self.time_budget_s:
                    raise _StopTraining

            stopped_by = "epochs"
            try:
                trainer.fit(
                    train_data,
                    valid_data if self.validation else None,
                    verbose=False,
                    saved=False,
                    show_progress=False,
                    callback_fn=on_epoch,
                )
                if self.validation and epochs_run[0] < self.config_dict["epochs"]:
                    stopped_by = "early_stopping"
            except _StopTraining:
                stopped_by = "time_budget"
            train_seconds = time.perf_counter() - t_fit
            if not self.validation:
                epochs_run[0] = self.config_dict["epochs"]
            if best["state"] is not None:
                model.load_state_dict(best["state"])
            model.eval()

        self._model = model
        self._sequences = sequences
        self._rb_of_ours = rb_of_ours
        self._n_items = train.n_items
        self.settings.update(
            {
                "fit_seconds": round(time.perf_counter() - start, 1),
                "epochs_run": epochs_run[0],
                "best_epoch": best["epoch"] + 1 if best["state"] is not None else epochs_run[0],
                "best_valid_score": best["score"],
                "valid_curve": curve,
                "train_seconds": round(train_seconds, 1),
                "seconds_per_epoch": round(train_seconds / max(epochs_run[0], 1), 1),
                "stopped_by": stopped_by,
                "n_train_pairs": n_train_pairs,
                "n_valid_pairs": n_valid_pairs,
                "torch_threads": self.num_threads or torch.get_num_threads(),
            }
        )

    # -- score -----------------------------------------------------------------------------

    def score_users(self, users: np.ndarray, batch_size: int = 512) -> np.ndarray:
        if self._model is None or self._sequences is None or self._rb_of_ours is None:
            raise RuntimeError(f"{self.name}: call fit() before score_users()")
        import torch
        from recbole.data.interaction import Interaction

        u = _as_user_index(users, len(self._sequences))
        out = np.zeros((u.shape[0], self._n_items), dtype=np.float32)
        length = self.max_seq_length
        model = self._model
        device = next(model.parameters()).device
        with _recbole_runtime(self.num_threads), torch.no_grad():
            for lo in range(0, u.shape[0], batch_size):
                rows = np.arange(lo, min(lo + batch_size, u.shape[0]))
                hist = [self._sequences[user][-length:] for user in u[rows]]
                lens = np.array([len(h) for h in hist], dtype=np.int64)
                keep = lens > 0
                if not keep.any():
                    continue
                seq = np.zeros((int(keep.sum()), length), dtype=np.int64)  # left-aligned, 0 = pad
                for r, h in enumerate(h for h, k in zip(hist, keep) if k):
                    seq[r, : len(h)] = self._rb_of_ours[h]
                batch = Interaction(
                    {
                        model.ITEM_SEQ: torch.from_numpy(seq),
                        model.ITEM_SEQ_LEN: torch.from_numpy(lens[keep]),
                    }
                ).to(device)
                scores = model.full_sort_predict(batch).detach().cpu().numpy()
                out[rows[keep]] = scores[:, self._rb_of_ours]
        return out


# --- registry -------------------------------------------------------------------------------

_PEERS: dict[str, tuple[str, Callable[[], Recommender]]] = {
    "implicit_als": ("implicit", ImplicitALS),
    "implicit_bpr": ("implicit", ImplicitBPR),
    # Bounded like ReelRank's own training target (15 minutes on the 2-core machine).
    "recbole_sasrec": ("recbole", functools.partial(RecBoleSASRec, time_budget_s=900.0)),
}


def _import_recbole_models() -> None:
    """Import RecBole's model zoo without its side effect: one of its modules (SINE) turns on
    torch's anomaly detection for the whole process when imported, which slows every other
    model's training and makes harmless masked NaNs fatal."""
    import torch

    anomaly = torch.is_anomaly_enabled()
    try:
        import recbole.data  # noqa: F401
        import recbole.model.sequential_recommender  # noqa: F401
        import recbole.trainer  # noqa: F401
    finally:
        torch.autograd.set_detect_anomaly(anomaly)


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
