"""build a feed: request -> candidates -> filters -> scores -> re-ranked page + trace.

Read top to bottom, ``FeedPipeline.build`` is the whole serving path of one feed request:

1. each candidate source of the request's mode proposes items (a source that raises is logged
   and skipped);
2. proposals of the same item are merged, keeping every source's reasons;
3. filters remove what must not be shown, each removal with its reason;
4. if too few remain, a last-resort source tops the pool up so a feed is never empty;
5. the scorer predicts and scores (in the modes not based on profiling, a scorer that uses only
   the sources' own order); wellbeing rules dampen sensitive items for young viewers;
6. the re-ranker applies spacing rules and cuts the page; a break notice is added when the
   viewer is past their daily limit.

The trace records all of it; explanations are read from the trace.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from reelrank.pipeline.context import FeedContext
from reelrank.pipeline.filters import Filter, Removed
from reelrank.pipeline.plans import (
    FeedPlans, new_plan, page_from_plan, plan_key, viewer_version,
)
from reelrank.pipeline.rank import Scored, Scorer
from reelrank.pipeline.rerank import EXPLORATION_CODES, SpacingReranker
from reelrank.pipeline.sources import CandidateSource
from reelrank.pipeline.trace_record import TraceRecord
from reelrank.pipeline.wellbeing import WellbeingPolicy
from reelrank.types import Candidate, FeedItem, Reason

log = logging.getLogger(__name__)



@dataclass
class FeedTrace:
    request_id: str
    user_id: str
    mode: str
    ts: int
    source_counts: dict[str, int] = field(default_factory=dict)
    source_errors: dict[str, str] = field(default_factory=dict)
    proposals: dict[str, list[Candidate]] = field(default_factory=dict)  # item -> by source
    removed: dict[str, Removed] = field(default_factory=dict)
    scored: dict[str, Scored] = field(default_factory=dict)
    rerank_notes: dict[str, list[str]] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0

    def record(self) -> "TraceRecord":
        """What explanations need of this trace, for keeping after the request. Per candidate
        only what the pipeline made anyway is referenced (its reasons, predictions, removal
        and notes), and pickled at once: converting each to plain tuples here cost a fifth
        more CPU per page (benchmarks/results/throughput-profile.md); ``TraceRecord.items``
        converts when an explanation is asked for."""
        proposals, scored_all = self.proposals, self.scored
        removed_all, notes = self.removed, self.rerank_notes
        items: dict[str, tuple] = {}
        for item_id in {**proposals, **removed_all, **scored_all, **notes}:
            cands = proposals.get(item_id, ())
            scored = scored_all.get(item_id)
            if scored is not None:
                items[item_id] = ([(c.source, c.score) for c in cands], scored.reasons,
                                  scored.candidate.source, scored.score, scored.predictions,
                                  removed_all.get(item_id), notes.get(item_id))
            else:
                items[item_id] = ([(c.source, c.score) for c in cands],
                                  [r for c in cands for r in c.reasons], None, None, None,
                                  removed_all.get(item_id), notes.get(item_id))
        return TraceRecord.pack(self.request_id, self.user_id, self.mode, tuple(self.served),
                                items)


@dataclass
class FeedResult:
    request_id: str
    user_id: str
    mode: str
    model_version: str
    items: list[FeedItem]
    trace: FeedTrace
    notices: list[Reason] = field(default_factory=list)


class CatalogFallbackSource:
    """Newest items of the whole catalog: the last resort that keeps a feed from running dry."""

    name = "catalog"

    def generate(self, ctx: FeedContext, n: int) -> list[Candidate]:
        reason = Reason("exploration", "something new to explore")
        items = ctx.catalog.newest(n)
        return [Candidate(it.item_id, self.name, 0.0, (reason,)) for it in items]


class SourceOrderScorer:
    """The scorer of the feeds not based on profiling: an item's score is its candidate
    source's own score (regional popularity, trending, recency), nothing learned about the
    viewer."""

    version = "non-personalized"

    def __init__(self, source_weights: dict[str, float] | None = None):
        # What the viewer's region watches comes before what is popular everywhere.
        self.source_weights = source_weights or {
            "popular_region": 1.0, "following": 1.0, "trending": 0.6, "fresh": 0.4}

    def score(self, ctx: FeedContext, candidates: list[Candidate]) -> list[Scored]:
        return [Scored(c, c.score * self.source_weights.get(c.source, 0.3), {}, c.reasons)
                for c in candidates]


class RerankPrice:
    """What the re-ranker's rules cost, counted over the pages served: how many slots went to
    a video the scorer alone would not have put on the page, and how many of those were
    exploration slots (new videos and creators) rather than diversity moves. Read by
    ``/v1/transparency``; the offline figure is the served feed with and without the rules
    (``reelrank eval``'s ``reelrank_served_plain``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pages = self.slots = self.replaced = self.explored = 0

    def observe(self, scored: list[Scored], page: list[Scored], n: int) -> None:
        top = {s.item_id for s in heapq.nlargest(n, scored, key=lambda s: (s.score, s.item_id))}
        replaced = [s for s in page if s.item_id not in top]
        explored = sum(1 for s in replaced
                       if any(r.code in EXPLORATION_CODES for r in s.candidate.reasons))
        with self._lock:
            self.pages += 1
            self.slots += len(page)
            self.replaced += len(replaced)
            self.explored += explored

    def summary(self) -> dict:
        with self._lock:
            slots = max(1, self.slots)
            return {"pages": self.pages, "slots": self.slots,
                    "replaced_share": round(self.replaced / slots, 4),
                    "exploration_share": round(self.explored / slots, 4),
                    "diversity_share": round((self.replaced - self.explored) / slots, 4)}


class ViewerVectors:
    """The retrieval model's vector of recent viewers, kept between their requests.

    The user tower runs over the viewer's history tokens on every request (about a fifth of a
    feed's CPU, benchmarks/results/throughput-profile.md), yet its answer depends only on the
    model version and those tokens. A viewer's next page with neither changed (pages asked for
    ahead of the swipes, a refresh, a page served by another source of traffic) reuses the
    vector; any event that changes the tokens, a reset, an erasure (no tokens left) or a new
    version changes the key, and the tower runs again, so the next page still reflects the
    last swipe. Entries live at most ``ttl_s`` seconds and at most ``max_viewers`` of them:
    an erased viewer's vector is not kept longer than that. A hit hands out a copy, so
    nothing downstream can change the kept one."""

    def __init__(self, max_viewers: int = 10_000, ttl_s: float = 60.0):
        self.max_viewers = max_viewers
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        # user id -> (models object, tokens, vector or None, kept at (monotonic s))
        self._entries: OrderedDict[str, tuple] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, user_id: str, models: object, tokens: tuple) -> tuple[bool, object]:
        """(True, vector) when a vector for this version and these tokens is kept."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(user_id)
            if (entry is None or entry[0] is not models or now - entry[3] > self.ttl_s
                    or entry[1] != tokens):
                self.misses += 1
                return False, None
            self.hits += 1
            vector = entry[2]
        return True, (None if vector is None else vector.copy())

    def put(self, user_id: str, models: object, tokens: tuple, vector) -> None:
        kept = None if vector is None else np.array(vector, copy=True)
        now = time.monotonic()
        with self._lock:
            self._entries[user_id] = (models, tokens, kept, now)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_viewers:
                self._entries.popitem(last=False)
            # The oldest go first: whatever is past its time at the front is dropped.
            while self._entries:
                first = next(iter(self._entries.values()))
                if now - first[3] <= self.ttl_s:
                    break
                self._entries.popitem(last=False)

    def user_ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._entries.pop(user_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# The key of ``ctx.cache`` where ``reelrank.pipeline.neural.user_vector`` keeps the viewer's
# vector for the rest of the request.
_USER_VECTOR_KEY = "retrieval_user"


class FeedPipeline:
    def __init__(self, sources: dict[str, list[CandidateSource]], filters: list[Filter],
                 scorer: Scorer, reranker: SpacingReranker | None = None,
                 fallback: CandidateSource | None = None, overfetch: int = 5,
                 plain_scorer: Scorer | None = None, wellbeing: WellbeingPolicy | None = None,
                 viewer_vectors: ViewerVectors | None = None, plans: FeedPlans | None = None):
        self.sources = sources  # by mode
        self.filters = filters
        self.scorer = scorer
        self.plain_scorer = plain_scorer or SourceOrderScorer()
        self.reranker = reranker or SpacingReranker()
        self.fallback = fallback or CatalogFallbackSource()
        self.overfetch = overfetch
        self.wellbeing = wellbeing or WellbeingPolicy()
        self.price = RerankPrice()
        # None turns the cache off: every request runs the user tower (the reference path).
        self.viewer_vectors = viewer_vectors if viewer_vectors is not None else ViewerVectors()
        # The viewers' next pages cut from their last ranking (``pipeline/plans.py``); None:
        # every page runs the whole pipeline (the reference path, and offline replays).
        self.plans = plans

    def held_viewers(self) -> set[str]:
        """The viewers whose retrieval vector or feed plan this pipeline keeps."""
        held = set(self.viewer_vectors.user_ids())
        return held | set(self.plans.user_ids()) if self.plans is not None else held

    def forget_viewer(self, user_id: str) -> None:
        """Drop what this pipeline keeps of the viewer (their erasure, or a reset: the next
        page reflects it)."""
        self.viewer_vectors.forget(user_id)
        if self.plans is not None:
            self.plans.forget(user_id)

    def build(self, ctx: FeedContext) -> FeedResult:
        started = time.perf_counter()
        n = ctx.request.n
        want = max(n * self.overfetch, 50)
        plans = self.plans
        key = viewer = None
        if plans is not None:
            key, viewer = plan_key(self, ctx), viewer_version(ctx.user)
            plan = plans.get(ctx.request.user_id, key, viewer, want, n)
            if plan is not None:
                result = page_from_plan(self, ctx, plan, started)
                if result is not None:
                    plans.hit()
                    return result
                plans.forget(ctx.request.user_id)
                plans.miss("too_few_left")
        trace = FeedTrace(uuid.uuid4().hex, ctx.request.user_id, ctx.mode, ctx.now)
        kept_vector = self._viewer_vector(ctx)

        for source in self.sources.get(ctx.mode, []):
            self._collect(source, ctx, want, trace)
        kept = self._filter(ctx, self._merge(trace), trace)
        if len(kept) < n and ctx.mode != "following":
            # Ask for many: most of the newest items may already be seen.
            self._collect(self.fallback, ctx, want + len(trace.removed) + n, trace)
            kept = self._filter(ctx, self._merge(trace), trace)

        # Following is a time-ordered feed and non-personalized is popularity: neither may use
        # what was learned about the viewer, so both keep the sources' own order.
        scorer = self.scorer if ctx.personalized else self.plain_scorer
        scored = scorer.score(ctx, kept)
        wellbeing_notes = self.wellbeing.adjust(ctx, scored)
        for item_id, note in wellbeing_notes.items():
            trace.rerank_notes.setdefault(item_id, []).append(note)
        trace.scored = {s.item_id: s for s in scored}
        rows: dict | None = {} if plans is not None else None
        page = self.reranker.rerank(ctx, scored, n, rows=rows)
        if ctx.mode != "following":
            self.price.observe(scored, page.items, n)
        for item_id, notes in page.notes.items():
            trace.rerank_notes.setdefault(item_id, []).extend(notes)
        items = [FeedItem(s.item_id, float(s.score), s.candidate.source, _dedupe(s.reasons))
                 for s in page.items]
        trace.served = [i.item_id for i in items]
        if plans is not None and key is not None and viewer is not None:
            plans.put(ctx.request.user_id, new_plan(
                self, ctx, key, viewer, want, scored, trace, wellbeing_notes, rows or {}))
        self._keep_vector(ctx, kept_vector)
        trace.elapsed_ms = (time.perf_counter() - started) * 1000
        return FeedResult(trace.request_id, ctx.request.user_id, ctx.mode, scorer.version,
                          items, trace, notices=self.wellbeing.notices(ctx))

    def _viewer_vector(self, ctx: FeedContext):
        """Put the viewer's kept vector where the retrieval source and the scorer read it, when
        one is kept for the model version serving now and the viewer's current tokens. Returns
        what ``build`` needs to keep the vector afterwards (None: nothing to keep)."""
        cache = self.viewer_vectors
        # The neural scorer's ServingModels: the version whose user tower would run.
        serving = getattr(self.scorer, "models", None)
        if cache is None or serving is None or not ctx.personalized:
            return None
        models = serving.current
        tokens = tuple(ctx.user.tokens) if ctx.user is not None else ()
        hit, vector = cache.get(ctx.request.user_id, models, tokens)
        if hit:
            ctx.cache[_USER_VECTOR_KEY] = vector
            return None
        return cache, models, tokens

    @staticmethod
    def _keep_vector(ctx: FeedContext, kept_vector) -> None:
        """Keep the vector this request computed (``_viewer_vector``'s answer: None, nothing)."""
        if kept_vector is not None and _USER_VECTOR_KEY in ctx.cache:
            cache, models, tokens = kept_vector
            if models is not None:
                cache.put(ctx.request.user_id, models, tokens, ctx.cache[_USER_VECTOR_KEY])

    def _collect(self, source: CandidateSource, ctx: FeedContext, n: int,
                 trace: FeedTrace) -> None:
        self._collect_pages(source, ctx, n, [trace])

    @staticmethod
    def _collect_pages(source: CandidateSource, ctx: FeedContext, n: int,
                       traces: list[FeedTrace]) -> None:
        """The source's proposals for each of ``traces``: one draw per trace (a source that
        draws anew for every page, ``generate_pages``, makes them in one pass)."""
        try:
            many = getattr(source, "generate_pages", None)
            if many is not None and len(traces) > 1:
                drawn = many(ctx, n, len(traces))
            else:
                drawn = [source.generate(ctx, n) for _ in traces]
        except Exception as exc:  # a broken source must never break the feed
            log.exception("candidate source %s failed", source.name)
            for trace in traces:
                trace.source_errors[source.name] = f"{type(exc).__name__}: {exc}"
            return
        for trace, cands in zip(traces, drawn):
            trace.source_counts[source.name] = len(cands)
            for c in cands:
                trace.proposals.setdefault(c.item_id, []).append(c)

    @staticmethod
    def _merge(trace: FeedTrace) -> list[Candidate]:
        """One candidate per item: the best-scoring source leads, every source's reasons stay."""
        merged = []
        removed = trace.removed
        for item_id, cands in trace.proposals.items():
            if item_id in removed:
                continue
            if len(cands) == 1:  # most items: one source proposed them, nothing to merge
                merged.append(cands[0])
                continue
            best = max(cands, key=lambda c: c.score)
            reasons = tuple(r for c in sorted(cands, key=lambda c: -c.score) for r in c.reasons)
            merged.append(Candidate(item_id, best.source, best.score, reasons))
        return merged

    def _filter(self, ctx: FeedContext, cands: list[Candidate], trace: FeedTrace) -> list[Candidate]:
        for f in self.filters:
            result = f.apply(ctx, cands)
            for r in result.removed:
                trace.removed[r.item_id] = r
            cands = result.kept
        return cands


def _dedupe(reasons: tuple[Reason, ...]) -> tuple[Reason, ...]:
    seen, out = set(), []
    for r in reasons:
        if r.code not in seen:
            seen.add(r.code)
            out.append(r)
    return tuple(out)
