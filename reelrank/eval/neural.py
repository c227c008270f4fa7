"""ReelRank's neural models under the evaluation harness, three ways.

``NeuralRecommender`` builds an ``Engine`` on a scratch store from the training events and
trains it with ``train_from_store`` and the default ``TrainConfig`` (what ``reelrank train``
and ``POST /v1/admin/train`` run: nothing special for evaluation). Next-item data are posted
as plays only, as an app that sends no impressions would. The trained engine is then read as:

- ``served`` (``reelrank_served``): the feed a viewer gets, ``GET /v1/feed`` as served (every
  candidate source, the filters, the scorer, the re-ranker's diversity rules and exploration
  slots), one page of each measured size per viewer at the end of the training period, built
  without recording it as served (so one page does not filter the next);
- ``retrieval`` (``reelrank``): the two-tower model alone, user vectors over each viewer's live
  history against every item's vector (full ranking, no sampling), plus the version's
  popularity prior as the served scorer adds it;
- ``ranker`` (``reelrank_ranker``): the ranker's value formula alone over retrieval's top
  ``ranker_candidates`` items (everything else not retrieved);
- ``served_plain`` (``reelrank_served_plain``): the served feed without the re-ranker's
  diversity rules and exploration slots (no exploration source either): beside ``served``, the
  price of those rules;
- ``served_learned`` (``reelrank_served_learned``): the served feed with the version's learned
  topics winning over every declared topic (``precedence: learned``) in the diversity rule, the
  wellbeing rules and the reasons: beside ``served`` (declared topics, as the server reads them
  by default), what reading learned topics costs or gains.

Impressions (``score_pairs`` / ``predict_tasks``) are ``engine.rank`` in every view, i.e. what
``POST /v1/rank`` answers. The views share one training run (``_shared``), so they
differ only in how the trained engine is read.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from reelrank.eval.baselines import EngineRecommender, build_engine, scratch_dir
from reelrank.eval.data import Interactions
from reelrank.models.retrieval import encode_histories
from reelrank.pipeline.neural import log_popularity, log_trending, page_weight
from reelrank.registry import ModelRegistry
from reelrank.train.batch import TrainConfig, train_from_store
from reelrank.types import Event, Item

log = logging.getLogger(__name__)

VIEWS = ("retrieval", "ranker", "served", "served_plain", "served_learned")


class _Trained:
    """One training run over one event list, shared by the views that read it. It stays until
    a run over other events replaces it or ``drop_shared`` is called (the harness does, after
    its last model)."""

    def __init__(self, key, engine, tmp, settings: dict):
        self.key, self.engine, self.tmp, self.settings = key, engine, tmp, settings

    def cleanup(self) -> None:
        self.engine.store.close()
        self.tmp.cleanup()


_shared: dict[str, _Trained] = {}


def drop_shared() -> None:
    """Close the shared training run's engine and remove its scratch store."""
    run = _shared.pop("run", None)
    if run is not None:
        run.cleanup()


class NeuralRecommender(EngineRecommender):
    name = "reelrank"

    def __init__(self, config: TrainConfig | None = None, progress: bool = False,
                 view: str = "retrieval", page_sizes: tuple[int, ...] | None = None,
                 ranker_candidates: int = 200):
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}")
        super().__init__(progress=progress)
        self.config = config or TrainConfig()
        self.view = view
        self.page_sizes = page_sizes
        self.ranker_candidates = ranker_candidates
        self.settings = {"view": view, "train_config": asdict(self.config)}
        self._run: _Trained | None = None
        # The harness measures a view with pages through ``feed_pages``, page by page size.
        self.serves_pages = view in ("served", "served_plain", "served_learned")
        # The page a whole-catalog ranking stands for: the popularity weight the retrieval
        # scores carry is the one serving gives a page of this size (the harness sets it).
        self.ranking_page = 10
        self._variant = None  # the served_plain or served_learned pipeline, built once

    def fit_events(self, train: Interactions, items: list[Item], events: list[Event]) -> None:
        self.close()
        self.user_ids, self.item_ids = train.user_ids, train.item_ids
        self.item_of = {x: k for k, x in enumerate(train.item_ids)}
        key = (id(events), len(events), repr(self.config))
        run = _shared.get("run")
        if run is None or run.key != key:
            drop_shared()
            run = _shared["run"] = self._train(items, events, key, len(train))
        self._run = run
        self.engine = run.engine
        self.settings.update(run.settings)

    def _train(self, items: list[Item], events: list[Event], key, positives: int) -> _Trained:
        tmp = scratch_dir()
        root = Path(tmp.name)
        settings: dict = {}
        impressions = sum(1 for e in events if e.type == "impression")
        if impressions and positives >= 0.95 * impressions:
            # Next-item data: every shown item was taken. Posted as plays only, as an app that
            # sends no impressions would; the training job then trains no ranker.
            events = [e for e in events if e.type != "impression"]
            settings["events"] = "plays only (the data's impressions were all taken)"
        engine = build_engine(items, events, root / "store", self.progress)
        registry = ModelRegistry(root / "models")
        result = train_from_store(engine.store, registry, self.config, progress=self.progress)
        engine.registry = registry
        engine.models.registry = registry
        engine.models.refresh()
        settings.update(model_version=result.version, train_seconds=round(result.seconds, 1),
                        train_metrics=result.metrics, impressions="engine.rank (POST /v1/rank)")
        return _Trained(key, engine, tmp, settings)

    def close(self) -> None:
        self._run = None  # the run stays shared (``drop_shared``)
        self.engine = None

    # -- the views -------------------------------------------------------------------------
    def score_users(self, users: np.ndarray) -> np.ndarray:
        if self.view == "served":
            return super().score_users(users)
        scores, m = self._retrieval_scores(users)
        out = np.full((len(users), len(self.item_ids)), -np.inf, dtype=np.float32)
        cols = np.array([self.item_of.get(i, -1) for i in m.item_ids])
        ok = cols >= 0
        if self.view == "retrieval":
            out[:, cols[ok]] = scores[:, ok]
            return out
        return self._ranker_scores(users, scores, cols, out)

    def _retrieval_scores(self, users: np.ndarray):
        return retrieval_scores(self.engine, [str(self.user_ids[u]) for u in users],
                                self.ranking_page)

    def _ranker_scores(self, users, scores, cols, out) -> np.ndarray:
        """The value formula over retrieval's top candidates (seen items excluded first)."""
        from reelrank.pipeline.context import FeedRequest

        m = self.engine.models.current
        scorer = self.engine.pipeline.scorer
        if m.bundle.ranker is None:
            return out  # no ranker: nothing is ranked (the report says so)
        weights = torch.tensor([m.bundle.value_weights.get(t, 0.0)
                                for t in m.bundle.ranker.tasks])
        for row, u in enumerate(users):
            user_id = str(self.user_ids[u])
            state = self.engine.live.user(user_id)
            s = scores[row].copy()
            if state is not None:
                seen = [m.item_index[i] for i in state.seen if i in m.item_index]
                s[seen] = -np.inf
            k = min(self.ranker_candidates, len(s))
            top = np.argpartition(-s, k - 1)[:k]
            top = top[np.isfinite(s[top])]
            ids = [m.item_ids[k] for k in top]
            ctx = self.engine.context(FeedRequest(user_id=user_id, n=len(ids)))
            probs = scorer._predict(m, ctx, ids, ctx.catalog.get_many(ids))
            value = (probs @ weights).numpy()
            ok = cols[top] >= 0
            out[row, cols[top][ok]] = value[ok]
        return out

    def feed_pages(self, users: np.ndarray, n: int) -> list[np.ndarray]:
        """One page of ``n`` per viewer, as ``GET /v1/feed?n=`` builds it, in the harness's
        item indices (page order)."""
        from reelrank.pipeline.context import FeedRequest

        pipeline = self.engine.pipeline
        if self.view in ("served_plain", "served_learned") and self._variant is None:
            from reelrank.engine import default_pipeline
            from reelrank.pipeline import topics
            from reelrank.pipeline.rerank import DiversityReranker

            if self.view == "served_plain":
                self._variant = default_pipeline(
                    self.engine.models, exploration=False,
                    reranker=DiversityReranker(None, None, 0, 1.0, 0.0))
            else:  # the learned topics win over every declared one, in every rule that reads them
                self._variant = default_pipeline(self.engine.models)
                topics.install(self.engine, pipeline=self._variant,
                               settings=topics.TopicSettings("learned"))
        if self.view != "served":
            pipeline = self._variant
        pages = []
        for u in users:
            ctx = self.engine.context(FeedRequest(user_id=str(self.user_ids[u]), n=n))
            result = pipeline.build(ctx)
            cols = [self.item_of.get(it.item_id) for it in result.items]
            pages.append(np.array([c for c in cols if c is not None], dtype=np.int64))
        return pages


def retrieval_scores(engine, user_ids: list[str], page: int = 10):
    """The retrieval model alone for each viewer: their live history's user vector against
    every item vector of the engine's current version (full ranking), plus the version's
    popularity and trending priors as the served scorer adds them to a page of ``page`` (not
    the co-engagement prior: the served feed's own). Returns the (B, I_engine) scores and the
    serving version (whose ``item_ids`` name the columns)."""
    m = engine.models.current
    retrieval = m.bundle.retrieval
    histories = []
    for user_id in user_ids:
        state = engine.live.user(user_id)
        histories.append(list(state.tokens) if state is not None else [])
    h = encode_histories(histories, m.item_index, retrieval.users.max_len)
    with torch.no_grad():
        vectors = retrieval.user_vectors(h, m.item_vectors)  # (B, D)
        scores = (vectors @ m.item_vectors.T).numpy()  # (B, I_engine)
    prior = page_weight(m.bundle.value_weights, page, "popularity")
    if prior:  # the version's popularity prior, as the served scorer adds it
        scores = scores + prior * log_popularity(engine.live, m.item_ids)[None, :]
    trend = page_weight(m.bundle.value_weights, page, "trending")
    if trend:
        scores = scores + trend * log_trending(engine.live, m.item_ids)[None, :]
    return scores, m
