"""Diversity and exploration settings on a real log: the KuaiRand test days replayed in time
order through the engine, as ``replay.py`` does, with feeds served under each setting.

The engine is built from the training days (``baselines.build_engine``). The test events are
then played one timestamp at a time, and before anything of that instant is revealed:

1. every sampled viewer's impressions at that instant are scored with ``engine.rank``; the GAUC
   of ``long_view`` over those scores is the replay's own figure. Re-ranking does not change a
   score, and the served feeds below do not feed back (the events come from the log), so it is
   one figure for all settings: the accuracy the diversity rules leave untouched;
2. at a sampled viewer's first impression of a local day, each setting's pipeline builds a
   10-item feed for them (``FeedPipeline.build``: the sources, filters, scorer and that
   setting's re-ranker). These served lists give the exposure figures (``ExposureLedger``), and
   a hit rate: the share of served items the viewer went on to long-view later in the log;
3. at a sampled viewer's first test impression, their whole logged test slate (every video the
   platform showed them on the test days, at least ``slate_min``) is scored and re-ranked by each
   setting; since every slate item was really shown, its labels are known, and NDCG@10 of the
   long views and of the watch ratios in the re-ranked order is the engagement proxy (position
   effects of the original feed aside).

Then all of the instant's events (every viewer's, not only the sample) go in through
``engine.ingest_events``: live updates on, as the service runs.

KuaiRand's videos were all uploaded by 2022-04-11, weeks before any test day, so "new" here
means new to the audience: a video is explored while it has few impressions (``pools``), and a
creator is new while their videos together have had fewer than ``new_creator_impressions``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from reelrank import metrics
from reelrank.eval.baselines import build_engine, scratch_dir
from reelrank.eval.protocols import load_dataset, local_day, temporal_split
from reelrank.exposure import ExposureLedger, entropy_bits
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.rank import Scored
from reelrank.topics import NO_TOPIC, topic_of
from reelrank.types import DAY_MS

log = logging.getLogger(__name__)

# KuaiRand-Pure before 2022-05-01: the median video has 3 impressions in six days, 85% have
# fewer than 20; the pools and the new-creator line are set to that traffic.
KUAIRAND_POOLS = (5, 25, 125)


def audit_replay(path: str | Path, settings: list, *, cutoff: str = "2022-05-01",
                 test_days: int = 4, max_users: int | None = 3_000, seed: int = 0,
                 pools: tuple[int, ...] = KUAIRAND_POOLS, new_creator_impressions: int = 5,
                 slate_min: int = 5, progress: bool = False) -> list[dict]:
    started = time.perf_counter()
    ds = load_dataset(f"kuairand:{path}")
    split = temporal_split(ds, cutoff, test_days=test_days, max_users=max_users, seed=seed)
    test, index = split.test, split.index
    users = {index.user_ids[u] for u in np.unique(test.user)}
    slates: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)  # user -> item -> labels
    future: dict[str, list[tuple[int, str]]] = defaultdict(list)  # user -> (ts, long-viewed)
    rows: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for k in range(len(test)):
        u, i, ts = index.user_ids[test.user[k]], index.item_ids[test.item[k]], int(test.ts[k])
        lv, wr = int(test.labels["long_view"][k]), min(float(test.watch_ratio[k]), 2.0)
        old = slates[u].get(i, (0, 0.0))
        slates[u][i] = (max(old[0], lv), max(old[1], wr))
        if lv:
            future[u].append((ts, i))
        rows[(u, i, ts)].append(k)
    explore_kw = dict(max_age_ms=None, new_creator_max_age_ms=None,
                      new_creator_max_impressions=new_creator_impressions)
    scores = np.full(len(test), np.nan)
    out = []
    with scratch_dir() as tmp:
        engine = build_engine(ds.items, split.train_events, Path(tmp), progress)
        try:
            pipes = {s.name: s.pipeline(engine, pools, explore_kw) for s in settings}
            ledgers = {s.name: ExposureLedger(bucket_ms=DAY_MS, max_buckets=1_000,
                                              origin_ms=split.cutoff_ms)
                       for s in settings}
            popularity = {i: float(engine.live.item_stats(i).views) for i in engine.catalog.ids()}
            new_creators = _new_creators(engine, new_creator_impressions)
            hits = {s.name: [0, 0] for s in settings}
            slate_stats: dict[str, list[tuple[float, float, float]]] = {s.name: [] for s in settings}
            fed: set[tuple[str, int]] = set()
            scored_slate: set[str] = set()
            events = split.test_events
            with tqdm(total=len(events), desc="fairness replay", disable=not progress) as bar:
                for batch in _instants(events):
                    ts = batch[0].ts
                    wanted: dict[str, list[str]] = defaultdict(list)
                    for e in batch:
                        if e.type == "impression" and e.user_id in users:
                            wanted[e.user_id].append(e.item_id)
                    for user, items in wanted.items():
                        ranked = engine.rank(user, list(dict.fromkeys(items)))
                        by_item = {s.item_id: s.score for s in ranked.items}
                        for item in items:
                            for k in rows.get((user, item, ts), ()):
                                scores[k] = by_item[item]
                        day = int(local_day(ts, ds.tz_hours))
                        if (user, day) not in fed:
                            fed.add((user, day))
                            for name, pipe in pipes.items():
                                _serve(engine, pipe, ledgers[name], hits[name], user, ts,
                                       future.get(user, []))
                        if user not in scored_slate and len(slates[user]) >= slate_min:
                            scored_slate.add(user)
                            for s in settings:
                                slate_stats[s.name].append(
                                    _rerank_slate(engine, pipes[s.name], user, slates[user]))
                    engine.ingest_events(batch)
                    bar.update(len(batch))
        finally:
            engine.store.close()
    ok = ~np.isnan(scores)
    gauc, gauc_users, _ = metrics.gauc_detail(test.user[ok], test.labels["long_view"][ok],
                                              scores[ok])
    for s in settings:
        fig = ledgers[s.name].figures(engine.catalog, popularity)
        new_slots = sum(k for c, k in ledgers[s.name].creator_slots.items() if c in new_creators)
        slate = np.array(slate_stats[s.name]) if slate_stats[s.name] else np.full((1, 3), np.nan)
        fig.update({
            "setting": s.name, "description": s.description,
            "gauc_long_view": gauc, "gauc_users": gauc_users,
            "served_hit_rate": hits[s.name][0] / max(hits[s.name][1], 1),
            "slate_ndcg10_long_view": float(np.nanmean(slate[:, 0])),
            "slate_ndcg10_watch_ratio": float(np.nanmean(slate[:, 1])),
            "slate_top10_topic_entropy_bits": float(np.nanmean(slate[:, 2])),
            "slates": len(slate_stats[s.name]),
            # Paired with the first setting, viewer by viewer: (mean difference, standard error).
            "slate_vs_first": _paired(slate_stats[settings[0].name], slate_stats[s.name]),
            "new_creator_exposure_share": new_slots / max(fig["slots"], 1),
            "new_creators": len(new_creators),
        })
        out.append(fig)
    info = {"cutoff": cutoff, "test_days": test_days, "max_users": max_users, "seed": seed,
            "users": len(users), "pools": list(pools),
            "new_creator_impressions": new_creator_impressions, "slate_min": slate_min,
            "test_events_replayed": len(split.test_events),
            "seconds": round(time.perf_counter() - started, 1)}
    for fig in out:
        fig["replay"] = info
    return out


def _serve(engine, pipe, ledger: ExposureLedger, hit: list[int], user: str, ts: int,
           future: list[tuple[int, str]]) -> None:
    res = pipe.build(engine.context(FeedRequest(user, n=10)))
    ledger.observe_feed(user, ts, res.items, engine.catalog)
    later = {i for t, i in future if t >= ts}
    hit[0] += sum(i.item_id in later for i in res.items)
    hit[1] += len(res.items)


def _rerank_slate(engine, pipe, user: str, slate: dict[str, tuple[int, float]]
                  ) -> tuple[float, float, float]:
    ids = sorted(slate)
    ctx = engine.context(FeedRequest(user, n=len(ids)))
    scored = engine.rank(user, ids).items
    explore = next((s for s in pipe.sources.get("personalized", ())
                    if hasattr(s, "annotate")), None)
    if explore is not None:
        marked = {c.item_id: c for c in explore.annotate(ctx, [s.candidate for s in scored])}
        scored = [Scored(marked[s.item_id], s.score, s.predictions, s.reasons) for s in scored]
    order = [s.item_id for s in pipe.reranker.rerank(ctx, scored, len(ids)).items]
    placed = set(order)
    # What the re-ranker left for a later page goes last, in score order.
    order += [s.item_id for s in sorted(scored, key=lambda s: (-s.score, s.item_id))
              if s.item_id not in placed]
    lv = metrics.ndcg_at_k([slate[i][0] for i in order], 10)
    wr = metrics.ndcg_at_k([slate[i][1] for i in order], 10)
    topics = defaultdict(int)
    for i in order[:10]:
        topics[topic_of(engine.catalog.get(i)) or NO_TOPIC] += 1
    return lv, wr, entropy_bits(topics.values())


def _paired(base: list[tuple], other: list[tuple]) -> dict:
    out = {}
    for col, name in ((0, "ndcg10_long_view"), (1, "ndcg10_watch_ratio")):
        d = np.array([o[col] - b[col] for b, o in zip(base, other)], dtype=np.float64)
        d = d[~np.isnan(d)]
        out[name] = ((float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))))
                     if len(d) > 1 else (float("nan"), float("nan")))
    return out


def _new_creators(engine, max_impressions: int) -> set[str]:
    shown: dict[str, int] = defaultdict(int)
    for item_id in engine.catalog.ids():
        item = engine.catalog.get(item_id)
        shown[item.creator_id] += engine.live.item_stats(item_id).impressions
    return {c for c, k in shown.items() if k < max_impressions}


def _instants(events):
    start = 0
    for k in range(1, len(events) + 1):
        if k == len(events) or events[k].ts != events[start].ts:
            yield events[start:k]
            start = k


KUAIRAND_COLUMNS = (
    ("setting", "setting", "{}"), ("GAUC long view", "gauc_long_view", "{:.4f}"),
    ("slate NDCG@10 long view", "slate_ndcg10_long_view", "{:.4f}"),
    ("slate NDCG@10 watch ratio", "slate_ndcg10_watch_ratio", "{:.4f}"),
    ("served hit rate", "served_hit_rate", "{:.4f}"),
    ("topic entropy/viewer-day (bits)", "per_user_topic_entropy_bits", "{:.2f}"),
    ("slate top-10 topic entropy", "slate_top10_topic_entropy_bits", "{:.2f}"),
    ("creator Gini", "creator_exposure_gini", "{:.3f}"),
    ("coverage", "catalog_coverage", "{:.3f}"), ("popularity bias", "popularity_bias", "{:.3f}"),
    ("new-creator share", "new_creator_exposure_share", "{:.3f}"),
    ("exploration share", "exploration_share", "{:.3f}"),
)
