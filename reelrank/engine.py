"""The engine: the durable store, the in-memory catalog and live state, and the feed pipeline,
assembled and kept consistent.

Entry points (the HTTP service, the CLI, the evaluation harness) hold one ``Engine``. Writes go
store first, memory second: an event is in live state only once it is durable, and live state is
rebuilt from the store at start-up.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from reelrank.errors import FieldProblem, NotFoundError, ValidationError
from reelrank.pipeline.context import MODES, FeedContext, FeedRequest
from reelrank.pipeline.feed import FeedPipeline, FeedResult, FeedTrace, TraceRecord
from reelrank.pipeline.filters import default_filters
from reelrank.pipeline.neural import NeuralScorer, RetrievalSource, ServingModels
from reelrank.pipeline.rank import HeuristicScorer, Scored
from reelrank.pipeline.sources import (
    CoEngagementSource, FollowingSource, PopularSource, RegionalPopularSource, TrendingSource,
)
from reelrank.pipeline.explore import ExploreSource
from reelrank.pipeline.rerank import DiversityReranker
from reelrank.registry import ModelRegistry
from reelrank.train.job import TrainConfig, train_from_store
from reelrank.train.jobs import JobRunner
from reelrank.store.base import AppendResult, Store
from reelrank.store import new_live_state
from reelrank.store.live import LiveState
from reelrank.types import Candidate, Event, Item, UserSettings

log = logging.getLogger(__name__)


def default_pipeline(models: ServingModels | None = None, *,
                     reranker: DiversityReranker | None = None,
                     explore: ExploreSource | None = None,
                     exploration: bool = True) -> FeedPipeline:
    """The feed as served: the retrieval model is the main source when a model is published;
    the v0 sources stay, as fallbacks and for viewers and videos the models do not know yet.

    New videos reach their first audiences through ``explore`` (default ``ExploreSource()``);
    ``exploration=False`` leaves them to the other sources. ``reranker`` (default
    ``DiversityReranker()``) sets the diversity rules and the exploration share of each page."""
    trending, regional = TrendingSource(), RegionalPopularSource()
    fresh = [explore or ExploreSource()] if exploration else []
    # A new viewer's first pages come from regional popularity, trending and fresh videos
    # (the personal sources have nothing yet); from the first swipes on, the personal ones lead.
    personal: list = [CoEngagementSource(), FollowingSource(), regional, trending,
                      PopularSource(), *fresh]
    scorer = HeuristicScorer()
    if models is not None:
        personal.insert(0, RetrievalSource(models))
        scorer = NeuralScorer(models, fallback=scorer)
    return FeedPipeline(
        sources={
            "personalized": personal,
            "non_personalized": [regional, trending, *fresh],
            "following": [FollowingSource()],
        },
        filters=default_filters(),
        scorer=scorer,
        reranker=reranker or DiversityReranker(),
    )


def offline_pipeline(models: ServingModels | None = None) -> FeedPipeline:
    """The served pipeline for offline evaluation and simulation: the exploration pool is
    recomputed on every request instead of being cached for seconds and refreshed in the
    background, so a replay gives the same feeds whatever the machine's speed."""
    return default_pipeline(models, explore=ExploreSource(refresh_events=0,
                                                          background_refresh=False))


@dataclass
class RankResult:
    model_version: str
    items: list[Scored]


DEFAULT_TRACE_BUDGET_BYTES = 64 * 1024 * 1024  # about 10,000 pages of 6 KB


class Engine:
    def __init__(self, store: Store, pipeline: FeedPipeline | None = None,
                 live: LiveState | None = None, registry: ModelRegistry | None = None,
                 index_kind: str = "ann", traces_per_user: int = 5,
                 max_traced_users: int = 10_000,
                 trace_budget_bytes: int = DEFAULT_TRACE_BUDGET_BYTES):
        self.store = store
        self.live = live if live is not None else new_live_state()
        self.catalog = self.live.catalog
        self.registry = registry
        self.models = ServingModels(registry, self.catalog, index_kind=index_kind)
        self.pipeline = pipeline or default_pipeline(self.models)
        self.train_config = TrainConfig()
        self.training = (JobRunner(self._train, on_done=lambda _v: self.models.refresh())
                         if registry is not None else None)
        self._traces: OrderedDict[str, deque[TraceRecord]] = OrderedDict()
        self._traces_per_user = traces_per_user
        self._max_traced_users = max_traced_users
        # Traces are kept for explanations only: past the budget the least recently served
        # viewers' traces go first (their explain falls back to scoring the item afresh).
        self.trace_budget_bytes = trace_budget_bytes
        self._trace_bytes = 0
        self._trace_count = 0
        self._traces_evicted = 0
        self._trace_lock = threading.Lock()
        self._user_locks = [threading.Lock() for _ in range(64)]
        self._catalog_lock = threading.Lock()
        # Called with a user id when that viewer's data is erased or reset, so that components
        # holding derived copies (an online trainer's pending examples, caches) drop them too.
        self.erase_listeners: list = []
        self.reset_listeners: list = []  # called with a user id on "refresh my feed"
        # Called with each FeedResult served and with each batch of newly accepted events
        # (live figures: /v1/stats); a failing listener is logged, never fatal.
        self.feed_listeners: list = []
        self.event_listeners: list = []
        self.retention_days: int | None = None  # set by the entry point that runs retention
        self._ingest_lock = threading.Lock()  # store append + live apply, as one step
        self._rebuild_lock = threading.Lock()
        self._rebuild_wanted = False
        self._rebuild_thread: threading.Thread | None = None
        self.trainer = None  # the online trainer, when this process runs one (start_trainer)
        self._watch_stop = threading.Event()

    # -- start-up -------------------------------------------------------------------------------
    def load(self) -> "Engine":
        """Fill the catalog and live state from the store (start-up, or after an import)."""
        batch: list[Item] = []
        for item in self.store.iter_items():
            batch.append(item)
            if len(batch) >= 10_000:
                self.catalog.upsert(batch)
                batch = []
        self.catalog.upsert(batch)
        started = time.perf_counter()
        n, _ = self._replay(self.live)
        log.info("loaded %d items; live state rebuilt from %d events in %.1f s",
                 len(self.catalog), n, time.perf_counter() - started)
        self.models.refresh()
        return self

    def _replay(self, live: LiveState, after_seq: int = 0) -> tuple[int, int]:
        """Apply the log after ``after_seq`` to ``live``; returns (events, last seq). Events
        from before a viewer's "refresh my feed" do not rebuild their interests."""
        floors = {s.user_id: s.interests_reset_seq for s in self.store.iter_settings()
                  if s.interests_reset_seq}
        n, last = 0, after_seq
        for seq, event in self.store.iter_events(after_seq=after_seq):
            live.apply(event, interests=seq > floors.get(event.user_id, 0))
            n, last = n + 1, seq
        return n, last

    def rebuild_live(self) -> None:
        """Recompute live state from the log, after erasure or a retention purge removed events:
        the per-item counters, trending and co-engagement that those events fed follow. Runs
        beside serving; ingestion pauses only for the catch-up at the end."""
        fresh = self.live.empty_like()
        _, last = self._replay(fresh)
        with self._ingest_lock:
            self._replay(fresh, after_seq=last)
            self.live.replace_with(fresh)

    def schedule_rebuild(self) -> threading.Thread:
        """Rebuild live state in the background; requests made while one runs fold into one
        more run after it."""
        with self._rebuild_lock:
            self._rebuild_wanted = True
            if self._rebuild_thread is None or not self._rebuild_thread.is_alive():
                self._rebuild_thread = threading.Thread(target=self._rebuild_loop,
                                                        name="live-rebuild", daemon=True)
                self._rebuild_thread.start()
            return self._rebuild_thread

    def _rebuild_loop(self) -> None:
        while True:
            with self._rebuild_lock:
                if not self._rebuild_wanted:
                    return
                self._rebuild_wanted = False
            try:
                self.rebuild_live()
            except Exception:  # the live state stays as it was; the next erasure retries
                log.exception("rebuilding live state failed")

    def _train(self, progress) -> tuple[str | None, dict]:
        result = train_from_store(self.store, self.registry, self.train_config, progress=False,
                                  on_progress=progress)
        return result.version, result.metrics

    # -- online learning --------------------------------------------------------------------------
    def start_trainer(self, config=None):
        """Run the online trainer (``reelrank.train.trainer``) in a background thread of this
        process: it tails the event log and hands new weights straight to serving. A trainer
        that fails is restarted by itself; serving never waits on it, but its Python work
        competes with requests for the interpreter lock (``start_trainer_process`` does not)."""
        from reelrank.train.trainer import OnlineTrainer

        if self.registry is None:
            raise ValueError("the online trainer needs a model registry")
        if self.trainer is None:
            self.trainer = OnlineTrainer(self.store, self.registry, config, catalog=self.catalog,
                                         install=self.models.install)
            self.erase_listeners.append(self.trainer.forget_user)
            self.reset_listeners.append(self.trainer.reset_user)
        return self.trainer.start()

    def start_trainer_process(self, data_dir, **options):
        """Run the online trainer as a supervised child process on ``data_dir`` (the store's
        directory): ``reelrank serve``'s default. It publishes to the registry, which
        ``watch_models`` swaps in; erasures and resets reach it through its standard input;
        it is restarted if it dies and stopped with ``stop_trainer``. Options:
        ``reelrank.train.supervisor.TrainerProcess``'s."""
        from reelrank.train.supervisor import TrainerProcess

        if self.trainer is None:
            self.trainer = TrainerProcess(data_dir, **options)
            self.erase_listeners.append(self.trainer.forget_user)
            self.reset_listeners.append(self.trainer.reset_user)
        return self.trainer.start()

    def stop_trainer(self) -> None:
        """Stop the online trainer and the model watcher (before closing the store)."""
        self._watch_stop.set()
        if self.trainer is not None:
            self.trainer.stop()

    def watch_models(self, every_s: float = 0.25) -> threading.Thread:
        """Poll the registry and swap in each newly published version (a trainer in another
        process, or ``reelrank train``). Failures are logged and retried. A poll reads one
        small file; how often versions are swapped in is the publisher's rate, so polling
        often only shortens the wait between a publish and its swap."""
        def loop() -> None:
            while not self._watch_stop.wait(every_s):
                try:
                    self.models.refresh()
                except Exception:
                    log.exception("loading the latest model failed; serving keeps its model")

        thread = threading.Thread(target=loop, name="model-watch", daemon=True)
        thread.start()
        return thread

    # -- writes ---------------------------------------------------------------------------------
    def ingest_items(self, items: list[Item]) -> int:
        # One lock over both writes: concurrent upserts of an item leave store and memory agreeing.
        with self._catalog_lock:
            n = self.store.upsert_items(items)
            self.catalog.upsert(items)
        self.models.add_items(items)
        return n

    def ingest_events(self, events: list[Event]) -> AppendResult:
        """Validate against the catalog, store durably, then update live state. A batch with
        any invalid event is rejected whole."""
        problems = [
            FieldProblem(field=f"events[{i}].item_id", index=i,
                         message=f"unknown item_id {e.item_id!r}: post it to /v1/items first")
            for i, e in enumerate(events) if e.item_id not in self.catalog
        ]
        if problems:
            raise ValidationError("the batch refers to unknown items; nothing was stored", problems)
        with self._ingest_lock:
            result = self.store.append_events(events)
            for e in result.accepted:
                self.live.apply(e)
        _notify(self.event_listeners, result.accepted)
        return result

    # -- reads ----------------------------------------------------------------------------------
    def for_offline(self) -> "Engine":
        """Set up for evaluation and simulation: feeds that depend on the event stream alone,
        not on how fast the machine replays it (``offline_pipeline``, and top lists such as
        trending and popular-in-region recomputed every ``trending_refresh_events`` events,
        never because some wall-clock seconds passed)."""
        self.pipeline = offline_pipeline(self.models)
        self.live.trending_refresh_seconds = float("inf")
        return self

    def context(self, request: FeedRequest) -> FeedContext:
        if request.mode not in MODES:
            raise ValidationError("unknown mode", [FieldProblem("mode", f"must be one of {MODES}")])
        settings = self.store.get_settings(request.user_id)
        mode = request.mode if settings.personalization else "non_personalized"
        return FeedContext(request=request, settings=settings, catalog=self.catalog,
                           live=self.live, user=self.live.user_snapshot(request.user_id), mode=mode,
                           now=self.live.clock)

    def feed(self, request: FeedRequest) -> FeedResult:
        # Two concurrent pages for one viewer must not both serve the same items.
        with self._user_locks[hash(request.user_id) % len(self._user_locks)]:
            result = self.pipeline.build(self.context(request))
            self.live.record_served(request.user_id, [i.item_id for i in result.items])
        self._keep_trace(result.trace)
        _notify(self.feed_listeners, result)
        return result

    def rank(self, user_id: str, item_ids: list[str], region: str | None = None,
             device: str | None = None) -> RankResult:
        unknown = [FieldProblem(f"item_ids[{i}]", f"unknown item_id {x!r}", index=i)
                   for i, x in enumerate(item_ids) if x not in self.catalog]
        if unknown:
            raise ValidationError("unknown item ids", unknown)
        ctx = self.context(FeedRequest(user_id=user_id, n=len(item_ids), region=region,
                                       device=device))
        scored = self.pipeline.scorer.score(ctx, [Candidate(i, "request") for i in item_ids])
        scored.sort(key=lambda s: (-s.score, s.item_id))
        return RankResult(self.pipeline.scorer.version, scored)

    def explain(self, user_id: str, item_id: str) -> dict:
        """Why this item was (or would be) shown to this user, from the pipeline's own trace."""
        item = self.catalog.get(item_id)
        if item is None:
            raise NotFoundError(f"unknown item_id {item_id!r}")
        with self._trace_lock:
            traces = list(self._traces.get(user_id, ()))
        # The feed that showed it tells the story; later feeds only filtered it as served.
        for trace in reversed(traces):
            if item_id in trace.served:
                return trace.explain(item_id)
        for trace in reversed(traces):
            if trace.considered(item_id):
                return trace.explain(item_id)
        # Not in a recent feed: run the filters and the scorer on this one item.
        ctx = self.context(FeedRequest(user_id=user_id, n=1))
        cand = Candidate(item_id, "explain")
        removed = []
        kept = [cand]
        for f in self.pipeline.filters:
            res = f.apply(ctx, kept)
            removed += [{"filter": r.filter, "reason": r.reason} for r in res.removed]
            if res.kept:
                kept = res.kept
        scored = self.pipeline.scorer.score(ctx, [cand])
        s = scored[0] if scored else None
        return {
            "user_id": user_id, "item_id": item_id, "shown": False, "request_id": None,
            "source": None, "sources": [],
            "reasons": [{"code": r.code, "text": r.text} for r in (s.reasons if s else ())],
            "score": s.score if s else None, "predictions": s.predictions if s else {},
            "filters": removed, "rerank": [], "model_version": self.pipeline.scorer.version,
        }

    def _keep_trace(self, trace: FeedTrace) -> None:
        record = trace.record()
        with self._trace_lock:
            q = self._traces.get(trace.user_id)
            if q is None:
                q = self._traces[trace.user_id] = deque()
            self._traces.move_to_end(trace.user_id)
            q.append(record)
            self._trace_bytes += record.nbytes
            self._trace_count += 1
            if len(q) > self._traces_per_user:
                self._forget_traces([q.popleft()])
            # The newest viewer's traces stay even alone over a tiny budget: explain must work
            # for the page just served.
            while len(self._traces) > 1 and (len(self._traces) > self._max_traced_users
                                             or self._trace_bytes > self.trace_budget_bytes):
                _, oldest = self._traces.popitem(last=False)
                self._forget_traces(oldest)
                self._traces_evicted += 1

    def _forget_traces(self, records) -> None:
        for r in records:
            self._trace_bytes -= r.nbytes
            self._trace_count -= 1

    def trace_usage(self) -> dict:
        """What the kept traces hold against their budget (``GET /v1/stats``)."""
        with self._trace_lock:
            return {"viewers": len(self._traces), "traces": self._trace_count,
                    "bytes": self._trace_bytes, "budget_bytes": self.trace_budget_bytes,
                    "traces_per_viewer": self._traces_per_user,
                    "max_viewers": self._max_traced_users,
                    "viewers_evicted": self._traces_evicted}

    # -- the viewer's settings ------------------------------------------------------------------
    def settings(self, user_id: str) -> UserSettings:
        return self.store.get_settings(user_id)

    def put_settings(self, settings: UserSettings) -> None:
        self.store.put_settings(settings)

    # -- the viewer's data: reset, erasure, retention -------------------------------------------
    def reset_interests(self, user_id: str) -> None:
        """"Refresh my feed": forget the interests inferred so far, durably (a restart replays
        the log without them), and keep the account, settings, follows and what was seen."""
        with self._ingest_lock:
            current = self.store.get_settings(user_id)
            self.store.put_settings(dataclasses.replace(
                current, interests_reset_seq=self.store.last_seq()))
            self.live.reset_interests(user_id)
        self._drop_traces(user_id)
        for listener in list(self.reset_listeners):
            try:
                listener(user_id)
            except Exception:
                log.exception("a reset listener failed")

    def erase_user(self, user_id: str, rebuild: bool = True) -> int:
        """Erase everything about the viewer: their events, settings and tokens in the store,
        their live state and recent traces, and whatever the erase listeners hold (pending
        training examples). The models keep no per-viewer parameters (the user vector is
        computed from the live history at request time), so nothing of the viewer is left in
        them to remove. Aggregates their events fed (item counters, trending) are recomputed
        from the remaining log in the background. Returns how many events were removed."""
        with self._ingest_lock:
            removed = self.store.erase_user(user_id)
            self.live.forget_user(user_id)
        self._drop_traces(user_id)
        for listener in list(self.erase_listeners):
            try:
                listener(user_id)
            except Exception:
                log.exception("an erase listener failed")
        if rebuild and removed:
            self.schedule_rebuild()
        return removed

    def start_retention(self, days: int, every_s: float = 3600.0) -> threading.Thread:
        """Purge events older than ``days`` now and then every ``every_s`` seconds, in a
        daemon thread (a failed purge is logged and retried at the next tick)."""
        if days < 1:
            raise ValueError("retention must be at least one day")
        self.retention_days = days

        def loop() -> None:
            while True:
                try:
                    n = self.purge_events_older_than(days * 86_400_000)
                    if n:
                        log.info("retention: purged %d events older than %d days", n, days)
                except Exception:
                    log.exception("retention purge failed")
                time.sleep(every_s)

        thread = threading.Thread(target=loop, name="retention", daemon=True)
        thread.start()
        return thread

    def purge_events_older_than(self, max_age_ms: int, now_ms: int | None = None) -> int:
        """Retention: delete events older than ``max_age_ms`` (by wall clock unless ``now_ms``
        is given) and rebuild live state without them."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        removed = self.store.delete_events_before(now_ms - max_age_ms)
        if removed:
            self.rebuild_live()
        return removed

    def _drop_traces(self, user_id: str) -> None:
        with self._trace_lock:
            self._forget_traces(self._traces.pop(user_id, ()))


def _notify(listeners: list, value) -> None:
    for listener in list(listeners):
        try:
            listener(value)
        except Exception:
            log.exception("a listener failed")

