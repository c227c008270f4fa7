"""The requests of every endpoint, and the retry rules: shared by the sync and async clients.

Each endpoint is a function returning a ``Call`` (method, path, query, body, how to read the
answer, and whether the request may be sent again). The two clients only differ in how they
send a ``Call``, so both speak exactly the same API.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping
from urllib.parse import quote

import httpx

from reelrank.client.errors import error_from_response
from reelrank.client.models import (
    JSON, Event, FeedPage, Health, Item, ItemsLookup, Job, RankResult, Settings, event_json,
    item_json,
)

MAX_BATCH = 10_000  # the API refuses larger batches of items or events
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class Call:
    method: str
    path: str
    parse: Callable[[httpx.Response], Any]
    params: dict[str, Any] | None = None
    json: Any = None
    # "always": safe to send again after any failure (idempotent on the server: a known
    # event_id is a no-op, an upsert replaces, settings are put). "connect": only when the
    # request cannot have reached the server, because a second copy would act twice.
    retry: Literal["always", "connect"] = "always"
    index_offset: int = 0  # for batches: where this batch starts in the caller's list


@dataclass
class RetryPolicy:
    """``retries`` more attempts after the first, waiting ``backoff_s`` doubled each time (with
    jitter, capped at ``max_backoff_s``), or what a 429/503 answer's ``Retry-After`` asks."""

    retries: int = 4
    backoff_s: float = 0.25
    max_backoff_s: float = 8.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            asked = response.headers.get("retry-after", "")
            if asked.replace(".", "", 1).isdigit():
                return min(float(asked), self.max_backoff_s)
        base = min(self.backoff_s * 2 ** attempt, self.max_backoff_s)
        return base * (0.5 + self.rng.random() / 2)


def may_retry(call: Call, *, error: Exception | None = None,
              response: httpx.Response | None = None) -> bool:
    if error is not None:
        # A refused or timed-out connection never carried the request; any later failure
        # (a read timeout, a dropped connection) may have come after the server acted.
        never_sent = isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout,
                                        httpx.PoolTimeout))
        return never_sent or (call.retry == "always" and isinstance(error, httpx.TransportError))
    return (response is not None and call.retry == "always"
            and response.status_code in RETRY_STATUSES)


def finish(call: Call, response: httpx.Response) -> Any:
    """The parsed answer, or the API's error raised as an exception."""
    if response.is_success:
        return call.parse(response)
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_from_response(response.status_code, body, index_offset=call.index_offset)


def _json(response: httpx.Response) -> Any:
    return response.json()


def _none(response: httpx.Response) -> None:
    return None


def _seg(value: str) -> str:
    """A path segment: ids may hold any character, '/' and '?' included."""
    return quote(value, safe="")


def _params(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


# -- batched writes ---------------------------------------------------------------------------
def _chunks(values: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _batch_size(size: int) -> int:
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH}, not {size}")
    return size


def event_batches(events: Iterable[Event | Mapping[str, Any]],
                  batch_size: int = MAX_BATCH) -> Iterator[tuple[list[str], Call]]:
    """One ``Call`` per batch, with every event's id fixed before the batch is first sent."""
    offset = 0
    for chunk in _chunks(events, _batch_size(batch_size)):
        body = [event_json(e) for e in chunk]
        yield [e["event_id"] for e in body], Call(
            "POST", "/v1/events", _json, json={"events": body}, index_offset=offset)
        offset += len(chunk)


def item_batches(items: Iterable[Item | Mapping[str, Any]],
                 batch_size: int = MAX_BATCH) -> Iterator[Call]:
    offset = 0
    for chunk in _chunks(items, _batch_size(batch_size)):
        yield Call("POST", "/v1/items", _json, json={"items": [item_json(i) for i in chunk]},
                   index_offset=offset)
        offset += len(chunk)


# -- one call per endpoint --------------------------------------------------------------------
def feed(user_id: str, n: int, mode: str | None, region: str | None, device: str | None,
         source: str | None, session_id: str | None, language: str | None) -> Call:
    return Call("GET", "/v1/feed", lambda r: FeedPage.from_json(r.json()), params=_params(
        user_id=user_id, n=n, mode=mode, region=region, device=device, source=source,
        session_id=session_id, language=language))


def rank(user_id: str, item_ids: list[str], context: Mapping[str, Any] | None) -> Call:
    body: JSON = {"user_id": user_id, "item_ids": list(item_ids)}
    if context:
        body["context"] = dict(context)
    return Call("POST", "/v1/rank", lambda r: RankResult.from_json(r.json()), json=body)


def explain(user_id: str, item_id: str) -> Call:
    return Call("GET", "/v1/explain", _json, params={"user_id": user_id, "item_id": item_id})


def get_items(item_ids: list[str]) -> Call:
    return Call("GET", "/v1/items", lambda r: ItemsLookup.from_json(r.json()),
                params={"ids": ",".join(item_ids)})


def get_settings(user_id: str) -> Call:
    return Call("GET", f"/v1/users/{_seg(user_id)}/settings",
                lambda r: Settings.from_json(r.json()))


def put_settings(user_id: str, changes: Mapping[str, Any]) -> Call:
    return Call("PUT", f"/v1/users/{_seg(user_id)}/settings",
                lambda r: Settings.from_json(r.json()), json=dict(changes))


def not_interested(user_id: str, item_id: str, scope: str, ts: int | None) -> Call:
    # Each call records a new not_interested event server-side: not resent after it may
    # have arrived.
    return Call("POST", f"/v1/users/{_seg(user_id)}/not_interested",
                lambda r: Settings.from_json(r.json()),
                json=_params(item_id=item_id, scope=scope, ts=ts), retry="connect")


def export_data(user_id: str) -> Call:
    return Call("GET", f"/v1/users/{_seg(user_id)}/data", _json)


def access_log(user_id: str) -> Call:
    return Call("GET", f"/v1/users/{_seg(user_id)}/access_log", lambda r: r.json()["entries"])


def reset(user_id: str) -> Call:
    return Call("POST", f"/v1/users/{_seg(user_id)}/reset", _none)


def erase(user_id: str) -> Call:
    return Call("DELETE", f"/v1/users/{_seg(user_id)}", _none)


def mint_user_token(user_id: str) -> Call:
    # A second attempt would mint a second valid token: only resent if never delivered.
    return Call("POST", f"/v1/admin/users/{_seg(user_id)}/token",
                lambda r: r.json()["token"], retry="connect")


def creator_insights(creator_id: str) -> Call:
    return Call("GET", f"/v1/creators/{_seg(creator_id)}/insights", _json)


def train() -> Call:
    # A second call while a run is going returns that run, so resending is harmless; it is
    # still held to "connect" so that a finished run is never started twice by a retry.
    return Call("POST", "/v1/admin/train", lambda r: r.json()["job_id"], retry="connect")


def job(job_id: str) -> Call:
    return Call("GET", f"/v1/admin/jobs/{_seg(job_id)}", lambda r: Job.from_json(r.json()))


def trainer_status() -> Call:
    return Call("GET", "/v1/admin/trainer", _json)


def stats() -> Call:
    return Call("GET", "/v1/stats", _json)


def transparency() -> Call:
    return Call("GET", "/v1/transparency", _json)


def health() -> Call:
    return Call("GET", "/healthz", lambda r: Health.from_json(r.json()))


def metrics() -> Call:
    return Call("GET", "/metrics", lambda r: r.text)


def demo_status() -> Call:
    return Call("GET", "/v1/demo", _json)


def demo_sign_in(user_id: str) -> Call:
    return Call("POST", "/v1/demo/sign-in", _json, json={"user_id": user_id}, retry="connect")


def demo_directory() -> Call:
    return Call("GET", "/v1/demo/directory", _json)


_UNSET: Any = object()


def settings_changes(personalization: bool | None, muted_keywords: list[str] | None,
                     daily_limit_minutes: Any, hidden_creators: list[str] | None,
                     hidden_sounds: list[str] | None, young_viewer: bool | None) -> JSON:
    """Only the fields the caller gave: the server keeps the rest. ``daily_limit_minutes``
    distinguishes "not given" (``_UNSET``) from ``None`` (remove the limit)."""
    changes = _params(personalization=personalization, muted_keywords=muted_keywords,
                      hidden_creators=hidden_creators, hidden_sounds=hidden_sounds,
                      young_viewer=young_viewer)
    if daily_limit_minutes is not _UNSET:
        changes["daily_limit_minutes"] = daily_limit_minutes
    return changes


UNSET = _UNSET
