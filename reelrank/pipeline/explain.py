"""Why an item was (or would be) shown to a viewer (``GET /v1/explain``), told from the
pipeline's own records.

The page that showed the item tells the story (its kept trace, ``TraceRecord.explain``); else a
recent page that considered it and filtered or out-ranked it; an item in no recent page is run
through the filters and the scorer alone, as the pipeline would judge it now.
"""

from __future__ import annotations

from typing import Callable, Sequence

from reelrank.pipeline.context import FeedContext
from reelrank.pipeline.feed import FeedPipeline
from reelrank.pipeline.trace_record import TraceRecord
from reelrank.types import Candidate


def explain_item(
    user_id: str,
    item_id: str,
    traces: Sequence[TraceRecord],
    pipeline: FeedPipeline,
    context: Callable[[], FeedContext],
) -> dict:
    """``traces``: the viewer's kept traces, oldest first; ``context``: the viewer's request
    context now, built only when no trace holds the item."""
    # The feed that showed it tells the story; later feeds only filtered it as served.
    for trace in reversed(traces):
        if item_id in trace.served:
            return trace.explain(item_id)
    for trace in reversed(traces):
        if trace.considered(item_id):
            return trace.explain(item_id)
    return explain_afresh(user_id, item_id, pipeline, context())


def explain_afresh(user_id: str, item_id: str, pipeline: FeedPipeline, ctx: FeedContext) -> dict:
    """Not in a recent feed: the filters' verdicts and the scorer's reasons for this one item."""
    cand = Candidate(item_id, "explain")
    removed: list[dict[str, str]] = []
    kept: list[Candidate] = [cand]
    for f in pipeline.filters:
        res = f.apply(ctx, kept)
        removed += [{"filter": r.filter, "reason": r.reason} for r in res.removed]
        if res.kept:
            kept = res.kept
    scored = pipeline.scorer.score(ctx, [cand])
    s = scored[0] if scored else None
    return {
        "user_id": user_id,
        "item_id": item_id,
        "shown": False,
        "request_id": None,
        "source": None,
        "sources": [],
        "reasons": [{"code": r.code, "text": r.text} for r in (s.reasons if s else ())],
        "score": s.score if s else None,
        "predictions": s.predictions if s else {},
        "filters": removed,
        "rerank": [],
        "model_version": pipeline.scorer.version,
    }
