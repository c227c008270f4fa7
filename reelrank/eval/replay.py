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
position is their 1-based order in it, bucketed by ``metrics.session_position_bucket``. Whatever
ON gains over OFF, especially deep in sessions, is what reacting to the last swipes is worth.

With ``max_users`` (set on the split) only the sampled users' test events are replayed, so item
counters ON see only that part of the traffic.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from reelrank.eval import metrics
from reelrank.eval.baselines import build_engine, scratch_dir
from reelrank.eval.protocols import TemporalSplit
from reelrank.types import Event

logger = logging.getLogger(__name__)

BUCKETS = ("1-5", "6-20", "21+")


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


def _score_instant(engine, batch: list[Event], rows: dict, scores: np.ndarray) -> None:
    wanted: dict[str, list[str]] = defaultdict(list)
    for e in batch:
        if e.type == "impression" and (e.user_id, e.item_id, e.ts) in rows:
            wanted[e.user_id].append(e.item_id)
    for user, items in wanted.items():
        result = engine.rank(user, list(dict.fromkeys(items)))
        by_item = {s.item_id: s.score for s in result.items}
        ts = batch[0].ts
        for item in items:
            for k in rows[(user, item, ts)]:
                scores[k] = by_item[item]


def position_report(split: TemporalSplit, scores: np.ndarray) -> dict:
    """GAUC (and AUC) of long_view overall and by session-position bucket."""
    test = split.test
    ok = ~np.isnan(scores)
    y = test.labels["long_view"]
    buckets = np.array([metrics.session_position_bucket(int(p)) for p in test.position])
    out = {"overall": _gauc_entry(test.user[ok], y[ok], scores[ok])}
    out["by_position"] = {
        b: _gauc_entry(test.user[ok & (buckets == b)], y[ok & (buckets == b)],
                       scores[ok & (buckets == b)])
        for b in BUCKETS
    }
    return out


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
