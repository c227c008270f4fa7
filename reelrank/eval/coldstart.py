"""Cold start on the synthetic world: how many swipes the feed needs to find a new viewer's taste.

The world (``eval.simulator``) gets a background history; the neural models are trained on it
(``train_from_store``). Then new viewers, unknown to everything, arrive one after another over
``arrival_span_ms`` and each swipes ``swipes`` videos, in a discrete-event loop in event time:
whenever a viewer's next swipe is due, their page is asked for if it is used up (``page_size``
videos from the engine's feed, as an app prefetches), the simulated viewer swipes the next
video, and the swipe's events go in through ``engine.ingest_events``. The arms:

- ``reelrank``: the engine as served, with online updates: an ``OnlineLearner`` learns from every
  swipe of every new viewer once it settles, and its versions are swapped into serving in event
  time (``reelrank.eval.replay`` does the same on KuaiRand);
- ``reelrank_frozen``: the same engine with the weights as trained (live state still moves: the
  user tower and the ranker read the viewer's live history at each request);
- ``most_popular``: the videos with the most positive engagement in the background history, in
  that order, each shown once.

Two references that are not ReelRank, to read the curves against (``REFERENCE_ARMS``, run on
request):

- ``topic_bandit``: a policy built to follow a new viewer's engagement and nothing else, from
  what an engine can see: each video's smoothed rate of positive engagement in the background
  history, whether it was posted in the viewer's region, and its ``topic`` attribute. Per
  topic, a Beta posterior of the viewer's positive rate (prior Beta(1, 3)); each page orders
  the unseen videos by that base plus a Thompson draw of their topic's rate (the weights of
  the base, 3 x rate + 0.5 x same region, and the prior were set by hand after a few ad-hoc
  tries on this world). If the world rewarded following a new viewer's taste within a few
  swipes, this is where it would show;
- ``oracle``: the unseen video with the highest hidden fit, every swipe. Nothing can run it:
  it is the ceiling.

Per swipe number, over the new viewers: the mean watch ratio (capped at 2, as the engine caps
it), the like rate, and the mean hidden fit (``World.true_affinity``: what the simulator's viewer
actually thinks of the video, without the outcome noise), and the share of videos in the
viewer's language (the world penalises the others; a diagnostic). Two measures say how the feed
follows the viewer: ``top_topics``, the share of videos in the viewer's two strongest (hidden)
topics, which is finding their taste; and ``engaged_topics``, the share of videos in a topic the
viewer engaged with (a long view or a like: ``positive``) on an earlier swipe, which is following
what they did. The second is behaviour, not quality: a feed that only repeated the first topic
a viewer happened to watch to the end would score high on it and low on fit. Fatigue and
leaving are off, so a curve moves only with what the feed shows, and every viewer contributes
to every swipe number.
``swipes_to_80`` is the first swipe at which the trailing mean over ``smooth`` swipes reaches
80% of the arm's final level (the mean of its last ``final_swipes``), and also 80% of the way
from its first swipe's level to that final level.
"""

from __future__ import annotations

import heapq
import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from reelrank.eval.baselines import scratch_dir
from reelrank.eval.simulator import Simulator, World, build_world, generate_history
from reelrank.features import RowStream
from reelrank.importers import import_into
from reelrank.models.bundle import ModelBundle
from reelrank.pipeline.context import FeedRequest
from reelrank.registry import ModelRegistry
from reelrank.store import new_live_state, open_store
from reelrank.train.batch import TrainConfig, train_from_store
from reelrank.train.learner import OnlineConfig, OnlineLearner
from reelrank.train.ranker import RankerConfig
from reelrank.train.retrieval import RetrievalConfig
from reelrank.topics import NO_TOPIC, topic_of
from reelrank.types import is_long_view

log = logging.getLogger(__name__)

ARMS = ("reelrank", "reelrank_frozen", "most_popular")
REFERENCE_ARMS = ("topic_bandit", "oracle")
MEASURES = ("watch_ratio", "like", "positive", "affinity", "same_language", "top_topics",
            "engaged_topics")
POSITIVE = {"like", "share", "comment", "follow"}


@dataclass
class ColdStartConfig:
    items: int = 5_000
    background_users: int = 1_000
    sessions: int = 2  # background sessions per viewer
    session_swipes: int = 20
    new_viewers: int = 200
    swipes: int = 40
    page_size: int = 4
    arrival_span_ms: int = 20 * 60_000
    seed: int = 7
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        retrieval=RetrievalConfig(epochs=3), ranker=RankerConfig(epochs=1), holdout=0.0))
    online: OnlineConfig = field(default_factory=lambda: OnlineConfig(max_wait_ms=5_000))
    settle_ms: int = 1_000
    retrieval_every_ms: int = 5 * 60_000  # event time between retrieval versions (index rebuild)
    index_kind: str = "ann"
    smooth: int = 5
    final_swipes: int = 10


def run_coldstart(cfg: ColdStartConfig | None = None, arms: tuple[str, ...] = ARMS,
                  progress: bool = False) -> dict:
    cfg = cfg or ColdStartConfig()
    started = time.perf_counter()
    world = build_world(n_users=cfg.background_users, n_items=cfg.items, seed=cfg.seed)
    report: dict = {"config": _describe(cfg), "arms": {}}
    with scratch_dir() as tmp:
        base = Path(tmp) / "base"
        store = open_store(base / "data")
        try:
            history = generate_history(world, cfg.sessions, cfg.session_swipes, seed=cfg.seed)
            imported = import_into(store, world.items, history, progress=progress,
                                   desc="background")
            t0 = time.perf_counter()
            version = None
            if any(a in ("reelrank", "reelrank_frozen") for a in arms):
                version = train_from_store(store, ModelRegistry(base / "models"), cfg.train,
                                           progress=progress).version
            engagement = _engagement(store)
        finally:
            store.close()
        report["world"] = {"items": len(world.items), "background_events": imported.events,
                           "model_version": version,
                           "train_seconds": round(time.perf_counter() - t0, 1)}
        finals: dict[str, dict] = {}
        for arm in arms:
            t1 = time.perf_counter()
            if arm == "most_popular":
                values, extra = _run_popular(world, cfg, _popularity(engagement))
            elif arm in REFERENCE_ARMS:
                values, extra = _run_reference(world, cfg, arm, engagement)
            else:
                directory = Path(tmp) / arm
                shutil.copytree(base, directory)
                values, extra = _run_engine(world, cfg, directory, arm == "reelrank", progress)
            report["arms"][arm] = {**curves(values, cfg), **extra,
                                   "seconds": round(time.perf_counter() - t1, 1)}
            finals[arm] = {m: _per_viewer_final(a, cfg) for m, a in values.items()}
            log.info("cold start %s: final like rate %.3f", arm,
                     report["arms"][arm]["like"]["final"])
    if "reelrank" in finals and "reelrank_frozen" in finals:
        report["online_vs_frozen"] = paired_finals(finals["reelrank"], finals["reelrank_frozen"])
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def _describe(cfg: ColdStartConfig) -> dict:
    out = asdict(cfg)
    out["train"] = {"retrieval_epochs": cfg.train.retrieval.epochs,
                    "ranker_epochs": cfg.train.ranker.epochs}
    return out


def _viewers(world: World, cfg: ColdStartConfig) -> list:
    return [world.new_viewer(f"new{k}", seed=10_000 + k) for k in range(cfg.new_viewers)]


def _schedule(world: World, cfg: ColdStartConfig) -> list[tuple[int, int]]:
    """(first swipe time, viewer number): arrivals spread over the span, the same every arm."""
    rng = np.random.default_rng([cfg.seed, 99])
    offsets = np.sort(rng.integers(0, cfg.arrival_span_ms, cfg.new_viewers))
    return [(world.start_ts + int(o), k) for k, o in enumerate(offsets)]


class _Recorder:
    """The measures of every swipe of one arm, and the topics each viewer has engaged with."""

    def __init__(self, cfg: ColdStartConfig):
        self.values = {m: np.full((cfg.new_viewers, cfg.swipes), np.nan) for m in MEASURES}
        self.engaged: list[set[str]] = [set() for _ in range(cfg.new_viewers)]

    def record(self, world: World, viewer, item_id: str, events, k: int, pos: int) -> bool:
        """Note viewer ``k``'s swipe number ``pos`` (0-based); whether it was positive."""
        values, item, topic = self.values, world.item(item_id), world.topic_of(item_id)
        watch = max((e.watch_ms or 0) for e in events if e.type in ("play", "skip"))
        liked = any(e.type == "like" for e in events)
        positive = liked or any(e.type == "play" and is_long_view(e.watch_ms, item.duration_ms)
                                for e in events)
        values["watch_ratio"][k, pos] = min(2.0, watch / item.duration_ms)
        values["like"][k, pos] = float(liked)
        values["positive"][k, pos] = float(positive)
        values["affinity"][k, pos] = world.true_affinity(viewer.user_id, item_id)
        values["same_language"][k, pos] = float(item.language == viewer.language)
        values["top_topics"][k, pos] = float(topic in world.strong_topics(viewer.user_id, 2))
        values["engaged_topics"][k, pos] = float(topic in self.engaged[k])  # earlier swipes only
        if positive:
            self.engaged[k].add(topic)
        return positive


def _run_engine(world: World, cfg: ColdStartConfig, directory: Path, online: bool,
                progress: bool) -> tuple[dict, dict]:
    from reelrank.engine import Engine

    store = open_store(directory / "data")
    registry = ModelRegistry(directory / "models")
    engine = Engine(store, registry=registry, index_kind=cfg.index_kind).load().for_offline()
    base = registry.load()
    learner = rows = None
    sources: Counter = Counter()
    figures = {"installs": 0, "retrieval_installs": 0}
    if online:
        learner = OnlineLearner(ModelBundle.from_state(base.state), engine.catalog, cfg.online)
        history = max(cfg.online.history_len, learner.bundle.retrieval.users.max_len)
        rows = RowStream(new_live_state(engine.catalog), history_len=history, settle_ms=cfg.settle_ms)
        for _, e in store.iter_events():  # the trainer's own state, as at its start-up
            learner.observe(rows.add(e))
    retrieval_version, last_retrieval = base.version, world.start_ts
    retrieval_module = engine.models.current.bundle.retrieval
    sim = Simulator(world, fatigue_per_swipe=0.0, allow_leave=False, page_size=cfg.page_size)
    viewers = _viewers(world, cfg)
    states = [sim.new_session(v, f"cold-{v.user_id}") for v in viewers]
    pages: list[list] = [[] for _ in viewers]
    swiped = [0] * len(viewers)
    gaps = np.random.default_rng([cfg.seed, 98])
    rec = _Recorder(cfg)
    queue = _schedule(world, cfg)
    heapq.heapify(queue)
    bar = tqdm(total=cfg.new_viewers * cfg.swipes, desc=f"cold start {'online' if online else 'frozen'}",
               disable=not progress, dynamic_ncols=True)
    try:
        while queue:
            ts, k = heapq.heappop(queue)
            viewer = viewers[k]
            if not pages[k]:
                res = engine.feed(FeedRequest(viewer.user_id, n=cfg.page_size,
                                              region=viewer.region, device=viewer.device,
                                              source="feed", session_id=states[k].session_id))
                pages[k] = [(i.item_id, i.source, res.request_id, p)
                            for p, i in enumerate(res.items)]
                if not pages[k]:
                    continue
            item_id, source, request_id, position = pages[k].pop(0)
            sources[source] += 1
            events = sim.respond(viewer, item_id, ts, states[k], request_id=request_id,
                                 position=position)
            engine.ingest_events(events)
            rec.record(world, viewer, item_id, events, k, swiped[k])
            swiped[k] += 1
            bar.update(1)
            if swiped[k] < cfg.swipes:
                heapq.heappush(queue, (events[-1].ts + int(gaps.integers(200, 1500)), k))
            if learner is None:
                continue
            closed = [r for e in events for r in rows.add(e)] + rows.flush(ts)
            learner.add(closed, ts)
            stepped = False
            while learner.ready(ts):
                learner.step()
                stepped = True
            if not stepped:
                continue
            if learner.retrieval_steps and ts - last_retrieval >= cfg.retrieval_every_ms:
                retrieval_module = learner.retrieval_snapshot()
                retrieval_version = f"{base.version}+r{learner.retrieval_steps}"
                last_retrieval = ts
                figures["retrieval_installs"] += 1
            bundle = learner.serving_bundle(retrieval_module)
            engine.models.install(f"{base.version}+{learner.steps}", bundle, {
                "retrieval_version": retrieval_version, **learner.serving_meta(base.version)})
            figures["installs"] += 1
    finally:
        bar.close()
        store.close()
    total = sum(sources.values())
    extra = {"sources": {s: round(n / total, 4) for s, n in sources.most_common()}}
    if learner is not None:
        extra["online"] = {**figures, "steps": learner.steps, "rows_trained": learner.rows_trained,
                           "retrieval_steps": learner.retrieval_steps}
    return rec.values, extra


def _engagement(store) -> tuple[Counter, Counter, list[str]]:
    """Positive engagements and impressions per item in the background history (positives are
    long views and explicit positives; counted in time order), and the catalog's ids."""
    from reelrank.join import join_events, token_from_example

    durations = {it.item_id: it.duration_ms for it in store.iter_items()}
    events = sorted((e for _, e in store.iter_events()), key=lambda e: e.ts)
    positives: Counter = Counter()
    shown: Counter = Counter()
    for ex in join_events(events, durations.get):
        shown[ex.item_id] += 1
        if token_from_example(ex).positive:
            positives[ex.item_id] += 1
    return positives, shown, list(durations)


def _popularity(engagement: tuple[Counter, Counter, list[str]]) -> list[str]:
    """Items by positive engagement, most first (ties: the first engaged first); items never
    engaged with follow in catalog order."""
    positives, _, catalog = engagement
    ranked = [i for i, _ in positives.most_common()]
    seen = set(ranked)
    return ranked + [i for i in catalog if i not in seen]


def _run_popular(world: World, cfg: ColdStartConfig, ranked: list[str]) -> tuple[dict, dict]:
    sim = Simulator(world, fatigue_per_swipe=0.0, allow_leave=False, page_size=cfg.page_size)
    rec = _Recorder(cfg)
    for (ts, k), viewer in zip(_schedule(world, cfg), _viewers(world, cfg)):
        state = sim.new_session(viewer, f"cold-{viewer.user_id}")
        for pos, item_id in enumerate(ranked[:cfg.swipes]):
            events = sim.respond(viewer, item_id, ts, state)
            rec.record(world, viewer, item_id, events, k, pos)
            ts = events[-1].ts + 800
    return rec.values, {"sources": {"most_popular": 1.0}}


def _run_reference(world: World, cfg: ColdStartConfig, arm: str,
                   engagement: tuple[Counter, Counter, list[str]]) -> tuple[dict, dict]:
    """The ``topic_bandit`` and ``oracle`` arms (module docstring), on the same new viewers."""
    sim = Simulator(world, fatigue_per_swipe=0.0, allow_leave=False, page_size=cfg.page_size)
    rec = _Recorder(cfg)
    items = world.items
    ids = [it.item_id for it in items]
    positives, shown, _ = engagement
    rate = np.array([(positives[i] + 1) / (shown[i] + 4) for i in ids])
    topics = [topic_of(it) or NO_TOPIC for it in items]  # as the engine reads them
    names = sorted(set(topics))
    topic = np.array([names.index(t) for t in topics])
    region = np.array([it.region for it in items])
    rng = np.random.default_rng([cfg.seed, 97])
    for (ts, k), viewer in zip(_schedule(world, cfg), _viewers(world, cfg)):
        state = sim.new_session(viewer, f"cold-{viewer.user_id}")
        seen = np.zeros(len(items), dtype=bool)
        if arm == "oracle":
            base = world.fits(viewer, np.arange(len(items)))[0]
        else:
            base = 3.0 * rate + 0.5 * (region == viewer.region)
        hits, misses = np.ones(len(names)), np.full(len(names), 3.0)  # Beta(1, 3) per topic
        pos = 0
        while pos < cfg.swipes:
            score = base if arm == "oracle" else base + rng.beta(hits, misses)[topic]
            score = np.where(seen, -np.inf, score)
            for j in np.argsort(-score, kind="stable")[:cfg.page_size]:
                if pos >= cfg.swipes:
                    break
                events = sim.respond(viewer, ids[j], ts, state)
                seen[j] = True
                positive = rec.record(world, viewer, ids[j], events, k, pos)
                hits[topic[j]] += positive
                misses[topic[j]] += not positive
                ts = events[-1].ts + 800
                pos += 1
    return rec.values, {"sources": {arm: 1.0}}


def curves(values: dict, cfg: ColdStartConfig) -> dict:
    """Per measure: the mean per swipe, the final level, and the swipes to 80% of it."""
    out = {}
    for m, arr in values.items():
        mean = np.nanmean(arr, axis=0)  # (S,)
        per_viewer_final = _per_viewer_final(arr, cfg)
        final = float(np.mean(per_viewer_final))
        trailing = np.array([mean[max(0, s - cfg.smooth + 1):s + 1].mean()
                             for s in range(len(mean))])
        out[m] = {
            "per_swipe": [round(float(x), 4) for x in mean],
            "trailing": [round(float(x), 4) for x in trailing],
            "final": round(final, 4),
            "final_se": round(float(np.std(per_viewer_final) / np.sqrt(len(per_viewer_final))), 4),
            "first": round(float(mean[0]), 4),
            "swipes_to_80": _first_at(trailing, 0.8 * final),
            "swipes_to_80_of_gain": _first_at(trailing, mean[0] + 0.8 * (final - mean[0]))
            if final > mean[0] else None,
        }
    return out


def _per_viewer_final(arr: np.ndarray, cfg: ColdStartConfig) -> np.ndarray:
    return np.nanmean(arr[:, -cfg.final_swipes:], axis=1)


def paired_finals(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict:
    """Arm ``a`` minus arm ``b`` in each measure's final level, viewer by viewer: both arms
    serve the same new viewers on the same schedule, so the standard error comes from the
    per-viewer differences, without the spread between viewers that both arms share."""
    out = {}
    for m in a:
        d = a[m] - b[m]
        se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        out[m] = {"diff": round(float(np.mean(d)), 4), "se": round(se, 4)}
    return out


def _first_at(curve: np.ndarray, level: float) -> int | None:
    hits = np.flatnonzero(curve >= level)
    return int(hits[0]) + 1 if len(hits) else None


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"watch_ratio": "mean watch ratio (capped at 2)", "like": "like rate",
              "affinity": "mean hidden fit (true affinity)",
              "top_topics": "share in the viewer's two strongest topics",
              "engaged_topics": "share in topics they engaged with before"}
    fig, axes = plt.subplots(1, len(titles), figsize=(23, 4.2))
    # The oracle's curves sit far above the others (hidden fit about 2, topics about 0.9) and
    # would flatten them: it stays in the table only.
    drawn = {arm: e for arm, e in report["arms"].items() if arm != "oracle"}
    for ax, m in zip(axes, titles):
        for arm, entry in drawn.items():
            c = entry[m]
            x = np.arange(1, len(c["per_swipe"]) + 1)
            line, = ax.plot(x, c["trailing"], label=f"{arm} (final {c['final']:.3f})", lw=2)
            ax.plot(x, c["per_swipe"], color=line.get_color(), alpha=0.25, lw=1)
        ax.set_title(titles[m])
        ax.set_xlabel("swipe number of a new viewer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    not_drawn = "; the oracle is in the table, not drawn" if "oracle" in report["arms"] else ""
    fig.suptitle(f"New viewers on the synthetic world ({report['config']['new_viewers']} viewers;"
                 f" bold: trailing mean of {report['config']['smooth']} swipes{not_drawn})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

