"""Feed plans: a viewer's next pages served from the ranking that made their last one.

A feed page runs the whole pipeline (sources, filters, the models, re-ranking, the trace):
about 25 ms of interpreter-locked CPU (benchmarks/results/throughput-profile.md). Most of it
goes into the scored pool, of which a page places 10. A plan keeps that pool, best first, after
the page that built it, so that the viewer's next pages are cut from it: the filters re-check
what is left against the viewer's live state (served, seen, not interested, hidden creators and
sounds, muted words), and the re-ranker places the page exactly as it would have, its spacing
and topic windows continuing from what was last served and its exploration slots counted per
page. Exploration gets a draw of its own for each page (Thompson samples: a page built afresh
draws anew, and the plan's draws would be the first page's leftovers). The first page that
needs one draws for the next two pages at once (then four, ...), each draw independent, and
scores them in one pass of the models; each page filters its own draw against live state. What
a plan saves is the other sources, the user tower, the ranker over the rest of the pool, their
reasons, and most passes of the ranker over exploration's draws.

A plan is used only while nothing it was built from has changed (``FeedPlans.get`` says which
thing did, for ``/v1/stats``):

- **the viewer acted** (``viewer_version``: their event count and the lengths of what events
  fill, read from the live state every request reads anyway, so an event posted to another
  process of a shared deployment is seen too): the next page reflects the last swipe;
- **their settings or controls**, the request's context (mode, region, device, source,
  language, session), or **the model version**;
- **its age** past ``ttl_s`` (trending lists, new uploads and other viewers' engagement move
  on without the viewer), or **its budget** (``max_items`` served from one plan, the page that
  built it included) or its pool running short;
- **a reset or an erasure** drops it (a side effect of the engine, in every process: another
  process's erasure arrives as a digest, ``Engine.forget_held``).

At most ``max_viewers`` viewers hold a plan, the least recently served dropped first. Each
plan holds the top ``keep`` scored candidates, not the whole pool (nor what only exploration
proposed: it is drawn again).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reelrank.pipeline.context import FeedContext
from reelrank.pipeline.rank import Scored
from reelrank.store.live import UserState
from reelrank.types import Candidate, FeedItem

if TYPE_CHECKING:  # feed.py imports this module: its names are imported where used
    from reelrank.pipeline.feed import FeedPipeline, FeedResult, FeedTrace

DEFAULT_PLAN_TTL_S = 30.0
# A plan serves the pages a viewer asks for within ``ttl_s`` and before their next event; on
# one process that is a few hundred viewers at most at these rates. The soak measured about
# 200 KB of server memory per plan held (benchmarks/results/soak.md).
DEFAULT_PLAN_VIEWERS = 250
DEFAULT_PLAN_ITEMS = 50


def viewer_version(user: UserState | None) -> tuple:
    """What changes with every event the viewer posts, a reset of their interests, or their
    erasure: their event count (every event folded in counts once, whatever its type) and the
    sizes of what events fill. Not what feeds sent them: pages served from the plan move that."""
    if user is None:  # never seen, or erased: as a viewer whom feeds only were sent
        return (0, 0, 0, 0, 0, 0, 0)
    return (sum(user.counts.values()), user.last_ts, len(user.history), len(user.tokens),
            len(user.seen), len(user.not_interested), len(user.following))


@dataclass
class FeedPlan:
    key: tuple  # the request's context, the viewer's settings, the model version
    viewer: tuple  # viewer_version when built
    want: int  # candidates asked of each source: a request that needs more is not served
    built: float  # time.monotonic()
    scored: list[Scored]  # the pool after filters and wellbeing, best first
    proposals: dict[str, list[Candidate]]  # item -> its sources' proposals (explanations)
    notes: dict[str, list[str]]  # item -> the wellbeing notes of the build
    rows: dict = field(default_factory=dict)  # the re-ranker's per-item facts, kept
    served: set[str] = field(default_factory=set)  # served from this plan so far
    pages: int = 1
    # The per-page sources' draws for the coming pages, made and scored ahead (``_draw``):
    # each a page's proposals (``FeedTrace.proposals``, ``source_counts``) and their scores.
    ahead: list[FeedTrace] = field(default_factory=list)
    draw_passes: int = 0  # how many times ``ahead`` was drawn


class FeedPlans:
    """The viewers' current plans, bounded (LRU) and timed; counts what it served."""

    def __init__(self, ttl_s: float = DEFAULT_PLAN_TTL_S,
                 max_viewers: int = DEFAULT_PLAN_VIEWERS,
                 max_items: int = DEFAULT_PLAN_ITEMS, keep: int | None = None):
        if ttl_s <= 0 or max_viewers < 1 or max_items < 1:
            raise ValueError("ttl_s, max_viewers and max_items must be positive")
        self.ttl_s = ttl_s
        self.max_viewers = max_viewers
        self.max_items = max_items
        # Candidates kept per plan: twice what it may serve (the re-ranker rarely reaches
        # deeper for a page), at least 60. About 1.4 KB each: a plan of 100 about 140 KB at
        # most (benchmarks/results/throughput-plan.md).
        self.keep = keep if keep is not None else max(60, 2 * max_items)
        self._lock = threading.Lock()
        self._plans: OrderedDict[str, FeedPlan] = OrderedDict()
        self.hits = 0
        self.misses: Counter = Counter()  # by why: none, event, context, model, expired, ...
        self.evicted = 0

    def get(self, user_id: str, key: tuple, viewer: tuple, want: int,
            n: int) -> FeedPlan | None:
        """The viewer's plan when it may serve this request (a miss is counted, and a stale
        plan dropped, otherwise: the caller builds a new one)."""
        now = time.monotonic()
        with self._lock:
            plan = self._plans.get(user_id)
            why = None
            if plan is None:
                why = "none"
            elif plan.viewer != viewer:
                why = "viewer_changed"  # an event, a reset (or an erasure elsewhere)
            elif plan.key != key:
                why = "context_changed"  # settings, request context or model version
            elif now - plan.built > self.ttl_s:
                why = "expired"
            elif plan.want < want or len(plan.served) + n > self.max_items:
                why = "used_up"
            if why is not None:
                self.misses[why] += 1
                if plan is not None:
                    del self._plans[user_id]
                return None
            self._plans.move_to_end(user_id)
            return plan

    def hit(self) -> None:
        with self._lock:
            self.hits += 1

    def miss(self, why: str) -> None:
        with self._lock:
            self.misses[why] += 1

    def put(self, user_id: str, plan: FeedPlan) -> None:
        with self._lock:
            self._plans[user_id] = plan
            self._plans.move_to_end(user_id)
            while len(self._plans) > self.max_viewers:
                self._plans.popitem(last=False)
                self.evicted += 1

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._plans.pop(user_id, None)

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()

    def user_ids(self) -> list[str]:
        with self._lock:
            return list(self._plans)

    def __len__(self) -> int:
        return len(self._plans)

    def usage(self) -> dict:
        """``GET /v1/stats``: plans held against their bound, and pages served from one."""
        with self._lock:
            misses = sum(self.misses.values())
            return {"enabled": True, "viewers": len(self._plans),
                    "max_viewers": self.max_viewers, "ttl_s": self.ttl_s,
                    "max_items": self.max_items, "hits": self.hits, "misses": misses,
                    "misses_by_reason": dict(self.misses), "evicted": self.evicted,
                    "hit_rate": round(self.hits / (self.hits + misses), 4)
                    if self.hits + misses else None}


def plans_off() -> dict:
    """``GET /v1/stats`` of a server without plans."""
    return {"enabled": False}


# -- serving from a plan (``FeedPipeline.build`` calls these) ---------------------------------------
def plan_key(pipeline: FeedPipeline, ctx: FeedContext) -> tuple:
    """What a plan was built for besides the viewer's events: the request's context, the
    viewer's settings (and so the mode served) and the version scoring it."""
    r = ctx.request
    return (r.mode, ctx.mode, r.region, r.device, r.source, r.language, r.session_id,
            ctx.settings, pipeline.scorer.version)


def per_page_sources(pipeline: FeedPipeline, ctx: FeedContext) -> list:
    """The mode's sources whose candidates are drawn anew for every page (exploration's
    samples): a page cut from a plan asks them again."""
    return [s for s in pipeline.sources.get(ctx.mode, []) if getattr(s, "per_page", False)]


def new_plan(pipeline: FeedPipeline, ctx: FeedContext, key: tuple, viewer: tuple, want: int,
             scored: list[Scored], trace: FeedTrace, wellbeing_notes: dict[str, str],
             rows: dict) -> FeedPlan:
    """The plan of the page ``trace`` just served: the best ``keep`` of the rest of its pool,
    less what only the per-page sources proposed (drawn again for each page)."""
    per_page = {s.name for s in per_page_sources(pipeline, ctx)}
    served = set(trace.served)
    ordered = sorted(scored, key=lambda s: (-s.score, s.item_id))

    def drawn_only(item_id: str) -> bool:
        cands = trace.proposals.get(item_id, ())
        return bool(cands) and all(c.source in per_page for c in cands)

    keep = pipeline.plans.keep if pipeline.plans is not None else len(ordered)
    pool = [s for s in ordered if s.item_id not in served
            and not (per_page and drawn_only(s.item_id))][:keep]
    ids = {s.item_id for s in pool}
    return FeedPlan(
        key=key, viewer=viewer, want=want, built=time.monotonic(), scored=pool,
        proposals={i: trace.proposals[i] for i in ids if i in trace.proposals},
        notes={i: [note] for i, note in wellbeing_notes.items() if i in ids},
        rows={i: rows[i] for i in ids if i in rows}, served=served)


def page_from_plan(pipeline: FeedPipeline, ctx: FeedContext, plan: FeedPlan,
                   started: float) -> FeedResult | None:
    """The next page cut from the viewer's plan: what is left of it re-checked by the filters
    against the viewer's live state now, this page's draw of exploration added, and placed by
    the re-ranker as a page built afresh from that pool would be. None: too few to fill it."""
    from reelrank.pipeline.feed import FeedResult, FeedTrace, _dedupe

    n = ctx.request.n
    trace = FeedTrace(uuid.uuid4().hex, ctx.request.user_id, ctx.mode, ctx.now)
    left = [s for s in plan.scored if s.item_id not in plan.served]
    by_id = {s.item_id: s for s in left}
    kept_ids = {c.item_id for c in pipeline._filter(ctx, [s.candidate for s in left], trace)}
    kept = [s for s in left if s.item_id in kept_ids]
    # Exploration is drawn for this page, filtered and scored (a few dozen candidates; the
    # viewer's retrieval vector is the kept one), as a page built afresh would have it.
    drawn = _draw(pipeline, ctx, plan, by_id, trace)
    kept += drawn
    if len(kept) < n:
        return None
    page = pipeline.reranker.rerank(ctx, kept, n, rows=plan.rows)
    for s in drawn:  # drawn for this page only
        plan.rows.pop(s.item_id, None)
    if ctx.mode != "following":
        pipeline.price.observe(kept, page.items, n)
    # The trace holds what explains this page: its items, those the re-ranker moved for them,
    # what was drawn and what the filters removed now; the plan's first page holds the rest.
    placed = {s.item_id for s in page.items}
    for item_id, notes in plan.notes.items():
        if item_id in page.notes or item_id in placed:
            trace.rerank_notes[item_id] = list(notes)
    for item_id, notes in page.notes.items():
        trace.rerank_notes.setdefault(item_id, []).extend(notes)
    for s in drawn:
        trace.scored[s.item_id] = s
    for item_id in [s.item_id for s in page.items] + list(page.notes):
        trace.scored[item_id] = by_id[item_id]
        if item_id not in trace.proposals:
            trace.proposals[item_id] = plan.proposals.get(item_id, [by_id[item_id].candidate])
    trace.source_counts["plan"] = len(left)
    items = [FeedItem(s.item_id, float(s.score), s.candidate.source, _dedupe(s.reasons))
             for s in page.items]
    trace.served = [i.item_id for i in items]
    plan.served.update(trace.served)
    plan.pages += 1
    if trace.removed:  # what the filters removed for good stays out of the next checks
        plan.scored = [s for s in plan.scored if s.item_id not in trace.removed]
    trace.elapsed_ms = (time.perf_counter() - started) * 1000
    scorer = pipeline.scorer if ctx.personalized else pipeline.plain_scorer
    return FeedResult(trace.request_id, ctx.request.user_id, ctx.mode, scorer.version, items,
                      trace, notices=pipeline.wellbeing.notices(ctx))


def _draw(pipeline: FeedPipeline, ctx: FeedContext, plan: FeedPlan, by_id: dict[str, Scored],
          trace: FeedTrace) -> list[Scored]:
    """This page's draw of the per-page sources (exploration), less what the plan holds or
    served, filtered now and scored; added to ``by_id``. The draws of the plan's coming pages
    are made and scored together when the last ones are used up (``_draw_ahead``); each page
    then takes its own."""
    per_page = per_page_sources(pipeline, ctx)
    if not per_page:
        return []
    if not plan.ahead:
        # Twice as many pages each time the draws run out (2, 4, ... up to what the plan can
        # still serve): a viewer who asks for one more page does not pay for five, and one who
        # scrolls on pays for few passes.
        n = max(1, ctx.request.n)
        left = (pipeline.plans.max_items if pipeline.plans is not None else n) - len(plan.served)
        pages = min(max(1, left // n), 2 ** (plan.draw_passes + 1))
        plan.ahead = _draw_ahead(pipeline, ctx, plan, per_page, pages)
        plan.draw_passes += 1
    drafted = plan.ahead.pop(0)
    trace.source_counts.update(drafted.source_counts)
    trace.source_errors.update(drafted.source_errors)
    for item_id, cands in drafted.proposals.items():
        trace.proposals.setdefault(item_id, []).extend(cands)
    fresh = [c for c in pipeline._merge(trace)
             if c.item_id not in by_id and c.item_id not in plan.served]
    fresh = pipeline._filter(ctx, fresh, trace)
    drawn = [drafted.scored[c.item_id] for c in fresh if c.item_id in drafted.scored]
    for item_id, note in pipeline.wellbeing.adjust(ctx, drawn).items():
        trace.rerank_notes.setdefault(item_id, []).append(note)
    for s in drawn:
        by_id[s.item_id] = s
    return drawn


def _draw_ahead(pipeline: FeedPipeline, ctx: FeedContext, plan: FeedPlan, per_page: list,
                pages: int) -> list[FeedTrace]:
    """The per-page sources' draws for the plan's next ``pages`` pages: each an independent
    draw, as that page would make it (Thompson samples from the exploration pool, which is
    itself refreshed only every few seconds), made now and scored in one pass of the models.
    Each is kept as a page's proposals and their scores; nothing in them depends on the other
    draws (the scores are per item), so a page's exploration is what drawing it at that page
    would give, up to the few seconds between the two. The filters run at each page."""
    from reelrank.pipeline.feed import FeedTrace

    drafts = [FeedTrace("", ctx.request.user_id, ctx.mode, ctx.now) for _ in range(pages)]
    for source in per_page:
        pipeline._collect_pages(source, ctx, plan.want, drafts)
    held = plan.served | {s.item_id for s in plan.scored}
    groups = [[c for c in pipeline._merge(d) if c.item_id not in held] for d in drafts]
    kept_vector = pipeline._viewer_vector(ctx)
    scorer = pipeline.scorer if ctx.personalized else pipeline.plain_scorer
    scored = score_groups(scorer, ctx, groups)
    pipeline._keep_vector(ctx, kept_vector)
    for draft, group in zip(drafts, scored):
        draft.scored = {s.item_id: s for s in group}
    return drafts


def score_groups(scorer, ctx: FeedContext, groups: list[list[Candidate]]) -> list[list[Scored]]:
    """Each list scored as ``scorer.score`` would score it alone; in one pass where the scorer
    can (``NeuralScorer.score_groups``)."""
    many = getattr(scorer, "score_groups", None)
    if many is not None:
        return many(ctx, groups)
    return [scorer.score(ctx, g) for g in groups]
