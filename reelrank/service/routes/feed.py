"""``GET /v1/feed``, ``POST /v1/rank`` and ``GET /v1/explain`` (serve scope; a user token may
read its own feed and explanations)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from reelrank.pipeline.context import FeedRequest
from reelrank.service.deps import SERVE, SERVE_OR_OWN_USER, EngineDep
from reelrank.service.schemas import (
    ERROR_RESPONSES, FeedItemOut, FeedResponse, Id, Mode, RankedItem, RankRequest,
    RankResponse, ReasonOut, RegionCode, ShortText,
)

router = APIRouter(prefix="/v1", tags=["feed"], responses=ERROR_RESPONSES)


@router.get("/feed", response_model=FeedResponse,
            dependencies=[Depends(SERVE_OR_OWN_USER)])
async def get_feed(
    engine: EngineDep, request: Request,
    user_id: Annotated[Id, Query()],
    n: Annotated[int, Query(ge=1, le=100)] = 10,
    mode: Annotated[Mode, Query()] = "personalized",
    region: Annotated[RegionCode | None, Query()] = None,
    device: Annotated[ShortText | None, Query()] = None,
    source: Annotated[ShortText | None, Query()] = None,
    session_id: Annotated[Id | None, Query()] = None,
    language: Annotated[ShortText | None, Query()] = None,
) -> FeedResponse:
    """The next page of the viewer's feed. Never-seen viewers get a cold-start feed; items
    already sent or marked not interested do not come back; with personalization off in the
    viewer's settings the page is non-personalized whatever ``mode`` asks."""
    started = time.perf_counter()
    # On a feed lane (service/lanes.py): a few feeds computed at once, the rest waiting here.
    result = await request.app.state.lanes.run(
        engine.feed, FeedRequest(user_id=user_id, n=n, mode=mode, region=region, device=device,
                                 source=source, session_id=session_id, language=language))
    metrics = request.app.state.metrics
    metrics.feed_seconds.labels(result.mode).observe(time.perf_counter() - started)
    metrics.feed_items.inc(len(result.items))
    return FeedResponse(
        request_id=result.request_id, user_id=result.user_id,
        model_version=result.model_version, mode=result.mode,
        items=[FeedItemOut(item_id=i.item_id, score=i.score, source=i.source,
                           reasons=[ReasonOut(code=r.code, text=r.text) for r in i.reasons])
               for i in result.items],
        notices=[ReasonOut(code=r.code, text=r.text) for r in result.notices],
    )


@router.post("/rank", response_model=RankResponse, dependencies=[Depends(SERVE)])
async def post_rank(body: RankRequest, engine: EngineDep, request: Request) -> RankResponse:
    """Score the given items for the viewer, best first; unknown item ids are a 422."""
    ctx = body.context
    # Asking twice for the same item gets it scored once.
    item_ids = list(dict.fromkeys(body.item_ids))
    result = await request.app.state.lanes.run(
        engine.rank, body.user_id, item_ids, ctx.region if ctx else None,
        ctx.device if ctx else None, ctx.source if ctx else None)
    return RankResponse(
        model_version=result.model_version,
        items=[RankedItem(item_id=s.item_id, score=float(s.score),
                          predictions={k: float(v) for k, v in s.predictions.items()})
               for s in result.items],
    )


@router.get("/explain", dependencies=[Depends(SERVE_OR_OWN_USER)])
async def get_explain(engine: EngineDep, request: Request, user_id: Annotated[Id, Query()],
                      item_id: Annotated[Id, Query()]) -> dict[str, Any]:
    """Why this item was (or would be) shown to this viewer: the candidate source, the signals,
    the predictions and any filter that touched it. An unknown item is a 404."""
    return await request.app.state.lanes.run(engine.explain, user_id, item_id)
