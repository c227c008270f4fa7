"""``GET /healthz`` and ``GET /metrics``: open to everyone (no token)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from reelrank.service.deps import EngineDep
from reelrank.service.schemas import HealthResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthResponse)
def healthz(engine: EngineDep) -> HealthResponse:
    """200 once the app exists: it is built on an engine whose state is already loaded."""
    return HealthResponse(status="ok", model_version=engine.model_version)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    m = request.app.state.metrics
    return Response(m.render(), media_type=m.content_type)
