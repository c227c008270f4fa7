"""One training run over the store: build examples, train both models, measure, publish.

1. Items and events are read from the store; events are replayed in time order through a fresh
   ``LiveState`` (features.ranking_rows), which yields the ranker's rows exactly as serving
   would have seen them, and leaves every viewer's token history for retrieval.
2. The last ``holdout`` share of time is held out: both models train on the earlier part and
   are measured on it (ranker: AUC / GAUC per task; retrieval: Recall@100 of held-out positives).
3. The bundle is published to the registry with those measurements; a running server picks it
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

from reelrank.eval.metrics import auc, gauc_detail
from reelrank.features import DENSE_FEATURES, ranking_rows, token_from_example
from reelrank.models.bundle import ModelBundle
from reelrank.models.ranker import TASKS
from reelrank.registry import ModelRegistry
from reelrank.store.base import CatalogReader, EventReader
from reelrank.store.memory import Catalog, LiveState
from reelrank.train.ranker import (
    RankerConfig, WatchQuantiles, build_table, encode_ranker_catalog, observe_context, predict,
    train_ranker,
)
from reelrank.train.retrieval import (
    RetrievalConfig, SequenceTable, encode_catalog, item_matrix, train_retrieval, user_matrix,
)

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    retrieval: RetrievalConfig = field(default_factory=lambda: RetrievalConfig(epochs=5))
    ranker: RankerConfig = field(default_factory=RankerConfig)
    holdout: float = 0.1  # share of the time span held out for measurement
    seed: int = 0


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
    catalog = Catalog()
    catalog.upsert(items)
    live = LiveState(catalog)
    rows = sorted(ranking_rows(events, live, history_len=cfg.ranker.history_len),
                  key=lambda r: r.example.ts)
    report(0.1)
    t0, t1 = events[0].ts, events[-1].ts
    # holdout=0 trains on everything (nothing is measured): what a production run does.
    cut = t1 - int((t1 - t0) * cfg.holdout) if cfg.holdout > 0 else t1 + 1
    train_rows = [r for r in rows if r.example.ts < cut]
    test_rows = [r for r in rows if r.example.ts >= cut]
    item_index = {it.item_id: k for k, it in enumerate(items)}
    metrics: dict = {"events": len(events), "last_seq": last_seq, "items": len(items),
                     "rows_train": len(train_rows),
                     "rows_holdout": len(test_rows), "cut_ts": cut}

    # -- ranker (epochs=0 skips it: e.g. next-item data with no impressions to rank) ----------
    ranker = None
    if cfg.ranker.epochs > 0 and len(train_rows) >= 2:
        ranker = cfg.ranker.model()
        ranker_catalog = encode_ranker_catalog(ranker, items)
        observe_context(ranker, train_rows)
        views = [r.example for r in train_rows if r.example.watch_ms > 0]
        quantiles = WatchQuantiles(np.array([e.duration_ms for e in views], dtype=np.int64),
                                   np.array([e.watch_ms for e in views], dtype=np.float64))
        table = build_table(train_rows, ranker, item_index, quantiles, cfg.ranker.history_len)
        rep = train_ranker(ranker, ranker_catalog, table, cfg.ranker, progress=progress,
                           on_progress=lambda p: report(0.1 + 0.4 * p))
        metrics["ranker_train_seconds"] = round(rep.seconds, 1)
        if test_rows:
            metrics["ranker_holdout"] = _ranker_metrics(ranker, ranker_catalog, test_rows,
                                                        item_index, quantiles, cfg)
    report(0.5)

    # -- retrieval ---------------------------------------------------------------------------
    retrieval = cfg.retrieval.model()
    retrieval_catalog = encode_catalog(retrieval, items)
    histories: dict[str, list] = defaultdict(list)
    future: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        tok = token_from_example(r.example)
        if r.example.ts < cut:
            histories[r.example.user_id].append(tok)
        elif tok.positive:
            future[r.example.user_id].add(item_index[r.example.item_id])
    seq = SequenceTable.from_tokens(histories, item_index)
    rrep = train_retrieval(retrieval, retrieval_catalog, seq, cfg.retrieval, progress=progress,
                           on_progress=lambda p: report(0.5 + 0.45 * p))
    metrics["retrieval_train_seconds"] = round(rrep.seconds, 1)
    metrics["retrieval_holdout"] = _retrieval_metrics(retrieval, retrieval_catalog, seq, future,
                                                      cfg.retrieval.max_len)
    report(0.95)

    bundle = ModelBundle(
        retrieval=retrieval, retrieval_kwargs=_kwargs(cfg.retrieval), ranker=ranker,
        ranker_kwargs={"n_dense": len(DENSE_FEATURES), "dim": cfg.ranker.dim,
                       "experts": cfg.ranker.experts, "expert_dim": cfg.ranker.expert_dim})
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    version = None
    if registry is not None:
        version = registry.publish(bundle.state(), {
            "metrics": metrics, "config": {"retrieval": asdict(cfg.retrieval),
                                           "ranker": asdict(cfg.ranker),
                                           "holdout": cfg.holdout, "seed": cfg.seed}})
    report(1.0)
    return TrainResult(version, metrics, time.perf_counter() - started)


def _kwargs(c: RetrievalConfig) -> dict:
    return {"dim": c.dim, "max_len": c.max_len, "layers": c.layers, "heads": c.heads,
            "dropout": c.dropout, "use_content": c.use_content,
            "content_fields": list(c.content_fields)}


def _ranker_metrics(ranker, catalog, rows, item_index, quantiles, cfg: TrainConfig) -> dict:
    table = build_table(rows, ranker, item_index, quantiles, cfg.ranker.history_len)
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


def _retrieval_metrics(model, catalog, seq: SequenceTable, future: dict[str, set[int]],
                       max_len: int, k: int = 100) -> dict:
    users = [u for u in range(len(seq)) if seq.user_ids[u] in future and seq.lengths()[u] > 0]
    if not users:
        return {"recall@100": None, "users": 0}
    vectors = item_matrix(model, catalog)
    uv = user_matrix(model, seq, np.array(users), vectors, max_len)
    recalls = []
    for row, u in zip((uv @ vectors.T).numpy(), users):
        start, stop = seq.offsets[u], seq.offsets[u + 1]
        row[seq.item[start:stop]] = -np.inf  # already seen
        top = set(np.argpartition(-row, min(k, len(row) - 1))[:k].tolist())
        wanted = future[seq.user_ids[u]]
        recalls.append(len(top & wanted) / len(wanted))
    return {"recall@100": _round(float(np.mean(recalls))), "users": len(users)}


def _round(x: float) -> float | None:
    return None if x is None or x != x else round(float(x), 4)
