"""``POST /v1/items`` and ``POST /v1/events``: the two write paths (ingest scope; a viewer's own
token may post that viewer's events)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from reelrank.service.deps import (
    INGEST, INGEST_OR_OWN_EVENTS, EngineDep, Principal, check_own_events,
)
from reelrank.service.schemas import (
    ERROR_RESPONSES, EventBatch, EventsResponse, ItemBatch, UpsertResponse,
)

router = APIRouter(prefix="/v1", tags=["catalog and events"], responses=ERROR_RESPONSES)


@router.post("/items", response_model=UpsertResponse, dependencies=[Depends(INGEST)])
def post_items(batch: ItemBatch, engine: EngineDep, request: Request) -> UpsertResponse:
    """Insert or replace catalog items; the batch is all or nothing."""
    n = engine.ingest_items([i.to_domain() for i in batch.items])
    request.app.state.metrics.items_upserted.inc(n)
    return UpsertResponse(upserted=n)


@router.post("/events", response_model=EventsResponse)
def post_events(batch: EventBatch, engine: EngineDep, request: Request,
                caller: Annotated[Principal, Depends(INGEST_OR_OWN_EVENTS)]) -> EventsResponse:
    """Append events; durable when the answer is sent, and visible to the next feed request.
    A known ``event_id`` is a no-op counted in ``duplicates``. An ingest token posts anyone's
    events; a viewer's own token only events whose ``user_id`` is its viewer (403 otherwise,
    naming each other ``events[i].user_id``, and nothing stored)."""
    check_own_events(caller, [e.user_id for e in batch.events])
    result = engine.ingest_events([e.to_domain() for e in batch.events])
    metrics = request.app.state.metrics
    metrics.events_accepted.inc(len(result.accepted))
    metrics.events_duplicates.inc(result.duplicates)
    return EventsResponse(accepted=len(result.accepted), duplicates=result.duplicates)
