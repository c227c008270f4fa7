"""``GET /v1/stats`` (admin): live figures of the running service (``service/stats.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from reelrank.pipeline.topics import served_figures
from reelrank.service.deps import ADMIN
from reelrank.service.schemas import ERROR_RESPONSES
from reelrank.service.stats import memory_view

router = APIRouter(prefix="/v1", tags=["operations"], responses=ERROR_RESPONSES,
                   dependencies=[Depends(ADMIN)])


@router.get("/stats")
async def get_stats(request: Request) -> dict[str, Any]:
    """Events/s, feed latency p50/p99, model version and age, online engagement, catalog
    coverage, creator exposure Gini, popularity bias and per-viewer topic diversity over time;
    what holds memory against its budget (``memory``) and the request guard's limits, load and
    refusals (``requests``)."""
    view = await run_in_threadpool(request.app.state.stats.view)
    view["memory"] = await run_in_threadpool(memory_view, request.app.state.engine,
                                             request.app.state.runtime.trainer)
    view["requests"] = request.app.state.guard.view()
    view["requests"]["feed_lanes"] = request.app.state.lanes.view()
    engine = request.app.state.engine
    # Topic diversity by the topics the feed reads (learned ones where a version has them).
    view["topics"] = await run_in_threadpool(served_figures, request.app.state.topics,
                                             engine.catalog, engine.live)
    # Viewer communities: sizes and growth, none shown under the k-anonymity floor.
    view["communities"] = request.app.state.communities.figures()
    return view
