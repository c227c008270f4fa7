"""Run models on a split, compute the metrics, write report.json / report.md and plots.

Every model is a ``Recommender`` (``reelrank.eval.data``) made by a zero-argument factory from
``available_models()``. The harness owns the split, the id mapping and the metrics
(``reelrank.metrics``), so every model is measured on the same data the same way.

Temporal split (short video), per model:

- impressions: each test impression is scored (``score_pairs`` if the model has it, else its row
  of ``score_users``, users in chunks); per task of ``features.TASKS``: AUC, GAUC (per user,
  impression-weighted; users with one class only are left out) of the model's ranking score (for
  ``negative`` of minus the score: a good feed puts what will be hated last), and, when the model
  gives probabilities (``predict_tasks``), LogLoss plus AUC/GAUC of the task's own probability
  (``head`` in the JSON); watch time: mean NDCG@10 per user-day (a user's impressions of
  one local day ranked by score; user-days with a single impression are left out, any order of one
  item is perfect) with relevance = play time (ms), and again with relevance = watch ratio capped
  at 2 (the cap the engine uses), which does not reward long videos for being long;
- retrieval: for each test user with a long view, the whole catalog minus what they were shown in
  the training period is ranked (as a page of 50: a model's ``ranking_page``); Recall@50/100/200
  of the distinct long-viewed test videos (``metrics.recall_at_k``; ``-inf`` = not retrieved);
- beyond accuracy over the same users' top-10 lists: catalog coverage, creator-exposure Gini over
  every creator of the catalog (zeros included), mean popularity percentile (training counts),
  intra-list tag diversity, share of slots from creators new to the viewer (no training
  positive with that creator).

Leave-one-out (next item), per model: HR@10, NDCG@10 and MRR of the target's rank
(``metrics.target_ranks``) over the full catalog minus the user's training items, and the same
beyond-accuracy figures over the users' top-10 lists.

A model with an attribute ``max_ranking_users`` (the engine: one 200-item feed costs 40-70 ms on
a laptop-class core) is ranked for a seeded sample of that many users; the report says so, and
then repeats every model's ranking metrics over the users all models were ranked for.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm import tqdm

from reelrank import metrics
from reelrank.eval.baselines import (EngineRecommender, ItemKNNRecommender,
                                     PopularityRecommender, RandomRecommender,
                                     RecentPopularityRecommender)
from reelrank.eval.data import Recommender
from reelrank.eval.protocols import LeaveOneOutSplit, TemporalSplit, sample_users
# The report's writers live in eval/report.py; their names stay importable from here.
from reelrank.eval.report import (  # noqa: F401
    RECALL_KS, REVERSED_TASKS, TOP_N, WATCH_RATIO_CAP, clean, common_users, markdown,
    rich_tables, tables, versions, write_report)
from reelrank.join import TASKS

logger = logging.getLogger(__name__)

ModelFactory = Callable[[], Recommender]
ENGINE_RANKING_USERS = 3000
DEFAULT_SAMPLE = -1  # ``ranking_users``: ENGINE_RANKING_USERS as it is when the models are made


def available_models(*, seed: int = 0, progress: bool = False, peers: bool = True,
                     ranking_users: int | None = DEFAULT_SAMPLE
                     ) -> dict[str, ModelFactory]:
    """Model name -> factory of a fresh, unfitted model: the baselines, the engine and, with
    ``peers`` (importing their libraries takes seconds), the peer libraries of
    ``reelrank.eval.peers`` whose library imports here. ``ranking_users``: the sample of
    viewers the engine and the served views build pages for (None: every one)."""
    if ranking_users == DEFAULT_SAMPLE:
        ranking_users = ENGINE_RANKING_USERS
    def engine() -> EngineRecommender:
        model = EngineRecommender(progress=progress)
        model.max_ranking_users = ranking_users
        return model

    models: dict[str, ModelFactory] = {
        "random": lambda: RandomRecommender(seed),
        "pop": PopularityRecommender,
        "pop_recent": RecentPopularityRecommender,
        "itemknn": ItemKNNRecommender,
        "engine": engine,
        "reelrank": lambda: _neural(progress, "retrieval", ranking_users),
        "reelrank_ranker": lambda: _neural(progress, "ranker", ranking_users),
        "reelrank_served": lambda: _neural(progress, "served", ranking_users),
        "reelrank_served_plain": lambda: _neural(progress, "served_plain", ranking_users),
        "reelrank_served_learned": lambda: _neural(progress, "served_learned", ranking_users),
        "pop_3d": lambda: RecentPopularityRecommender(days=3.0),
    }
    if not peers:
        return models
    try:
        peers = importlib.import_module("reelrank.eval.peers")
    except ImportError as exc:
        logger.info("peer models unavailable (%s): skipped", exc)
        return models
    found = getattr(peers, "available_peers", None) or getattr(peers, "available_models", None)
    found = found() if callable(found) else None
    if not isinstance(found, dict):
        logger.warning("reelrank.eval.peers has no available_peers(): peers skipped")
        return models
    for name, factory in found.items():
        if name in models:
            logger.warning("peer model %r shadows a built-in name: skipped", name)
        else:
            models[name] = factory
    return models


def _neural(progress: bool, view: str, ranking_users: int | None = ENGINE_RANKING_USERS):
    """ReelRank trained as the server trains, read as one of ``eval.neural.VIEWS``; the views
    share one training run. The views that build a feed or rank per viewer are measured on
    the engine's seeded sample of viewers."""
    from reelrank.eval.neural import NeuralRecommender

    model = NeuralRecommender(progress=progress, view=view)
    model.max_ranking_users = None if view == "retrieval" else ranking_users
    return model


@dataclass
class ModelRun:
    name: str
    metrics: dict = field(default_factory=dict)
    fit_seconds: float = 0.0
    eval_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # the model's own ``settings``, if it has any
    lorenz: tuple[list[float], list[float]] | None = None  # creator-exposure curve, downsampled
    ranked_users: np.ndarray | None = None  # the users ranked for retrieval / next item
    per_user: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> value per user

    def as_dict(self) -> dict:
        return {"metrics": self.metrics, "fit_seconds": round(self.fit_seconds, 2),
                "eval_seconds": round(self.eval_seconds, 2),
                "wall_seconds": round(self.fit_seconds + self.eval_seconds, 2),
                "notes": self.notes, "settings": self.settings}


def fit(model: Recommender, split: TemporalSplit | LeaveOneOutSplit) -> None:
    """``fit_events`` for a model that learns from raw events, ``fit`` for the others."""
    if hasattr(model, "fit_events"):
        events = (split.train_events if isinstance(split, TemporalSplit)
                  else split.train_events())
        model.fit_events(split.train, split.dataset.items, events)
    else:
        model.fit(split.train)


def evaluate(name: str, factory: ModelFactory, split, *, seed: int = 0,
             progress: bool = False, chunk: int = 256) -> ModelRun:
    """Fit one model and evaluate it on the split's protocol."""
    run = ModelRun(name)
    model = factory()
    started = time.perf_counter()
    try:
        fit(model, split)
        run.fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        if isinstance(split, TemporalSplit):
            _evaluate_temporal(model, split, run, seed, progress, chunk)
        else:
            _evaluate_next_item(model, split, run, seed, progress, chunk)
        run.eval_seconds = time.perf_counter() - started
        run.settings = dict(getattr(model, "settings", None) or {})
    finally:
        if hasattr(model, "close"):
            model.close()
    logger.info("%s: fit %.1fs, eval %.1fs", name, run.fit_seconds, run.eval_seconds)
    return run


def _ranking_users(model, users: np.ndarray, seed: int, run: ModelRun) -> np.ndarray:
    limit = getattr(model, "max_ranking_users", None)
    picked = sample_users(users, limit, seed)
    if len(picked) < len(users):
        run.notes.append(f"ranked for a seeded sample of {len(picked)} of {len(users)} users")
    return picked


def _chunks(values: np.ndarray, size: int, progress: bool, desc: str):
    for start in tqdm(range(0, len(values), size), desc=desc, disable=not progress,
                      dynamic_ncols=True, unit=" chunks"):
        yield values[start:start + size]


# --- temporal protocol --------------------------------------------------------------------------


def _pair_outputs(model, users: np.ndarray, items: np.ndarray, chunk: int, progress: bool,
                  name: str, contexts: np.ndarray | None = None
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scores (and task probabilities, if the model gives them) of (user, item) pairs;
    ``contexts`` (N, 3): each pair's request context, for a model that ``takes_context``."""
    scores = np.zeros(len(users), dtype=np.float64)
    probs: dict[str, np.ndarray] = {}
    order = np.argsort(users, kind="stable")
    uniq, starts = np.unique(users[order], return_index=True)
    bounds = np.append(starts, len(users))
    for k in _chunks(np.arange(len(uniq)), chunk, progress, f"{name}: impressions"):
        rows = order[bounds[k[0]]:bounds[k[-1] + 1]]
        u, i = users[rows], items[rows]
        extra = {} if contexts is None else {"contexts": contexts[rows]}
        if hasattr(model, "score_pairs"):
            scores[rows] = model.score_pairs(u, i, **extra)
        else:
            matrix = np.asarray(model.score_users(uniq[k]), dtype=np.float64)
            scores[rows] = matrix[np.searchsorted(uniq[k], u), i]
        if hasattr(model, "predict_tasks"):
            for task, p in model.predict_tasks(u, i, **extra).items():
                probs.setdefault(task, np.full(len(users), np.nan))[rows] = p
    return scores, probs


def impression_metrics(split: TemporalSplit, scores: np.ndarray,
                       probs: dict[str, np.ndarray]) -> dict:
    test = split.test
    out: dict = {}
    for task in TASKS:
        y = test.labels[task]
        # A good ranking puts what the viewer will hate last: the negative task reads -score.
        signed = -scores if task in REVERSED_TASKS else scores
        value, n_users, _ = metrics.gauc_detail(test.user, y, signed)
        p = probs.get(task)
        has_p = p is not None and not np.isnan(p).any()
        out[task] = {"auc": metrics.auc(y, signed), "gauc": value, "gauc_users": n_users,
                     "positives": int(y.sum()),
                     "scored_by": "-score" if task in REVERSED_TASKS else "score",
                     "logloss": metrics.logloss(y, p) if has_p else None}
        if has_p:  # the model's own head for this task, ranked by its probability
            out[task]["head"] = {"auc": metrics.auc(y, p), "gauc": metrics.gauc(test.user, y, p)}
    # A user-day with a single impression is ranked perfectly by any model: left out.
    group = test.user.astype(np.int64) * 1_000_000 + test.day
    _, inverse, sizes = np.unique(group, return_inverse=True, return_counts=True)
    ranked = sizes[inverse.ravel()] >= 2
    g, sc = group[ranked], scores[ranked]
    out["watch"] = {
        "ndcg10_play_time": metrics.grouped_ndcg_at_k(g, test.watch_ms[ranked], sc, 10),
        "ndcg10_watch_ratio": metrics.grouped_ndcg_at_k(
            g, np.minimum(test.watch_ratio[ranked], WATCH_RATIO_CAP), sc, 10),
        "groups": int(np.sum(sizes >= 2)), "impressions": int(ranked.sum()),
        "group": "user x local day, >= 2 impressions",
    }
    return out


def _evaluate_temporal(model, split: TemporalSplit, run: ModelRun, seed: int, progress: bool,
                       chunk: int, recall_ks: tuple[int, ...] = RECALL_KS) -> None:
    scores, probs = _pair_outputs(model, split.test.user, split.test.item, chunk, progress,
                                  run.name)
    run.metrics["impressions"] = impression_metrics(split, scores, probs)
    context = split.test.context  # each impression's, as a client replaying it would send it
    if (getattr(model, "takes_context", False) and context is not None
            and any(v is not None for v in context.ravel())):
        scores, probs = _pair_outputs(model, split.test.user, split.test.item, chunk, progress,
                                      run.name + " (with context)", context)
        run.metrics["impressions_context"] = impression_metrics(split, scores, probs)
    users = _ranking_users(model, split.retrieval_users, seed, run)
    targets = dict(zip(split.retrieval_users.tolist(), split.retrieval_targets))
    if getattr(model, "serves_pages", False):
        _served_temporal(model, split, run, users, targets, progress, chunk)
        return
    n_items = split.index.item_ids.shape[0]
    k_max = min(max(recall_ks), n_items)
    if hasattr(model, "ranking_page"):
        model.ranking_page = min(recall_ks)
    recalls: dict[int, list[float]] = {k: [] for k in recall_ks}
    lists: list[np.ndarray] = []
    for part in _chunks(users, chunk, progress, f"{run.name}: retrieval"):
        s = np.array(model.score_users(part), dtype=np.float64)
        _exclude(s, [split.train_seen[u] for u in part])
        kth = -np.partition(-s, k_max - 1, axis=1)[:, k_max - 1]
        for row, u in enumerate(part):
            cand = np.flatnonzero((s[row] >= kth[row]) & np.isfinite(s[row]))
            cs = s[row, cand]
            target = targets[int(u)]
            ranked = cand[np.lexsort((np.isin(cand, target), -cs))]  # ties: targets last
            for k in recall_ks:
                recalls[k].append(metrics.recall_at_k(ranked.tolist(), target.tolist(), k))
            lists.append(cand[np.lexsort((cand, -cs))][:TOP_N])
    run.metrics["retrieval"] = {f"recall@{k}": float(np.mean(v)) if v else math.nan
                                for k, v in recalls.items()}
    run.metrics["retrieval"]["users"] = len(users)
    run.ranked_users = np.asarray(users)
    run.per_user = {f"recall@{k}": np.array(v) for k, v in recalls.items()}
    _beyond_accuracy(split, users, lists, run)


SERVED_PAGE_SIZES = (50, 100)


def _served_temporal(model, split: TemporalSplit, run: ModelRun, users: np.ndarray,
                     targets: dict, progress: bool, chunk: int) -> None:
    """The served feed: one page of each size in ``SERVED_PAGE_SIZES`` per viewer (what
    ``GET /v1/feed?n=`` answers at the end of the training period); Recall@n of the videos the
    viewer long-viewed in the test days and had not been shown before. Recall@200 is not
    measured (no page of 200)."""
    recalls: dict[int, list[float]] = {k: [] for k in RECALL_KS if k in SERVED_PAGE_SIZES}
    lists: list[np.ndarray] = []
    for part in _chunks(users, chunk, progress, f"{run.name}: feeds"):
        for n in recalls:
            pages = model.feed_pages(part, n)
            for page, u in zip(pages, part):
                # Defensive: the feed never shows what the viewer saw (a filter removes it).
                page = page[~np.isin(page, split.train_seen[int(u)])]
                recalls[n].append(metrics.recall_at_k(page.tolist(),
                                                      targets[int(u)].tolist(), n))
                if n == min(recalls):
                    lists.append(page[:TOP_N])
    run.metrics["retrieval"] = {f"recall@{k}": float(np.mean(recalls[k]))
                                if k in recalls and recalls[k] else math.nan for k in RECALL_KS}
    run.metrics["retrieval"]["users"] = len(users)
    run.metrics["retrieval"]["protocol"] = (
        "served feed: one GET /v1/feed page per size in " + str(list(recalls)))
    run.ranked_users = np.asarray(users)
    run.per_user = {f"recall@{k}": np.array(v) for k, v in recalls.items()}
    _beyond_accuracy(split, users, lists, run)


def _exclude(s: np.ndarray, per_row: list[np.ndarray]) -> None:
    rows = np.repeat(np.arange(len(per_row)), [len(x) for x in per_row])
    if len(rows):
        s[rows, np.concatenate(per_row)] = -np.inf


def _beyond_accuracy(split, users: np.ndarray, lists: list[np.ndarray], run: ModelRun) -> None:
    index, train = split.index, split.train
    n_creators = index.creator_ids.shape[0]
    shown = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
    exposure = np.bincount(index.item_creator[shown], minlength=n_creators)
    seqs = train.sequences()
    seen = [np.unique(index.item_creator[seqs[u]]).tolist() for u in users]
    tagged = any(index.item_tags)
    run.metrics["beyond"] = {
        "coverage@10": metrics.catalog_coverage([x.tolist() for x in lists],
                                                index.item_ids.shape[0]),
        "creator_gini@10": metrics.gini(exposure),
        "popularity_pct@10": metrics.popularity_percentile(lists, train.item_popularity()),
        "tag_diversity@10": metrics.intra_list_diversity([x.tolist() for x in lists],
                                                         index.item_tags) if tagged else None,
        "new_creator_share@10": metrics.new_creator_share([x.tolist() for x in lists],
                                                          index.item_creator.tolist(), seen),
        "lists": len(lists),
    }
    x, y = metrics.lorenz_curve(exposure)
    pick = np.unique(np.linspace(0, len(x) - 1, min(len(x), 201)).astype(int))
    run.lorenz = (x[pick].tolist(), y[pick].tolist())


# --- leave-one-out ------------------------------------------------------------------------------


def _evaluate_next_item(model, split: LeaveOneOutSplit, run: ModelRun, seed: int,
                        progress: bool, chunk: int) -> None:
    users = _ranking_users(model, split.users, seed, run)
    where = {int(u): k for k, u in enumerate(split.users)}
    if getattr(model, "serves_pages", False):
        _served_next_item(model, split, run, users, where, progress, chunk)
        return
    ranks: list[np.ndarray] = []
    lists: list[np.ndarray] = []
    top = min(TOP_N, split.index.item_ids.shape[0])
    for part in _chunks(users, chunk, progress, f"{run.name}: ranking"):
        rows = [where[int(u)] for u in part]
        s = np.array(model.score_users(part), dtype=np.float64)
        exclude = [split.exclude[r] for r in rows]
        ranks.append(metrics.target_ranks(s, split.targets[rows], exclude))
        _exclude(s, exclude)
        best = np.argpartition(-s, top - 1, axis=1)[:, :top]
        for row in range(len(part)):
            b = best[row][np.isfinite(s[row, best[row]])]
            lists.append(b[np.lexsort((b, -s[row, b]))])
    r = np.concatenate(ranks) if ranks else np.zeros(0)
    run.metrics["next_item"] = {"hr@10": metrics.hit_rate_at_k(r, 10),
                                "ndcg@10": metrics.ndcg_at_k_single(r, 10),
                                "mrr": metrics.mrr(r), "users": len(r)}
    run.ranked_users = np.asarray(users)
    run.per_user = {"ranks": r}
    _beyond_accuracy(split, users, lists, run)


def _served_next_item(model, split: LeaveOneOutSplit, run: ModelRun, users: np.ndarray,
                      where: dict, progress: bool, chunk: int) -> None:
    """The served feed: one ``GET /v1/feed?n=10`` page per viewer; the target's position in it
    (a target not on the page counts as not found: MRR is within the page)."""
    ranks, lists = [], []
    for part in _chunks(users, chunk, progress, f"{run.name}: feeds"):
        for page, u in zip(model.feed_pages(part, TOP_N), part):
            target = int(split.targets[where[int(u)]])
            hit = np.flatnonzero(page == target)
            ranks.append(float(hit[0]) if len(hit) else math.inf)
            lists.append(page[:TOP_N])
    r = np.asarray(ranks, dtype=np.float64)
    run.metrics["next_item"] = {"hr@10": metrics.hit_rate_at_k(r, 10),
                                "ndcg@10": metrics.ndcg_at_k_single(r, 10),
                                "mrr": metrics.mrr(r), "users": len(r),
                                "protocol": "served feed: one GET /v1/feed?n=10 page"}
    run.ranked_users = np.asarray(users)
    run.per_user = {"ranks": r}
    _beyond_accuracy(split, users, lists, run)


# --- the report ---------------------------------------------------------------------------------


def run(split: TemporalSplit | LeaveOneOutSplit, models: dict[str, ModelFactory], *,
        replay: bool = False, seed: int = 0, progress: bool = False,
        settings: dict | None = None, command: str = "") -> tuple[dict, dict[str, tuple]]:
    """Evaluate every model (in the given order) and, on a temporal split, the engine replay.
    Returns the report (JSON-ready after ``clean``) and each model's creator Lorenz curve."""
    started = time.perf_counter()
    ds = split.dataset
    report: dict = {
        "dataset": {"kind": ds.kind, "path": str(ds.path), "items": len(ds.items),
                    "events": len(ds.events), "users": int(split.index.user_ids.shape[0])},
        "split": split.describe(),
        "sizes": {"train_interactions": len(split.train),
                  "train_users_with_positives": int(len(np.unique(split.train.user))),
                  "items": int(split.train.n_items)},
        "settings": {"seed": seed, "recall_ks": list(RECALL_KS), "top_n": TOP_N,
                     "watch_ratio_cap": WATCH_RATIO_CAP, **(settings or {})},
        "models": {}, "versions": versions(), "command": command,
    }
    lorenz: dict[str, tuple] = {}
    runs = []
    for name, factory in models.items():
        try:
            result = evaluate(name, factory, split, seed=seed, progress=progress)
        except Exception as exc:  # one broken model must not cost the others' results
            logger.exception("model %s failed", name)
            report["models"][name] = {"error": f"{type(exc).__name__}: {exc}", "notes": []}
            continue
        runs.append(result)
        report["models"][name] = result.as_dict()
        if result.lorenz is not None:
            lorenz[name] = result.lorenz
    if any(n.startswith("reelrank") for n in models):
        from reelrank.eval.neural import drop_shared

        drop_shared()
    common_users(runs, report)
    if replay and isinstance(split, TemporalSplit):
        from reelrank.eval.replay import run_replay

        report["replay"] = run_replay(split, progress)
    report["wall_seconds"] = round(time.perf_counter() - started, 2)
    return report, lorenz
