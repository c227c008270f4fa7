"""``POST /v1/items`` and ``POST /v1/events``: the two write paths (ingest scope)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from reelrank.service.deps import INGEST, EngineDep
from reelrank.service.schemas import (
    ERROR_RESPONSES, EventBatch, EventsResponse, ItemBatch, UpsertResponse,
)

router = APIRouter(prefix="/v1", tags=["catalog and events"], dependencies=[Depends(INGEST)],
                   responses=ERROR_RESPONSES)


@router.post("/items", response_model=UpsertResponse)
def post_items(batch: ItemBatch, engine: EngineDep, request: Request) -> UpsertResponse:
    """Insert or replace catalog items; the batch is all or nothing."""
    n = engine.ingest_items([i.to_domain() for i in batch.items])
    request.app.state.metrics.items_upserted.inc(n)
    return UpsertResponse(upserted=n)


@router.post("/events", response_model=EventsResponse)
def post_events(batch: EventBatch, engine: EngineDep, request: Request) -> EventsResponse:
    """Append events; durable when the answer is sent, and visible to the next feed request.
    A known ``event_id`` is a no-op counted in ``duplicates``."""
    result = engine.ingest_events([e.to_domain() for e in batch.events])
    metrics = request.app.state.metrics
    metrics.events_accepted.inc(len(result.accepted))
    metrics.events_duplicates.inc(result.duplicates)
    return EventsResponse(accepted=len(result.accepted), duplicates=result.duplicates)
