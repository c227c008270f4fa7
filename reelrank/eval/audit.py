"""Fairness and diversity audits: the same feed under different diversity and exploration
settings, on the synthetic world or on a replay of KuaiRand, measured by ``ExposureLedger``
(the code behind ``/v1/stats``) plus engagement.

- ``audit_simulation``: simulated viewers (``eval/simulator.py``) swipe through feeds served by
  the engine, day after day; every swipe's events go back in through ``engine.ingest_events``
  before the next page, as in production. Engagement: mean watch ratio per swipe (capped at 2),
  long views per view, likes per impression, and the hidden fit of what was served. (Swipes per
  session are no measure here: simulated viewers leave by fatigue alone, whatever they see.)
  Diversity and fairness from the ledger, plus the share of slots that went to creators who are
  new in the world (first upload in the last ``new_creator_days`` before the run).
- ``audit_replay`` (``reelrank.eval.fairness_replay``): the KuaiRand test days replayed in time
  order with live updates, each sampled viewer getting a feed per active day under each setting.

Settings are explicit objects (``FairnessSetting``); ``SETTINGS`` names the ones the benchmark
and ``reelrank audit`` compare: ``off`` (score order, no exploration), ``v0`` (what the engine did
before: never the same creator twice in a row, the fresh-uploads source), ``default`` (the
engine's defaults) and ``strong``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from reelrank.exposure import ExposureLedger, entropy_bits
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.explore import ExploreSource
from reelrank.pipeline.feed import FeedPipeline
from reelrank.pipeline.rerank import DiversityReranker, SpacingReranker
from reelrank.pipeline.side_effects import Calls
from reelrank.types import DAY_MS, VIEW_TYPES, Event, is_long_view

log = logging.getLogger(__name__)

SIM_POOLS = (20, 200, 2_000)  # audience pools scaled to a few hundred simulated viewers


@dataclass(frozen=True)
class FairnessSetting:
    """A named feed configuration: the re-ranker and the exploration source (None: off)."""

    name: str
    reranker: Callable[[], DiversityReranker]
    explore: Callable[[tuple[int, ...], dict], ExploreSource | None]
    v0_fresh: bool = False  # add the v0 fresh-uploads source (the engine before this work)
    description: str = ""

    def pipeline(self, engine, pools: tuple[int, ...], explore_kw: dict | None = None
                 ) -> FeedPipeline:
        from reelrank.pipeline.served import default_pipeline
        from reelrank.pipeline.sources import FreshSource

        explore = self.explore(pools, explore_kw or {})
        pipe = default_pipeline(engine.models, reranker=self.reranker(), explore=explore,
                                exploration=explore is not None)
        if self.v0_fresh:
            fresh = FreshSource()
            for mode in ("personalized", "non_personalized"):
                pipe.sources[mode].append(fresh)
        return pipe


def _explore(pools: tuple[int, ...], kw: dict) -> ExploreSource:
    # Exact mode: the pool is rescanned on every request, so an audit is reproducible.
    return ExploreSource(pools=pools, **{"refresh_events": 0, **kw})


SETTINGS: dict[str, FairnessSetting] = {s.name: s for s in (
    FairnessSetting("off", lambda: DiversityReranker(None, None, 0, 1.0, 0.0),
                    lambda pools, kw: None, description="score order; no exploration"),
    FairnessSetting("v0", SpacingReranker, lambda pools, kw: None, v0_fresh=True,
                    description="creator never twice in a row; fresh-uploads source"),
    FairnessSetting("default", DiversityReranker, _explore,
                    description="creator/sound run 1; <=3 of 5 on a topic; 10% exploration"),
    FairnessSetting("strong", lambda: DiversityReranker(1, 1, 5, 0.4, 0.2, 0.5), _explore,
                    description="creator/sound run 1; <=2 of 5 on a topic; 20% exploration"),
)}


def settings_named(names: str | list[str]) -> list[FairnessSetting]:
    names = names.split(",") if isinstance(names, str) else names
    unknown = [n for n in names if n.strip() not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(SETTINGS)}")
    return [SETTINGS[n.strip()] for n in names]


# -- the synthetic world ----------------------------------------------------------------------------
@dataclass
class _SwipeLog:
    swipes: int = 0
    views: int = 0
    long_views: int = 0
    likes: int = 0
    watch_ratio_sum: float = 0.0
    fit_sum: float = 0.0
    sessions: list[int] = field(default_factory=list)
    watched_topics: dict = field(default_factory=dict)  # viewer -> Counter of long-viewed topics


def audit_simulation(setting: FairnessSetting, *, users: int = 300, items: int = 4_000,
                     creators: int | None = None, days: int = 3, swipes: int = 40,
                     history_sessions: int = 3, history_swipes: int = 20, seed: int = 7,
                     pools: tuple[int, ...] = SIM_POOLS, new_creator_days: float = 3.0,
                     progress: bool = False) -> dict:
    """One setting on one seeded world; the same seed gives every setting the same world,
    history and viewers."""
    from reelrank.eval.baselines import build_engine, scratch_dir
    from reelrank.eval.simulator import GAP_MS, Simulator, build_world, generate_history

    started = time.perf_counter()
    world = build_world(n_users=users, n_items=items, n_creators=creators, seed=seed)
    history = list(generate_history(world, history_sessions, history_swipes, seed=seed))
    first_upload: dict[str, int] = {}
    for it in world.items:
        first_upload[it.creator_id] = min(first_upload.get(it.creator_id, it.created_at),
                                          it.created_at)
    new_creators = {c for c, t in first_upload.items()
                    if t >= world.start_ts - new_creator_days * DAY_MS}
    log_ = _SwipeLog()
    with scratch_dir() as tmp:
        engine = build_engine(world.items, history, Path(tmp))
        try:
            engine.pipeline = setting.pipeline(engine, pools)
            popularity = {i: float(engine.live.item_stats(i).views) for i in engine.catalog.ids()}
            ledger = _attach(engine, DAY_MS, world.start_ts)
            sim = Simulator(world)
            order = np.random.default_rng([seed, 11])
            total = days * len(world.users)
            with tqdm(total=total, desc=f"simulate {setting.name}", disable=not progress) as bar:
                for day in range(days):
                    day_start = world.start_ts + day * DAY_MS
                    for k in order.permutation(len(world.users)).tolist():
                        viewer = world.users[k]
                        ts = day_start + int(order.integers(0, DAY_MS // 2))
                        _session(engine, sim, viewer, world, ts, f"d{day}", swipes, log_,
                                 GAP_MS)
                        bar.update(1)
            figures = ledger.figures(engine.catalog, popularity)
        finally:
            engine.store.close()
    new_slots = sum(k for c, k in ledger.creator_slots.items() if c in new_creators)
    watched = [entropy_bits(c.values()) for c in log_.watched_topics.values() if c]
    figures.update({
        "setting": setting.name, "description": setting.description,
        "mean_watch_ratio": log_.watch_ratio_sum / max(log_.swipes, 1),
        "long_view_rate": log_.long_views / max(log_.views, 1),
        "like_rate": log_.likes / max(log_.swipes, 1),
        "mean_hidden_fit": log_.fit_sum / max(log_.swipes, 1),
        "swipes_per_session": float(np.mean(log_.sessions)) if log_.sessions else math.nan,
        "swipes": log_.swipes,
        "new_creator_exposure_share": new_slots / max(figures["slots"], 1),
        "new_creators": len(new_creators),
        "watched_topic_entropy_bits": float(np.mean([w for w in watched if not math.isnan(w)]))
        if watched else math.nan,
        "seconds": round(time.perf_counter() - started, 1),
        "world": {"users": users, "items": items, "creators": len(first_upload), "days": days,
                  "max_swipes_per_session": swipes, "seed": seed, "pools": list(pools),
                  "history": f"{history_sessions} sessions x {history_swipes} swipes per viewer"},
    })
    return figures


def _session(engine, sim, viewer, world, ts: int, tag: str, swipes: int, log_: _SwipeLog,
             gap_ms: tuple[int, int]) -> None:
    """One viewing session: pages from the engine, each swipe ingested before the next page."""
    state = sim.new_session(viewer, f"{tag}-{viewer.user_id}")
    while state.swipes < swipes:
        res = engine.feed(FeedRequest(viewer.user_id, n=sim.page_size, region=viewer.region,
                                      device=viewer.device, session_id=state.session_id))
        page = [i.item_id for i in res.items]
        if not page:
            break
        fits, _ = world.fits(viewer, np.array([world.index_of(i) for i in page]))
        for pos, item_id in enumerate(page):
            events = sim.respond(viewer, item_id, ts, state, request_id=res.request_id,
                                 position=pos)
            engine.ingest_events(events)
            _tally(log_, events, world, float(fits[pos]))
            ts = events[1].ts + int(state.rng.integers(*gap_ms))
            if state.swipes >= swipes or sim.leaves(viewer, state):
                log_.sessions.append(state.swipes)
                return
    log_.sessions.append(state.swipes)


def _tally(log_: _SwipeLog, events: list[Event], world, fit: float) -> None:
    log_.swipes += 1
    log_.fit_sum += fit
    for e in events:
        if e.type in VIEW_TYPES and e.type != "rewatch":
            duration = world.item(e.item_id).duration_ms
            log_.views += 1
            log_.watch_ratio_sum += min((e.watch_ms or 0) / duration, 2.0)
            if e.type == "play" and is_long_view(e.watch_ms, duration):
                log_.long_views += 1
                log_.watched_topics.setdefault(e.user_id, Counter())[world.topic_of(e.item_id)] += 1
        elif e.type == "like":
            log_.likes += 1


def _attach(engine, bucket_ms: int, origin_ms: int) -> ExposureLedger:
    """A ledger fed by the engine the way ``LiveStats`` feeds the service's."""
    ledger = ExposureLedger(bucket_ms=bucket_ms, max_buckets=1_000, origin_ms=origin_ms)
    engine.effects.add(Calls(
        "exposure ledger",
        feed=lambda r: ledger.observe_feed(r.user_id, r.trace.ts, r.items, engine.catalog),
        events=lambda evs: ledger.observe_events(evs, engine.catalog),
        erase=ledger.forget_user))
    return ledger


# -- reports ----------------------------------------------------------------------------------------
SIM_COLUMNS = (
    ("setting", "setting", "{}"), ("mean watch ratio", "mean_watch_ratio", "{:.3f}"),
    ("long-view rate", "long_view_rate", "{:.3f}"), ("like rate", "like_rate", "{:.4f}"),
    ("hidden fit", "mean_hidden_fit", "{:.3f}"),
    ("topic entropy/viewer-day (bits)", "per_user_topic_entropy_bits", "{:.2f}"),
    ("watched-topic entropy (bits)", "watched_topic_entropy_bits", "{:.2f}"),
    ("creator Gini", "creator_exposure_gini", "{:.3f}"),
    ("coverage", "catalog_coverage", "{:.3f}"), ("popularity bias", "popularity_bias", "{:.3f}"),
    ("new-creator share", "new_creator_exposure_share", "{:.3f}"),
    ("exploration share", "exploration_share", "{:.3f}"),
)


def markdown_table(rows: list[dict], columns=SIM_COLUMNS) -> str:
    head = "| " + " | ".join(c[0] for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, rule]
    for r in rows:
        cells = []
        for _, key, fmt in columns:
            v = r.get(key)
            cells.append("n/a" if v is None or (isinstance(v, float) and math.isnan(v))
                         else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def entropy_over_time(rows: list[dict]) -> str:
    """Per-viewer topic entropy by day, one column per setting."""
    names = [r["setting"] for r in rows]
    days = max(len(r["over_time"]) for r in rows)
    lines = ["| day | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for d in range(days):
        cells = []
        for r in rows:
            b = r["over_time"][d] if d < len(r["over_time"]) else {}
            v = b.get("per_user_topic_entropy_bits")
            cells.append("n/a" if v is None else f"{v:.2f}")
        lines.append(f"| {d + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- one command ------------------------------------------------------------------------------------
def run_audit(world: str, settings: list[FairnessSetting], out: Path | None = None, *,
              progress: bool = False, **options) -> tuple[list[dict], str]:
    """``world`` is ``synthetic`` or ``kuairand:PATH``; ``options`` go to ``audit_simulation``
    or ``audit_replay``. Returns the rows and a markdown report; with ``out``, also writes
    ``report.json`` and ``report.md`` there."""
    import json

    if world == "synthetic":
        rows = [audit_simulation(s, progress=progress, **options) for s in settings]
        columns = SIM_COLUMNS
        what = ("Synthetic world ({users} viewers, {items} videos, {creators} creators), "
                "{days} simulated days, sessions of up to {max_swipes_per_session} swipes, "
                "seed {seed}, exploration pools {pools}.").format(**rows[0]["world"])
    elif world.startswith("kuairand:"):
        from reelrank.eval.fairness_replay import KUAIRAND_COLUMNS, audit_replay

        rows = audit_replay(world.partition(":")[2], settings, progress=progress, **options)
        columns = KUAIRAND_COLUMNS
        r = rows[0]["replay"]
        what = (f"KuaiRand-Pure replay: cut-off {r['cutoff']}, {r['test_days']} test day(s), "
                f"{r['users']} sampled test viewers (seed {r['seed']}), "
                f"{r['test_events_replayed']} test events replayed with live updates, "
                f"exploration pools {r['pools']}.")
    else:
        raise ValueError(f"world must be 'synthetic' or 'kuairand:PATH', got {world!r}")
    text = "\n\n".join([what, markdown_table(rows, columns),
                        "Per-viewer topic entropy (bits) by day of the run:",
                        entropy_over_time(rows)]) + "\n"
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(_plain(rows), indent=2) + "\n")
        (out / "report.md").write_text(text)
    return rows, text


def _plain(value):
    """JSON-ready: NaN as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
