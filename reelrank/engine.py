"""The serving core: the durable store, the catalog and live state, the models being served and
the feed pipeline, kept consistent. It ingests, serves feeds, ranks, explains, and erases; it
starts no thread and knows nothing of training.

Entry points (the HTTP service, the CLI, the evaluation harness) hold one ``Engine``; what runs
beside it in a server (the model watcher, retention, the online trainer, training jobs) is
``service/runtime.py``. Writes go store first, memory second: an event is in live state only
once it is durable, and live state is rebuilt from the store at start-up. What else happens
when a page is served or data changes is a list of declared steps, ``Engine.effects``
(``pipeline/side_effects.py``), the first of which keeps the traces that explain pages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Protocol, cast

from reelrank.errors import FieldProblem, NotFoundError, ValidationError
from reelrank.pipeline.context import FeedContext
from reelrank.pipeline.explain import explain_item
from reelrank.pipeline.feed import FeedPipeline, FeedResult
from reelrank.pipeline.neural import ServingModels
from reelrank.pipeline.plans import FeedPlans, plans_off
from reelrank.pipeline.rank import Scored
from reelrank.pipeline.served import default_pipeline, offline_pipeline
from reelrank.pipeline.side_effects import Calls, SideEffects
from reelrank.pipeline.traces import DEFAULT_TRACE_BUDGET_BYTES, TraceKeeper
from reelrank.registry import ModelMeta, ModelRegistry
from reelrank.store import new_live_state, rebuild
from reelrank.store.base import AppendResult, Store
from reelrank.store.live import LiveState, UserState
from reelrank.types import MODES, Candidate, Event, FeedRequest, Item, UserSettings

__all__ = ["DEFAULT_TRACE_BUDGET_BYTES", "Engine", "RankResult", "default_pipeline",
           "offline_pipeline"]

log = logging.getLogger(__name__)


class WriteGate(Protocol):
    """Writes to a live state shared by several processes, against a rebuild's swap."""

    def writing(self) -> ContextManager[None]: ...
    def swapping(self) -> ContextManager[None]: ...


@dataclass
class RankResult:
    model_version: str
    items: list[Scored]


class Engine:
    def __init__(self, store: Store, pipeline: FeedPipeline | None = None,
                 live: LiveState | None = None, registry: ModelRegistry | None = None,
                 index_kind: str = "ann", traces_per_user: int = 5,
                 max_traced_users: int = 10_000,
                 trace_budget_bytes: int = DEFAULT_TRACE_BUDGET_BYTES,
                 feed_plans: FeedPlans | None = None):
        self.store = store
        self.live = live if live is not None else new_live_state()
        self.catalog = self.live.catalog
        self.registry = registry
        # (pipeline/neural.py still names the memory backend's catalog class in its types)
        self.models = ServingModels(registry, self.catalog,  # type: ignore[arg-type]
                                    index_kind=index_kind)
        # ``feed_plans``: for the default pipeline (``default_pipeline``'s ``plans``).
        self.pipeline = pipeline or default_pipeline(self.models, plans=feed_plans)
        # Traces are kept for explanations only (GET /v1/explain): the first step after a page.
        self.traces = TraceKeeper(traces_per_user, max_traced_users, trace_budget_bytes)
        self.effects = SideEffects([self.traces])
        # What the pipeline keeps between a viewer's pages (their retrieval vector, their
        # feed plan) goes with an erasure or a reset, here and, told by a digest, elsewhere.
        self.effects.add(Calls("pipeline's viewers", erase=self._forget_in_pipeline,
                               reset=self._forget_in_pipeline,
                               held=lambda: sorted(self.pipeline.held_viewers())))
        self._user_locks = [threading.Lock() for _ in range(64)]
        self._catalog_lock = threading.Lock()
        self._ingest_lock = threading.Lock()  # store append + live apply, as one step
        # With a live state shared by several processes, the same step across them: writes
        # hold ``gate.writing()``, a rebuild's catch-up and swap ``gate.swapping()``
        # (``store/shared.py``'s ``WriteGate``); None: this process's lock is enough.
        self.gate: WriteGate | None = None
        self._folded: list[int] = []  # outbox batches folded in, to mark done (catch_up_live)
        self._mark_floor = rebuild.MarkFloor()

    # -- start-up -------------------------------------------------------------------------------
    def load(self, replay: bool = True) -> "Engine":
        """Fill the catalog and live state from the store (start-up, or after an import).
        ``replay=False``: the live state is shared with other processes and holds the log
        already (they, or ``reelrank rebuild-live``, built it): replaying it again would count
        every event twice, so only the catalog is loaded."""
        # A shared catalog takes the store's items without announcing them to the other
        # processes (``take``): each loads them from the store itself.
        upsert = getattr(self.catalog, "take", self.catalog.upsert)
        batch: list[Item] = []
        for item in self.store.iter_items():
            batch.append(item)
            if len(batch) >= 10_000:
                upsert(batch)
                batch = []
        upsert(batch)
        if replay:
            started = time.perf_counter()
            n, _ = rebuild.replay(self.store, self.live)
            log.info("loaded %d items; live state rebuilt from %d events in %.1f s",
                     len(self.catalog), n, time.perf_counter() - started)
        else:
            log.info("loaded %d items; the live state is shared: not replayed",
                     len(self.catalog))
        self.models.refresh()
        return self

    def catch_up_live(self, grace_s: float = 10.0) -> tuple[int, int]:
        """With a shared live state: mark done the outbox batches this process folded in, then
        fold in those still pending after ``grace_s`` (their process died between the store's
        commit and the fold). Returns (batches, events) caught up."""
        if getattr(self.live, "apply_many", None) is None:
            return 0, 0
        done, self._folded = self._folded, []
        self.store.outbox_done(done)
        caught = rebuild.catch_up(self.store, self.live, int(grace_s * 1000), self._writes)
        floor = self._mark_floor.update(self.store.outbox_low())
        if floor is not None:
            self.live.mark_floor = floor  # type: ignore[attr-defined]
        return caught

    def rebuild_live(self) -> None:
        """Recompute live state from the log, after erasure or a retention purge removed events:
        the per-item counters, trending and co-engagement that those events fed follow. Runs
        beside serving; ingestion pauses only for the catch-up at the end."""
        rebuild.rebuild_live(self.store, self.live, swapping=lambda: self._writes(swap=True))

    # -- writes ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writes(self, swap: bool = False) -> Iterator[None]:
        """A store write and the live state's matching change, as one step: under this
        process's lock and, with a shared live state, its gate across processes."""
        with self._ingest_lock:
            if self.gate is None:
                yield
            else:
                with self.gate.swapping() if swap else self.gate.writing():
                    yield

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
        # A shared live state folds a batch in a few round trips (``apply_many``), not a few
        # per event. If this process dies between the two writes, the store's outbox holds
        # the batch until another process folds it in (``catch_up_live``).
        apply_many = getattr(self.live, "apply_many", None)
        shared = apply_many is not None and not self.live.viewers_evicted
        with self._writes():
            result = self.store.append_events(events, outbox=shared)
            if apply_many is not None and shared:
                apply_many(result.accepted, batch=result.batch)
                if result.batch:
                    self._folded.append(result.batch)
            else:
                unapplied = {e.event_id for e in result.accepted}
                for e in result.accepted:
                    if self.live.viewers_evicted:
                        held = self.live.user(e.user_id)
                        if held is None or not held.counts:  # not held, or from feeds only
                            rebuild.restore_viewer(self.store, self.live, e.user_id, unapplied)
                    unapplied.discard(e.event_id)
                    self.live.apply(e)
        self.effects.events(result.accepted)
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
                           live=self.live, user=self.viewer(request.user_id), mode=mode,
                           now=self.live.clock)

    def viewer(self, user_id: str) -> UserState | None:
        """A snapshot of the viewer's live state, brought back from the log first if live
        state let them go (None for a viewer with no event and no page served)."""
        user = self.live.user_snapshot(user_id)
        if user is None and self.live.viewers_evicted:
            with self._ingest_lock:
                rebuild.restore_viewer(self.store, self.live, user_id)
            user = self.live.user_snapshot(user_id)
        return user

    def feed(self, request: FeedRequest) -> FeedResult:
        # Two concurrent pages for one viewer must not both serve the same items.
        with self._user_locks[hash(request.user_id) % len(self._user_locks)]:
            result = self.pipeline.build(self.context(request))
            self.live.record_served(request.user_id, [i.item_id for i in result.items])
        self.effects.feed(result)
        return result

    def rank(self, user_id: str, item_ids: list[str], region: str | None = None,
             device: str | None = None, source: str | None = None) -> RankResult:
        unknown = [FieldProblem(f"item_ids[{i}]", f"unknown item_id {x!r}", index=i)
                   for i, x in enumerate(item_ids) if x not in self.catalog]
        if unknown:
            raise ValidationError("unknown item ids", unknown)
        ctx = self.context(FeedRequest(user_id=user_id, n=len(item_ids), region=region,
                                       device=device, source=source))
        scored = self.pipeline.scorer.score(ctx, [Candidate(i, "request") for i in item_ids])
        scored.sort(key=lambda s: (-s.score, s.item_id))
        return RankResult(self.pipeline.scorer.version, scored)

    def explain(self, user_id: str, item_id: str) -> dict:
        """Why this item was (or would be) shown to this user (``pipeline/explain.py``)."""
        item = self.catalog.get(item_id)
        if item is None:
            raise NotFoundError(f"unknown item_id {item_id!r}")
        return explain_item(user_id, item_id, self.traces.records(user_id), self.pipeline,
                            lambda: self.context(FeedRequest(user_id=user_id, n=1)))

    @property
    def model_version(self) -> str:
        """The version the feed is scored with (``heuristic-v0`` before any model)."""
        return self.pipeline.scorer.version

    def serving_meta(self) -> ModelMeta:
        """What the model version being served says about itself ({} before any model)."""
        current = self.models.current
        return cast(ModelMeta, current.meta) if current is not None else {}

    def plan_usage(self) -> dict:
        """The feed plans held against their bound, and the pages they served
        (``GET /v1/stats``)."""
        plans = getattr(self.pipeline, "plans", None)
        return plans.usage() if plans is not None else plans_off()

    def trace_usage(self) -> dict:
        """What the kept traces hold against their budget (``GET /v1/stats``)."""
        return self.traces.usage()

    # -- the viewer's settings ------------------------------------------------------------------
    def settings(self, user_id: str) -> UserSettings:
        return self.store.get_settings(user_id)

    def put_settings(self, settings: UserSettings) -> None:
        self.store.put_settings(settings)

    # -- the viewer's data: reset, erasure, retention -------------------------------------------
    def _forget_in_pipeline(self, user_id: str) -> None:
        self.pipeline.forget_viewer(user_id)

    def reset_interests(self, user_id: str) -> None:
        """"Refresh my feed": forget the interests inferred so far, durably (a restart replays
        the log without them), and keep the account, settings, follows and what was seen."""
        with self._writes():
            current = self.store.get_settings(user_id)
            self.store.put_settings(dataclasses.replace(
                current, interests_reset_seq=self.store.last_seq()))
            self.live.reset_interests(user_id)
        self.effects.reset(user_id)

    def erase_user(self, user_id: str, rebuild: bool = True) -> int:
        """Erase everything about the viewer: their events, settings and tokens in the store,
        their live state, and whatever the side effects hold (recent traces, pending training
        examples). The models keep no per-viewer parameters (the user vector is computed from
        the live history at request time), so nothing of the viewer is left in them to remove.
        Aggregates their events fed (item counters, trending) are recomputed from the remaining
        log, now with ``rebuild`` (a runtime passes False and rebuilds in the background).
        Returns how many events were removed."""
        with self._writes():
            removed = self.store.erase_user(user_id)
            self.live.forget_user(user_id)
        self.effects.erase(user_id)
        if rebuild and removed:
            self.rebuild_live()
        return removed

    def forget_held(self, matches: Callable[[str], bool], reset: bool = False) -> list[str]:
        """Another process erased a viewer (or reset their interests) and said so by a digest
        of the id: whatever this process's steps hold of a viewer whose id ``matches`` (traces,
        viewer vectors, an in-process trainer's pending examples) is dropped, as if the erasure
        (reset) had been made here. The store and the shared live state are done already.
        Returns the ids found."""
        found = self.effects.held_users(matches)
        for user_id in found:
            if reset:
                self.effects.reset(user_id)
            else:
                self.effects.erase(user_id)
        return found

    def purge_events_older_than(self, max_age_ms: int, now_ms: int | None = None,
                                rebuild: bool = True) -> int:
        """Retention: delete events older than ``max_age_ms`` (by wall clock unless ``now_ms``
        is given) and rebuild live state without them (``rebuild=False``: the caller does)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        removed = self.store.delete_events_before(now_ms - max_age_ms)
        if removed and rebuild:
            self.rebuild_live()
        return removed

