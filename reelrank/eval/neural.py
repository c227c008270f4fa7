"""ReelRank's neural models under the evaluation harness.

``NeuralRecommender`` is the engine as served after a training run: it builds an ``Engine`` on
a scratch store from the training events, trains the two-tower retrieval model and the
multi-task ranker with ``train_from_store`` (the code ``reelrank train`` runs, nothing held
out), and answers:

- impressions (``score_pairs`` / ``predict_tasks``): ``engine.rank``, i.e. the neural ranker
  with the live features of the end of the training period;
- retrieval and next item (``score_users``): the two-tower model, user vectors over each
  user's training history against every item's vector (full ranking, no sampling).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from reelrank.eval.baselines import EngineRecommender, build_engine, scratch_dir
from reelrank.eval.data import Interactions
from reelrank.models.retrieval import encode_histories
from reelrank.registry import ModelRegistry
from reelrank.train.job import TrainConfig, train_from_store
from reelrank.types import Event, Item

log = logging.getLogger(__name__)


class NeuralRecommender(EngineRecommender):
    name = "reelrank"

    def __init__(self, config: TrainConfig | None = None, progress: bool = False):
        super().__init__(progress=progress)
        self.config = config or TrainConfig(holdout=0.0)
        self.settings = {"train_config": _describe(self.config)}

    def fit_events(self, train: Interactions, items: list[Item], events: list[Event]) -> None:
        self.close()
        self.user_ids, self.item_ids = train.user_ids, train.item_ids
        self.item_of = {x: k for k, x in enumerate(train.item_ids)}
        self._tmp = scratch_dir()
        root = Path(self._tmp.name)
        engine = build_engine(items, events, root / "store", self.progress)
        registry = ModelRegistry(root / "models")
        config = self.config
        impressions = sum(1 for e in events if e.type == "impression")
        if impressions and len(train) >= 0.95 * impressions:
            # Next-item data: every shown item was taken, so there is nothing for a ranker to
            # learn to order; only retrieval is trained (and evaluated).
            config = replace(config, ranker=replace(config.ranker, epochs=0))
            self.settings["ranker"] = "not trained: every impression in this data is a positive"
        result = train_from_store(engine.store, registry, config, progress=self.progress)
        engine.registry = registry
        engine.models.registry = registry
        engine.models.refresh()
        self.engine = engine
        self.settings.update(model_version=result.version, train_seconds=round(result.seconds, 1),
                             train_metrics=result.metrics, impressions="engine.rank (ranker)",
                             retrieval="two-tower, full catalog")

    def score_users(self, users: np.ndarray) -> np.ndarray:
        m = self.engine.models.current
        retrieval = m.bundle.retrieval
        histories = []
        for u in users:
            state = self.engine.live.user(str(self.user_ids[u]))
            histories.append(list(state.tokens) if state is not None else [])
        h = encode_histories(histories, m.item_index, retrieval.users.max_len)
        with torch.no_grad():
            vectors = retrieval.user_vectors(h, m.item_vectors)  # (B, D)
            scores = (vectors @ m.item_vectors.T).numpy()  # (B, I_engine)
        out = np.full((len(users), len(self.item_ids)), -np.inf, dtype=np.float32)
        cols = np.array([self.item_of.get(i, -1) for i in m.item_ids])
        ok = cols >= 0
        out[:, cols[ok]] = scores[:, ok]
        return out


def _describe(cfg: TrainConfig) -> dict:
    from dataclasses import asdict

    return asdict(cfg)
