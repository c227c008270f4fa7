"""One training run over the store: build examples, train both models, measure, publish.

1. Items and events are read from the store; events are replayed in time order through a fresh
   ``LiveState`` (features.ranking_rows), which yields the ranker's rows exactly as serving
   would have seen them, and leaves every viewer's token history for retrieval. Plays, likes
   and other outcomes that no impression announced still enter the histories (implied
   examples), so an app that sends no impressions gets a trained retrieval model.
2. The ranker is trained to convergence on a time-based validation split: rows in the last
   ``holdout`` share of time are held out, training stops once their GAUC (long view and like)
   stops improving, and the model is then fitted again on every row for the best number of
   epochs. A log whose impressions carry no negative (every shown video was played: next-item
   data, or no impressions at all) gets no ranker: serving then orders by retrieval alone.
3. Retrieval holds out the last positive of a sample of viewers and stops when NDCG@10 of it
   stops improving, keeping the best epoch (``train.retrieval``).
4. The bundle is published to the registry with those measurements; a running server picks it
   up without a restart.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from reelrank.metrics import auc, gauc_detail
from reelrank.features import DENSE_FEATURES, ranking_rows
from reelrank.join import token_from_example
from reelrank.models.bundle import ModelBundle
from reelrank.models.ranker import DEFAULT_VALUE_WEIGHTS, TASKS
from reelrank.registry import ModelRegistry
from reelrank.store.base import CatalogReader, EventReader
from reelrank.store import new_catalog, new_live_state
from reelrank.train.ranker import (
    RankerConfig, WatchQuantiles, build_table, encode_ranker_catalog, observe_context, predict,
    train_ranker,
)
from reelrank.train.retrieval import (
    RetrievalConfig, SequenceTable, encode_catalog, train_retrieval,
)
from reelrank.learned_topics import TopicConfig
from reelrank.train.topics import learn_version_topics

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """What ``reelrank train`` and ``POST /v1/admin/train`` run: the evaluation harness trains
    with the same defaults, so its figures are what a user gets."""

    retrieval: RetrievalConfig = field(default_factory=lambda: RetrievalConfig(
        epochs=60, validation_users=2000, time_budget_s=900.0))
    ranker: RankerConfig = field(default_factory=lambda: RankerConfig(
        epochs=8, time_budget_s=300.0))
    holdout: float = 0.1  # share of the time span held out to pick the ranker's epochs
    seed: int = 0
    refit: bool = True  # fit the ranker again on every row for the best number of epochs
    # Learned topics over the item tower's vectors (reelrank.learned_topics); None: no topics.
    topics: TopicConfig | None = field(default_factory=TopicConfig)


@dataclass
class TrainResult:
    version: str | None
    metrics: dict
    seconds: float


def train_from_store(store: CatalogReader | EventReader, registry: ModelRegistry | None,
                     cfg: TrainConfig | None = None, *, progress: bool = True,
                     on_progress: Callable[[float], None] | None = None) -> TrainResult:
    cfg = cfg or TrainConfig()
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    report = on_progress or (lambda p: None)
    items = list(store.iter_items())
    if not items:
        raise ValueError("the catalog is empty: nothing to train on")
    # The log position trained through: an online trainer starting from this version learns
    # what comes after it (events appended while this run reads are left to it).
    last_seq = store.last_seq()
    events = sorted((e for s, e in store.iter_events() if s <= last_seq), key=lambda e: e.ts)
    if not events:
        raise ValueError("the event log is empty: nothing to train on")
    catalog = new_catalog()
    catalog.upsert(items)
    live = new_live_state(catalog)
    rows = sorted(ranking_rows(events, live, history_len=cfg.ranker.history_len, implied=True),
                  key=lambda r: r.example.ts)
    ranked = [r for r in rows if r.dense is not None]  # impressions with their inputs
    report(0.1)
    t0, t1 = events[0].ts, events[-1].ts
    # holdout=0 trains on everything (nothing is measured).
    cut = t1 - int((t1 - t0) * cfg.holdout) if cfg.holdout > 0 else t1 + 1
    train_rows = [r for r in ranked if r.example.ts < cut]
    test_rows = [r for r in ranked if r.example.ts >= cut]
    item_index = {it.item_id: k for k, it in enumerate(items)}
    metrics: dict = {"events": len(events), "last_seq": last_seq, "items": len(items),
                     "rows_train": len(train_rows), "rows_holdout": len(test_rows),
                     "implied_examples": sum(r.dense is None for r in rows), "cut_ts": cut}

    # -- ranker ---------------------------------------------------------------------------
    ranker = None
    why = _no_ranker_reason(cfg, ranked)
    if why is None:
        ranker, rmetrics = _train_ranker(cfg, items, item_index, ranked, train_rows, test_rows,
                                         progress, lambda p: report(0.1 + 0.4 * p))
        metrics.update(rmetrics)
    else:
        metrics["ranker"] = f"not trained: {why}"
        log.info("ranker not trained: %s", why)
    report(0.5)

    # -- retrieval ------------------------------------------------------------------------
    retrieval = cfg.retrieval.model()
    retrieval_catalog = encode_catalog(retrieval, items)
    histories: dict[str, list] = defaultdict(list)
    for r in rows:
        histories[r.example.user_id].append(token_from_example(r.example))
    seq = SequenceTable.from_tokens(histories, item_index)
    rrep = train_retrieval(retrieval, retrieval_catalog, seq, cfg.retrieval, progress=progress,
                           on_progress=lambda p: report(0.5 + 0.45 * p))
    metrics["retrieval_train_seconds"] = round(rrep.seconds, 1)
    metrics["retrieval_epochs"] = rrep.epochs
    metrics["retrieval_best_epoch"] = rrep.best_epoch
    if rrep.stopped:
        metrics["retrieval_stopped"] = rrep.stopped
    best = (next((e for e in rrep.evals if e["epoch"] == rrep.best_epoch), None)
            if rrep.evals else None)
    metrics["retrieval_holdout"] = (
        {k: _round(v) if isinstance(v, float) else v for k, v in best.items()} if best else
        {"recall@100": None, "users": 0})
    value_weights = dict(DEFAULT_VALUE_WEIGHTS)
    if rrep.popularity is not None:
        value_weights["popularity"] = rrep.popularity["weight"]
        if "weight@50" in rrep.popularity:
            value_weights["popularity@50"] = rrep.popularity["weight@50"]
        metrics["retrieval_popularity"] = rrep.popularity
    for prior in ("co_engagement", "trending"):
        chosen = getattr(rrep, prior)
        if chosen is not None:
            for name, key in (("weight", prior), ("weight@50", prior + "@50")):
                if name in chosen:
                    value_weights[key] = chosen[name]
            metrics["retrieval_" + prior] = chosen
    report(0.95)

    bundle = ModelBundle(
        retrieval=retrieval, retrieval_kwargs=cfg.retrieval.model_kwargs(), ranker=ranker,
        ranker_kwargs={"n_dense": len(DENSE_FEATURES), "dim": cfg.ranker.dim,
                       "experts": cfg.ranker.experts, "expert_dim": cfg.ranker.expert_dim,
                       "use_item_id": cfg.ranker.item_id, "wide": cfg.ranker.wide},
        value_weights=value_weights)
    # Topics matched to the version serving now, so their ids keep their meaning.
    topics = (learn_version_topics(retrieval, items, registry, cfg.topics)
              if cfg.topics is not None else None)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    version = None
    if registry is not None:
        version = registry.publish(bundle.state(), {
            "metrics": metrics, "config": {"retrieval": asdict(cfg.retrieval),
                                           "ranker": asdict(cfg.ranker),
                                           "holdout": cfg.holdout, "seed": cfg.seed},
            **({"topics": topics} if topics else {})})
    report(1.0)
    return TrainResult(version, metrics, time.perf_counter() - started)


def _no_ranker_reason(cfg: TrainConfig, rows: list) -> str | None:
    """Why the ranker cannot learn from these rows, or None when it can."""
    if cfg.ranker.epochs <= 0:
        return "ranker epochs = 0"
    if len(rows) < 2:
        return "no impressions in the log"
    long_views = sum(r.example.long_view for r in rows)
    if long_views == len(rows) or long_views == 0:
        return ("every impression was watched to the end: nothing tells the ranker what a "
                "viewer passed over" if long_views else "no impression was watched to the end")
    return None


def _train_ranker(cfg: TrainConfig, items, item_index, rows, train_rows, test_rows, progress,
                  on_progress):
    """Early stopping on the held-out rows, then (``refit``) the same number of epochs on
    every row. Returns the model and what to record of the run."""
    out: dict = {}
    views = [r.example for r in rows if r.example.watch_ms > 0]
    quantiles = WatchQuantiles(np.array([e.duration_ms for e in views], dtype=np.int64),
                               np.array([e.watch_ms for e in views], dtype=np.float64))
    fit_rows = train_rows if len(train_rows) >= 2 else rows
    ranker = cfg.ranker.model()
    catalog = encode_ranker_catalog(ranker, items)
    observe_context(ranker, rows)
    table = build_table(fit_rows, ranker, item_index, quantiles, cfg.ranker.history_len)
    evaluate = monitor = None
    if test_rows and fit_rows is train_rows:
        test_table = build_table(test_rows, ranker, item_index, quantiles,
                                 cfg.ranker.history_len)

        def evaluate(model, _epoch):
            m = _ranker_metrics_table(model, catalog, test_table)
            values = [m[t]["gauc"] for t in ("long_view", "like")
                      if t in m and m[t]["gauc"] is not None]
            return {"gauc": float(np.mean(values)) if values else float("nan"), "tasks": m}

        monitor = "gauc"
    rep = train_ranker(ranker, catalog, table, cfg.ranker, progress=progress,
                       on_progress=on_progress, evaluate=evaluate, monitor=monitor)
    seconds = rep.seconds
    epochs = rep.best_epoch or rep.epochs
    if rep.evals:
        out["ranker_holdout_by_epoch"] = [
            {"epoch": e["epoch"], "gauc": _round(e["gauc"]),
             **{t: e["tasks"][t]["gauc"] for t in ("long_view", "like") if t in e["tasks"]}}
            for e in rep.evals]
        best = next((e for e in rep.evals if e["epoch"] == epochs), rep.evals[-1])
        out["ranker_holdout"] = best["tasks"]
    out["ranker_epochs"] = epochs  # kept: the refit on every row runs this many
    out["ranker_epochs_run"] = rep.epochs  # run on the first fit, patience included
    if cfg.refit and fit_rows is train_rows and len(rows) > len(train_rows):
        # The held-out rows are the newest: the published model learns from them too.
        torch.manual_seed(cfg.seed)
        ranker = cfg.ranker.model()
        catalog = encode_ranker_catalog(ranker, items)
        observe_context(ranker, rows)
        table = build_table(rows, ranker, item_index, quantiles, cfg.ranker.history_len)
        seconds += train_ranker(ranker, catalog, table, cfg.ranker, progress=progress,
                                epochs=epochs).seconds
        out["ranker_refit_rows"] = len(rows)
    out["ranker_train_seconds"] = round(seconds, 1)
    return ranker, out


def _ranker_metrics_table(ranker, catalog, table) -> dict:
    probs = predict(ranker, catalog, table)
    users = np.array(table.user_ids)
    out = {}
    for j, task in enumerate(TASKS):
        if task == "watch_time":
            continue
        y = table.labels[:, j].numpy()
        value, n_users, _ = gauc_detail(users, y, probs[:, j])
        out[task] = {"auc": _round(auc(y, probs[:, j])), "gauc": _round(value),
                     "gauc_users": n_users, "positives": int(y.sum())}
    return out


def _round(x: float) -> float | None:
    return None if x is None or x != x else round(float(x), 4)
