"""RecBole's SASRec behind the ``Recommender`` protocol (``eval/peers.py`` lists it with the other
peers). Optional extra ``.[peers]``; the library is imported inside ``fit``.

RecBole 1.2.1 predates NumPy 2 and needs a few runtime shims, all scoped to our own calls (no file
in site-packages is touched): ``eval/recbole_shims.py``.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reelrank.eval.data import Interactions, as_user_index, library_version
from reelrank.eval.recbole_shims import _global_rng_preserved, _recbole_config, _recbole_runtime

log = logging.getLogger("reelrank.eval.peers")

# --- RecBole: SASRec ------------------------------------------------------------------------

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
            "recbole_version": library_version("recbole"),
            "torch_version": library_version("torch"),
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

        u = as_user_index(users, len(self._sequences))
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
