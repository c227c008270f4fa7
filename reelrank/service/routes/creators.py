"""``GET /v1/creators/{creator_id}/insights`` (serve or admin): the creator's audience in
aggregate, how their recent videos do against similar ones, and what to post next."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from reelrank.service.deps import SERVE
from reelrank.service.schemas import ERROR_RESPONSES, Id

router = APIRouter(prefix="/v1", tags=["creators"], responses=ERROR_RESPONSES)


@router.get("/creators/{creator_id}/insights", dependencies=[Depends(SERVE)])
async def get_insights(creator_id: Annotated[Id, Path()], request: Request) -> dict[str, Any]:
    """Aggregates over at least ``min_viewers`` distinct viewers, never a single viewer; a
    creator with no video in the catalog is a 404."""
    insights = request.app.state.insights
    return await run_in_threadpool(insights.for_creator, creator_id)
