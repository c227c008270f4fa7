"""Real-time replay: the test days in time order through the engine the server runs.

An ``Engine`` is built on a temporary SQLite store holding the catalog and the training period's
events (``baselines.build_engine``: the engine's own ingest path). Then the test events are played
in time order, one timestamp at a time:

1. every impression at that timestamp is scored with ``engine.rank(user, items)`` -- one call per
   user, all of that user's items of the instant together -- *before* anything of that instant is
   revealed;
2. with live updates ON, all events of the instant (impressions, plays, likes, ...) then go in
   through ``engine.ingest_events``, exactly as the API would accept them; OFF, nothing does,
   so the engine stays as it was at the cut-off.

The report is GAUC of ``long_view`` (per user, impression-weighted) over all test impressions and
by position in the viewing session: a session is one user's impressions on one local day, the
position is their 1-based order in it, bucketed by ``session_position_bucket``. Whatever
ON gains over OFF, especially deep in sessions, is what reacting to the last swipes is worth.

With ``max_users`` (set on the split) only the sampled users' test events are replayed, so item
counters ON see only that part of the traffic.

``replay_trained`` does the same with the trained neural models (``train_from_store`` on the
training period, the ranker scoring through ``engine.rank``), in three arms:

- ``static``: nothing of the test days goes in (the model and the live state of the cut-off);
- ``frozen``: every event goes in through ``engine.ingest_events`` (live state, hence the
  ranker's history and counters, follow the stream) but the weights stay as trained;
- ``online``: as ``frozen``, and an ``OnlineLearner`` (the online trainer's core, on its own live
  state through ``features.RowStream``) learns from each impression once it has settled, and its
  ranker is swapped into serving (``ServingModels.install``) after every step, all in event time.

``online`` minus ``frozen`` is what the weight updates are worth; the report gives it with a
bootstrap interval over users (``paired_report``), as the two arms score the same impressions.
Every test user's events are replayed and learned from; with ``score_users`` only a seeded
sample of test users is scored (scoring dominates the run time), and the report says so. GAUC
is reported overall, by session position and by test day: a frozen model grows stale day by
day, an online one need not.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from reelrank import metrics
from reelrank.eval.baselines import build_engine, scratch_dir
from reelrank.eval.protocols import TemporalSplit, day_name
from reelrank.features import RowStream
from reelrank.models.bundle import ModelBundle
from reelrank.registry import ModelRegistry
from reelrank.store import new_live_state
from reelrank.train.batch import TrainConfig, train_from_store
from reelrank.train.learner import OnlineConfig, OnlineLearner
from reelrank.train.ranker import RankerConfig
from reelrank.train.retrieval import RetrievalConfig
from reelrank.types import Event

logger = logging.getLogger(__name__)

BUCKETS = ("1-5", "6-20", "21+")


def session_position_bucket(position: int) -> str:
    """Bucket of a 1-based position in a viewing session: ``"1-5"``, ``"6-20"`` or ``"21+"``."""
    if position < 1:
        raise ValueError(f"positions are 1-based, got {position}")
    if position <= 5:
        return "1-5"
    return "6-20" if position <= 20 else "21+"


@dataclass
class ReplayRun:
    live: bool
    scores: np.ndarray  # (n,) aligned with split.test; NaN where no impression event was found
    seconds: float
    events_ingested: int


def replay_scores(split: TemporalSplit, live: bool, progress: bool = False) -> ReplayRun:
    """Score every test impression of ``split`` as the engine would have at that moment."""
    test, index = split.test, split.index
    rows: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for k in range(len(test)):
        key = (index.user_ids[test.user[k]], index.item_ids[test.item[k]], int(test.ts[k]))
        rows[key].append(k)
    users = {index.user_ids[u] for u in np.unique(test.user)}
    events = [e for e in split.test_events if e.user_id in users]
    scores = np.full(len(test), np.nan)
    started = time.perf_counter()
    ingested = 0
    with scratch_dir() as tmp:
        engine = build_engine(split.dataset.items, split.train_events, Path(tmp), progress)
        try:
            desc = f"replay live={'on' if live else 'off'}"
            with tqdm(total=len(events), desc=desc, unit=" events", disable=not progress,
                      dynamic_ncols=True) as bar:
                for batch in _instants(events):
                    _score_instant(engine, batch, rows, scores)
                    if live:
                        ingested += len(engine.ingest_events(batch).accepted)
                    bar.update(len(batch))
        finally:
            engine.store.close()
    missing = int(np.isnan(scores).sum())
    if missing:
        logger.warning("replay: %d test impressions had no impression event to score", missing)
    return ReplayRun(live, scores, time.perf_counter() - started, ingested)


def _instants(events: list[Event]):
    """Runs of events sharing one timestamp (the events are in time order)."""
    start = 0
    for k in range(1, len(events) + 1):
        if k == len(events) or events[k].ts != events[start].ts:
            yield events[start:k]
            start = k


def _score_instant(engine, batch: list[Event], rows: dict, scores: np.ndarray,
                   long_view: np.ndarray | None = None,
                   context: np.ndarray | None = None, like: np.ndarray | None = None) -> None:
    """Scores (and, given ``long_view`` and ``like``, those heads' probabilities) of the
    instant's impressions in ``rows``. With ``context`` (the split's per-impression (device, region,
    source)), each request carries its first impression's context, as a client sends it."""
    wanted: dict[str, list[str]] = defaultdict(list)
    for e in batch:
        if e.type == "impression" and (e.user_id, e.item_id, e.ts) in rows:
            wanted[e.user_id].append(e.item_id)
    for user, items in wanted.items():
        device = region = source = None
        if context is not None:
            device, region, source = context[rows[(user, items[0], batch[0].ts)][0]]
        result = engine.rank(user, list(dict.fromkeys(items)), region=region, device=device,
                             source=source)
        by_item = {s.item_id: s for s in result.items}
        ts = batch[0].ts
        for item in items:
            for k in rows[(user, item, ts)]:
                scores[k] = by_item[item].score
                if long_view is not None:
                    long_view[k] = by_item[item].predictions.get("long_view", np.nan)
                if like is not None:
                    like[k] = by_item[item].predictions.get("like", np.nan)


def _position_buckets(split: TemporalSplit) -> np.ndarray:
    """Each test impression's session-position bucket (``BUCKETS``)."""
    return np.array([session_position_bucket(int(p)) for p in split.test.position])


def position_report(split: TemporalSplit, scores: np.ndarray) -> dict:
    """GAUC (and AUC) of long_view overall and by session-position bucket."""
    test = split.test
    ok = ~np.isnan(scores)
    y = test.labels["long_view"]
    buckets = _position_buckets(split)
    out = {"overall": _gauc_entry(test.user[ok], y[ok], scores[ok])}
    out["by_position"] = {
        b: _gauc_entry(test.user[ok & (buckets == b)], y[ok & (buckets == b)],
                       scores[ok & (buckets == b)])
        for b in BUCKETS
    }
    return out


def paired_report(split: TemporalSplit, a: np.ndarray, b: np.ndarray,
                  n_boot: int = 2_000) -> dict:
    """GAUC of scores ``a`` minus that of ``b`` on the impressions both scored, overall, by test
    day, by session position and by whether the viewer has training examples, each with a
    bootstrap interval over users (``metrics.paired_gauc_difference``): two arms replayed on
    the same impressions differ by less than the day-to-day spread, so only a paired
    comparison can tell a gain from noise."""
    test = split.test
    known = np.isin(test.user, np.unique(split.train.user))
    ok = ~np.isnan(a) & ~np.isnan(b)
    y = test.labels["long_view"]
    buckets = _position_buckets(split)

    def diff(mask: np.ndarray) -> dict:
        m = ok & mask
        return metrics.paired_gauc_difference(test.user[m], y[m], a[m], b[m], n_boot=n_boot)

    return {"overall": diff(np.ones(len(test), dtype=bool)),
            "by_day": {day_name(int(d)): diff(test.day == d) for d in np.unique(test.day)},
            "by_position": {p: diff(buckets == p) for p in BUCKETS},
            "by_viewer": {"in training": diff(known), "new": diff(~known)}}


def _gauc_entry(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> dict:
    value, n_users, n_imp = metrics.gauc_detail(users, labels, scores)
    return {"gauc": value, "gauc_users": n_users, "gauc_impressions": n_imp,
            "auc": metrics.auc(labels, scores), "impressions": int(len(labels)),
            "positives": int(labels.sum())}


def run_replay(split: TemporalSplit, progress: bool = False) -> dict:
    """The replay ON and OFF, with the per-position report of each and their wall times."""
    report: dict = {}
    for live in (True, False):
        run = replay_scores(split, live, progress)
        name = "live_on" if live else "live_off"
        report[name] = position_report(split, run.scores)
        report[name]["seconds"] = round(run.seconds, 2)
        report[name]["events_ingested"] = run.events_ingested
        logger.info("replay %s: GAUC %.4f in %.1fs", name,
                    report[name]["overall"]["gauc"], run.seconds)
    report["session"] = "one user's impressions on one local day; position 1-based in time order"
    return report


# -- the trained models, online updates on and off ----------------------------------------------

ARMS = ("static", "frozen", "online")


@dataclass
class TrainedReplayConfig:
    # Only the ranker scores impressions, so retrieval is not trained for the replay.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        retrieval=RetrievalConfig(epochs=0), ranker=RankerConfig(epochs=1), holdout=0.0))
    # In event time a step waits for a full batch or a minute: on KuaiRand's traffic (an
    # impression every few seconds) that is a step with about a dozen rows each minute.
    online: OnlineConfig = field(default_factory=lambda: OnlineConfig(
        train_retrieval=False, max_wait_ms=60_000))
    settle_ms: int = 1_000
    # New weights go to serving at most this often (event time): copying the ranker for serving
    # costs tens of milliseconds, and a minute of KuaiRand traffic changes little.
    install_every_ms: int = 300_000
    score_users: int | None = None  # score a seeded sample of this many test users
    seed: int = 0
    # Each /v1/rank request carries its impressions' logged context (device, region, traffic
    # source), as a client replaying them would send it; False: none.
    context: bool = True


def replay_trained(split: TemporalSplit, cfg: TrainedReplayConfig | None = None,
                   arms: tuple[str, ...] = ARMS, progress: bool = False) -> dict:
    """Train on the split's training period once, then replay the test days in each arm."""
    cfg = cfg or TrainedReplayConfig()
    wanted = _wanted_rows(split, cfg.score_users, cfg.seed)
    report: dict = {"arms": {}, "config": {"train": asdict(cfg.train), "online": asdict(cfg.online),
                                            "settle_ms": cfg.settle_ms,
                                            "install_every_ms": cfg.install_every_ms,
                                            "context": cfg.context}}
    with scratch_dir() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        engine = build_engine(split.dataset.items, split.train_events, root / "train", progress)
        registry = ModelRegistry(root / "models")
        try:
            result = train_from_store(engine.store, registry, cfg.train, progress=progress)
        finally:
            engine.store.close()
        report["train"] = {"version": result.version, "seconds": round(
            time.perf_counter() - started, 1), "rows": result.metrics.get("rows_train"),
            "ranker_epochs": result.metrics.get("ranker_epochs"),
            "ranker_holdout_by_epoch": result.metrics.get("ranker_holdout_by_epoch")}
        runs: dict = {}
        scores_of: dict = {}
        heads_of: dict = {}
        for arm in arms:
            run = replay_arm(split, arm, registry, wanted, cfg, root / arm, progress)
            scores, head = run.pop("scores"), run.pop("long_view_head")
            like = run.pop("like_head")
            scores_of[arm], heads_of[arm] = scores, head
            if "install_ts" in run:
                runs["online"] = run.pop("install_ts")
            entry = position_report(split, scores)
            entry["by_day"] = day_report(split, scores)
            # The feed orders by the value formula (every head); the long-view head alone
            # shows whether a change comes from long-view ranking or from the other heads.
            entry["long_view_head"] = position_report(split, head)
            entry["long_view_head"]["by_day"] = day_report(split, head)
            # GAUC of the like head on the like labels: the second head.
            entry["like_head"] = {"overall": _gauc_entry(
                *_scored(split, like, "like")), "by_day": day_report(split, like, "like")}
            entry.update(run)
            report["arms"][arm] = entry
            logger.info("trained replay %s: GAUC %.4f in %.0fs", arm, entry["overall"]["gauc"],
                        entry["seconds"])
    if "online" in runs:
        # GAUC pools a viewer's impressions of a whole day, scored by different versions of an
        # online model; a change that moves all of a version's scores alike changes it without
        # changing any ranking a feed makes. Here only impressions scored while the same online
        # version served are compared, in every arm alike.
        period = np.searchsorted(np.array(runs["online"]), split.test.ts, side="right")
        groups = split.test.user.astype(np.int64) * (len(runs["online"]) + 1) + period
        for arm in report["arms"]:
            report["arms"][arm]["same_version"] = {
                what: _gauc_entry(groups[ok], split.test.labels["long_view"][ok], s[ok])
                for what, s in (("value", scores_of[arm]), ("long_view_head", heads_of[arm]))
                for ok in [~np.isnan(s)]}
    if "online" in scores_of and "frozen" in scores_of:
        report["online_vs_frozen"] = {
            what: paired_report(split, pair["online"], pair["frozen"])
            for what, pair in (("value", scores_of), ("long_view_head", heads_of))}
    report["scored_users"] = int(len(np.unique(split.test.user[_scored_mask(split, wanted)])))
    report["test_users"] = int(len(np.unique(split.test.user)))
    report["score_users"] = cfg.score_users
    return report


def _wanted_rows(split: TemporalSplit, n_users: int | None, seed: int) -> dict:
    test, index = split.test, split.index
    users = np.unique(test.user)
    if n_users is not None and n_users < len(users):
        users = np.sort(np.random.default_rng(seed).choice(users, n_users, replace=False))
    keep = set(users.tolist())
    rows: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for k in range(len(test)):
        if int(test.user[k]) in keep:
            key = (index.user_ids[test.user[k]], index.item_ids[test.item[k]], int(test.ts[k]))
            rows[key].append(k)
    return rows


def _scored_mask(split: TemporalSplit, wanted: dict) -> np.ndarray:
    mask = np.zeros(len(split.test), dtype=bool)
    for ks in wanted.values():
        mask[ks] = True
    return mask


def event_time_learner(engine, base, train_events: list[Event], online: OnlineConfig,
                       settle_ms: int) -> tuple[OnlineLearner, RowStream]:
    """The online trainer's core on a copy of the published version ``base``, with its own
    live state (``RowStream``) built from the training period's events, as at its start-up."""
    learner = OnlineLearner(ModelBundle.from_state(base.state), engine.catalog, online)
    rows = RowStream(new_live_state(engine.catalog), history_len=online.history_len,
                     window_ms=3_600_000, settle_ms=settle_ms)
    for e in train_events:
        learner.observe(rows.add(e))
    return learner, rows


def replay_arm(split: TemporalSplit, arm: str, registry: ModelRegistry, wanted: dict,
                cfg: TrainedReplayConfig, directory: Path, progress: bool) -> dict:
    """One arm over the test days with the registry's latest (base) version: the scores of the
    impressions in ``wanted`` (NaN elsewhere), the wall time, and the learner's figures."""
    started = time.perf_counter()
    engine = build_engine(split.dataset.items, split.train_events, directory, progress)
    engine.registry = engine.models.registry = registry
    engine.models.refresh()
    base = registry.load()
    scores = np.full(len(split.test), np.nan)
    head = np.full(len(split.test), np.nan)
    like = np.full(len(split.test), np.nan)
    learner = rows = None
    installs = installed = 0
    last_install, install_ts = split.cutoff_ms, []
    if arm == "online":
        learner, rows = event_time_learner(engine, base, split.train_events, cfg.online,
                                           cfg.settle_ms)
    try:
        with tqdm(total=len(split.test_events), desc=f"replay {arm}", unit=" events",
                  disable=not progress, dynamic_ncols=True) as bar:
            for batch in _instants(split.test_events):
                _score_instant(engine, batch, wanted, scores, head,
                               split.test.context if cfg.context else None, like)
                if arm != "static":
                    engine.ingest_events(batch)
                if learner is not None:
                    now = batch[0].ts
                    closed = [r for e in batch for r in rows.add(e)] + rows.flush(now)
                    learner.add(closed, now)
                    while learner.ready(now):
                        learner.step()
                    if learner.steps > installed and now - last_install >= cfg.install_every_ms:
                        installed, last_install = learner.steps, now
                        installs += 1
                        install_ts.append(now)
                        bundle = learner.serving_bundle(engine.models.current.bundle.retrieval)
                        engine.models.install(f"{base.version}+{learner.steps}", bundle, {
                            **base.meta, "retrieval_version": base.version,
                            **learner.serving_meta(base.version)})
                bar.update(len(batch))
    finally:
        engine.store.close()
    out = {"scores": scores, "long_view_head": head, "like_head": like,
           "seconds": round(time.perf_counter() - started, 1)}
    if learner is not None:
        out["online"] = {"steps": learner.steps, "rows_trained": learner.rows_trained,
                         "installs": installs, "join": asdict(rows.joiner.stats)}
        out["install_ts"] = install_ts
    return out


def _scored(split: TemporalSplit, scores: np.ndarray, task: str):
    ok = ~np.isnan(scores)
    return split.test.user[ok], split.test.labels[task][ok], scores[ok]


def day_report(split: TemporalSplit, scores: np.ndarray, task: str = "long_view") -> dict:
    """GAUC of ``task`` per local test day, over the scored impressions."""
    test, ok = split.test, ~np.isnan(scores)
    y = test.labels[task]
    return {day_name(int(d)): _gauc_entry(test.user[ok & (test.day == d)],
                                          y[ok & (test.day == d)], scores[ok & (test.day == d)])
            for d in np.unique(test.day)}
