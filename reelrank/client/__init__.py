"""A Python client for the ReelRank HTTP API (``httpx``; blocking and asyncio).

::

    from reelrank.client import Event, ReelRankClient

    with ReelRankClient("http://127.0.0.1:8000", token=SERVE_OR_ADMIN_TOKEN) as rr:
        page = rr.feed("u1", n=5)
        rr.send_events([Event(user_id="u1", item_id=page.item_ids[0], type="play",
                              watch_ms=12_000)])

What it adds to raw HTTP:

- one typed method per endpoint, returning dataclasses (``FeedPage``, ``RankResult``, ...);
- ``send_events`` and ``upsert_items`` split any iterable into batches the API accepts (at
  most 10,000 each);
- retries with backoff on connection errors, 5xx and 429. Each event gets its ``event_id``
  before its first attempt, and the server treats a known id as a no-op, so a retried batch
  can never count an event twice. Calls that would act twice if repeated (minting a token,
  starting a training run, "not interested") are only retried when the request cannot have
  reached the server;
- the API's error body raised as ``ApiError`` subclasses whose ``fields`` and ``details`` name
  the refused fields, with batch indexes counted in the caller's whole list.
"""

from reelrank.client.aio import AsyncReelRankClient
from reelrank.client.calls import MAX_BATCH, RetryPolicy
from reelrank.client.errors import (
    ApiError, AuthenticationError, ConflictError, ErrorDetail, InvalidInputError,
    NotFoundError, PayloadTooLargeError, PermissionDeniedError, RateLimitedError, ServerError,
)
from reelrank.client.models import (
    Event, EventContext, EventsResult, FeedEntry, FeedPage, Health, Item, ItemsLookup,
    ItemsResult, Job, RankedItem, RankResult, Reason, Settings,
)
from reelrank.client.sync import ReelRankClient

__all__ = [
    "ApiError", "AsyncReelRankClient", "AuthenticationError", "ConflictError", "ErrorDetail",
    "Event", "EventContext", "EventsResult", "FeedEntry", "FeedPage", "Health",
    "InvalidInputError", "Item", "ItemsLookup", "ItemsResult", "Job", "MAX_BATCH",
    "NotFoundError", "PayloadTooLargeError", "PermissionDeniedError", "RankResult",
    "RankedItem", "RateLimitedError", "Reason", "ReelRankClient", "RetryPolicy",
    "ServerError", "Settings",
]
