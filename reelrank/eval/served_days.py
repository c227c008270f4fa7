"""The served feed day by day, with the live state following the test days.

``reelrank eval``'s temporal protocol asks one page per viewer at the cut-off and scores it
against four days of long views: the live state never sees a test event, so what live state
adds (the viewer's latest swipes, the item counters, trending) is not measured, and the
trending source serves the cut-off's trend for four days. A server does otherwise. Here the
test days are played the way a server lives them, with the weights trained once, as the
server trains them:

1. the engine is built from the training period and trained with ``train_from_store`` and
   the given ``TrainConfig`` (the default is what ``reelrank train`` and
   ``POST /v1/admin/train`` run);
2. at the start of each test day, each measured viewer gets one page of ``page`` videos
   (``GET /v1/feed?n=`` as served, built without recording it as served), scored by Recall of
   the videos they long-viewed that day and had not been shown before it;
3. then every event of that day goes in through ``engine.ingest_events``, as the API would
   accept them, so the next day's pages are built from the live state a server would have.

Beside the served feed, from the same engine at the same moment: the retrieval model alone
(its user vector over the live history against every item, the popularity prior added as the
served scorer adds it, what the viewer was shown before removed) and two popularity lists
(training positives counted over every day so far, and over the last ``recent_days`` days),
without what the viewer was shown before. The measured viewers of a day are those with at
least one such long view; ``score_users`` keeps a seeded sample of them per day.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from reelrank import metrics
from reelrank.eval.baselines import build_engine, scratch_dir
from reelrank.eval.neural import retrieval_scores
from reelrank.eval.protocols import TemporalSplit, day_name, local_day
from reelrank.eval.replay import event_time_learner
from reelrank.registry import ModelRegistry
from reelrank.train.batch import TrainConfig, train_from_store
from reelrank.train.learner import OnlineConfig
from reelrank.types import FeedRequest

logger = logging.getLogger(__name__)

ARMS = ("served", "retrieval", "pop", "pop_recent")
POSITIVE_TASKS = ("long_view", "like", "follow", "comment", "share")


@dataclass
class ServedDaysConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    page: int = 50
    score_users: int | None = 2_000  # per day; None: every viewer with a target that day
    recent_days: int = 3
    seed: int = 0
    chunk: int = 256  # viewers per retrieval batch
    # Weights learned from the stream, as the server's online trainer learns them: an
    # ``OnlineLearner`` (ranker and retrieval) steps through each day's events in event time,
    # and its models serve the next day's pages. None: the weights stay as trained.
    online: OnlineConfig | None = None
    settle_ms: int = 1_000


def day_targets(split: TemporalSplit) -> dict[int, dict[int, np.ndarray]]:
    """Per test day, per viewer: the distinct videos they long-viewed that day and had no
    impression of before it (training period or an earlier test day)."""
    test = split.test
    out: dict[int, dict[int, np.ndarray]] = {}
    shown: dict[int, set[int]] = {}
    for d in np.unique(test.day):
        today = test.day == d
        lv = today & (test.labels["long_view"] == 1)
        per_day: dict[int, np.ndarray] = {}
        for u in np.unique(test.user[lv]):
            u = int(u)
            before = shown.get(u)
            if before is None:
                before = shown[u] = set(split.train_seen[u].tolist())
            items = np.unique(test.item[lv & (test.user == u)])
            fresh = np.array([i for i in items.tolist() if i not in before], dtype=np.int64)
            if len(fresh):
                per_day[u] = fresh
        for u, i in zip(test.user[today].tolist(), test.item[today].tolist()):
            shown.setdefault(u, set(split.train_seen[u].tolist())).add(i)
        out[int(d)] = per_day
    return out


def positive_counts(split: TemporalSplit) -> tuple[np.ndarray, np.ndarray]:
    """Every positive (training: ``split.train``; test days: any engagement of
    ``POSITIVE_TASKS`` not marked negative) as (item index, local day) arrays."""
    test = split.test
    pos = np.zeros(len(test), dtype=bool)
    for t in POSITIVE_TASKS:
        pos |= test.labels[t] == 1
    pos &= test.labels["negative"] == 0
    items = np.concatenate([split.train.item, test.item[pos]]).astype(np.int64)
    days = np.concatenate([local_day(split.train.ts, split.dataset.tz_hours), test.day[pos]])
    return items, days


def _top_unseen(order: np.ndarray, seen: set[int], n: int) -> list[int]:
    out = []
    for i in order.tolist():
        if i not in seen:
            out.append(i)
            if len(out) == n:
                break
    return out


def served_days(split: TemporalSplit, cfg: ServedDaysConfig | None = None,
                progress: bool = False) -> dict:
    """Train once on the split's training period, then for each test day: pages at its start,
    scored against its long views, then its events into the live state. Returns the report."""
    cfg = cfg or ServedDaysConfig()
    index = split.index
    targets = day_targets(split)
    pos_items, pos_days = positive_counts(split)
    n_items = len(index.item_ids)
    event_days = local_day(np.array([e.ts for e in split.test_events], dtype=np.int64),
                           split.dataset.tz_hours)
    rng = np.random.default_rng(cfg.seed)
    recalls: dict[str, dict[str, list[float]]] = {a: {} for a in ARMS}
    report: dict = {"config": {"page": cfg.page, "score_users": cfg.score_users,
                               "recent_days": cfg.recent_days, "seed": cfg.seed,
                               "train": asdict(cfg.train),
                               "online": asdict(cfg.online) if cfg.online else None},
              "days": {}}
    units: list[tuple[str, str]] = []  # (day, viewer) of each measured page, in order
    started = time.perf_counter()
    with scratch_dir() as tmp:
        root = Path(tmp)
        engine = build_engine(split.dataset.items, split.train_events, root / "store", progress)
        try:
            registry = ModelRegistry(root / "models")
            result = train_from_store(engine.store, registry, cfg.train, progress=progress)
            engine.registry = engine.models.registry = registry
            engine.models.refresh()
            report["train"] = {"version": result.version, "seconds": round(result.seconds, 1),
                               "metrics": result.metrics}
            pipeline = engine.pipeline
            learner = _Online(engine, registry, split, cfg) if cfg.online is not None else None
            for d, per_user in targets.items():
                name = day_name(d)
                if learner is not None:
                    learner.install()
                users = np.array(sorted(per_user), dtype=np.int64)
                if cfg.score_users is not None and cfg.score_users < len(users):
                    users = np.sort(rng.choice(users, cfg.score_users, replace=False))
                counts = np.bincount(pos_items[pos_days < d], minlength=n_items)
                recent = np.bincount(pos_items[(pos_days < d) & (pos_days >= d - cfg.recent_days)],
                                     minlength=n_items)
                orders = {"pop": np.lexsort((np.arange(n_items), -counts)),
                          "pop_recent": np.lexsort((np.arange(n_items), -counts, -recent))}
                day = {a: [] for a in ARMS}
                sources: dict[str, int] = {}
                for k in tqdm(range(0, len(users), cfg.chunk), desc=f"served {name}",
                              disable=not progress, dynamic_ncols=True):
                    part = users[k:k + cfg.chunk]
                    ids = [str(index.user_ids[u]) for u in part]
                    scores, m = retrieval_scores(engine, ids, cfg.page)
                    cols = np.array([index.item_of.get(i, -1) for i in m.item_ids])
                    for row, (u, user_id) in enumerate(zip(part.tolist(), ids)):
                        target = per_user[u].tolist()
                        seen = _shown_before(engine, user_id, index)
                        ctx = engine.context(FeedRequest(user_id=user_id, n=cfg.page))
                        built = pipeline.build(ctx)
                        page = [index.item_of[it.item_id] for it in built.items
                                if it.item_id in index.item_of]
                        for it in built.items:
                            sources[it.source] = sources.get(it.source, 0) + 1
                        day["served"].append(metrics.recall_at_k(page, target, cfg.page))
                        s = np.where((cols >= 0) & ~np.isin(cols, list(seen)),
                                     scores[row], -np.inf)
                        top = np.argsort(-s, kind="stable")[:cfg.page]
                        ranked = [int(cols[c]) for c in top if np.isfinite(s[c])]
                        day["retrieval"].append(
                            metrics.recall_at_k(ranked[:cfg.page], target, cfg.page))
                        for a in ("pop", "pop_recent"):
                            day[a].append(metrics.recall_at_k(
                                _top_unseen(orders[a], seen, cfg.page), target, cfg.page))
                report["days"][name] = {
                    "viewers": int(len(users)), "viewers_with_targets": len(per_user),
                    **{a: float(np.mean(v)) for a, v in day.items()},
                    "served_sources": dict(sorted(sources.items(), key=lambda x: -x[1])),
                    "version": engine.models.current.version}
                for a in ARMS:
                    recalls[a].setdefault(name, day[a])
                units.extend((name, str(index.user_ids[u])) for u in users.tolist())
                logger.info("served days %s: %s", name, {a: round(float(np.mean(v)), 4)
                                                         for a, v in day.items()})
                batch = [e for e, ed in zip(split.test_events, event_days) if ed == d]
                for k in range(0, len(batch), 20_000):
                    engine.ingest_events(batch[k:k + 20_000])
                if learner is not None:
                    learner.learn(batch)
            if learner is not None:
                report["online"] = learner.figures()
        finally:
            engine.store.close()
    report["overall"] = {a: float(np.mean([x for v in recalls[a].values() for x in v]))
                         for a in ARMS}
    report["overall"]["viewer_days"] = int(sum(len(v) for v in recalls["served"].values()))
    # Per viewer-day, for paired comparisons of two runs on the same sample
    # (``metrics.paired_mean_difference``).
    report["per_viewer_day"] = {"units": units, **{
        a: [round(x, 6) for v in recalls[a].values() for x in v] for a in ARMS}}
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _shown_before(engine, user_id: str, index) -> set[int]:
    """The videos the engine's live state has seen shown to the viewer, as item indices."""
    state = engine.live.user(user_id)
    if state is None:
        return set()
    return {index.item_of[i] for i in state.seen if i in index.item_of}


class _Online:
    """The online trainer's core in event time: its own live state from the training period
    (as the trainer builds it at start-up), the rows each day's events close, steps as they
    fill, and its models installed into serving before the next day's pages."""

    def __init__(self, engine, registry: ModelRegistry, split: TemporalSplit,
                 cfg: ServedDaysConfig):
        assert cfg.online is not None
        self.engine, self.base = engine, registry.load()
        self.learner, self.rows = event_time_learner(engine, self.base, split.train_events,
                                                     cfg.online, cfg.settle_ms)
        self.installs = 0

    def learn(self, events) -> None:
        for k, e in enumerate(events):
            closed = self.rows.add(e)
            if k + 1 == len(events) or events[k + 1].ts != e.ts:
                closed = closed + self.rows.flush(e.ts)
            self.learner.add(closed, e.ts)
            while self.learner.ready(e.ts):
                self.learner.step()

    def install(self) -> None:
        if not self.learner.steps:
            return
        learner, base = self.learner, self.base
        bundle = learner.serving_bundle(learner.retrieval_snapshot())
        self.installs += 1
        self.engine.models.install(f"{base.version}+{learner.steps}", bundle, {
            **base.meta, "base_version": base.version,
            "retrieval_version": f"{base.version}+r{learner.retrieval_steps}",
            **learner.serving_meta(base.version)})

    def figures(self) -> dict:
        return {"steps": self.learner.steps, "rows_trained": self.learner.rows_trained,
                "retrieval_steps": self.learner.retrieval_steps, "installs": self.installs}
