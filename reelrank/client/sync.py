"""``ReelRankClient``: the blocking client (one ``httpx.Client``, its connections reused)."""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

import httpx

from reelrank.client import calls
from reelrank.client.calls import MAX_BATCH, UNSET, Call, RetryPolicy
from reelrank.client.models import (
    Event, EventsResult, FeedPage, Health, Item, ItemsLookup, ItemsResult, Job, RankResult,
    Settings,
)

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class ReelRankClient:
    """Typed methods for every endpoint of a ReelRank server.

    ``token`` is sent as a bearer token (an ``ingest``, ``serve`` or ``admin`` token, or a
    viewer's own). Failed requests that are safe to repeat are retried by ``retry``; errors
    come back as ``reelrank.client.ApiError`` subclasses. Use it as a context manager, or call
    ``close()``."""

    def __init__(self, base_url: str, token: str | None = None, *,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.retry = retry if retry is not None else RetryPolicy()
        self._http = httpx.Client(base_url=base_url, headers=_headers(token), timeout=timeout,
                                  transport=transport)

    def __enter__(self) -> "ReelRankClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, params=call.params,
                                              json=call.json)
            except httpx.TransportError as exc:
                if attempt >= self.retry.retries or not calls.may_retry(call, error=exc):
                    raise
                time.sleep(self.retry.delay(attempt, None))
            else:
                if attempt >= self.retry.retries or not calls.may_retry(call, response=response):
                    return calls.finish(call, response)
                time.sleep(self.retry.delay(attempt, response))
            attempt += 1

    # -- writes (batched) ------------------------------------------------------------------
    def send_events(self, events: Iterable[Event | Mapping[str, Any]], *,
                    batch_size: int = MAX_BATCH) -> EventsResult:
        """Send events in batches of at most ``batch_size`` (the API takes 10,000). Events
        without an ``event_id`` get one before their batch is first sent, so retries never
        count an event twice. A refused batch raises ``InvalidInputError`` whose indexes point
        into ``events``; the batches before it are stored (``err.sent_before`` events)."""
        accepted = duplicates = batches = 0
        ids: list[str] = []
        for batch_ids, call in calls.event_batches(events, batch_size):
            answer = self._run(call)
            accepted += answer["accepted"]
            duplicates += answer["duplicates"]
            batches += 1
            ids += batch_ids
        return EventsResult(accepted, duplicates, batches, ids)

    def upsert_items(self, items: Iterable[Item | Mapping[str, Any]], *,
                     batch_size: int = MAX_BATCH) -> ItemsResult:
        """Insert or replace catalog items, in batches of at most ``batch_size``."""
        upserted = batches = 0
        for call in calls.item_batches(items, batch_size):
            upserted += self._run(call)["upserted"]
            batches += 1
        return ItemsResult(upserted, batches)

    # -- feed ------------------------------------------------------------------------------
    def feed(self, user_id: str, n: int = 10, *, mode: str | None = None,
             region: str | None = None, device: str | None = None, source: str | None = None,
             session_id: str | None = None, language: str | None = None) -> FeedPage:
        return self._run(calls.feed(user_id, n, mode, region, device, source, session_id,
                                    language))

    def rank(self, user_id: str, item_ids: list[str],
             context: Mapping[str, Any] | None = None) -> RankResult:
        return self._run(calls.rank(user_id, item_ids, context))

    def explain(self, user_id: str, item_id: str) -> dict[str, Any]:
        return self._run(calls.explain(user_id, item_id))

    def get_items(self, item_ids: list[str]) -> ItemsLookup:
        return self._run(calls.get_items(item_ids))

    # -- the viewer's data and controls ----------------------------------------------------
    def get_settings(self, user_id: str) -> Settings:
        return self._run(calls.get_settings(user_id))

    def update_settings(self, user_id: str, *, personalization: bool | None = None,
                        muted_keywords: list[str] | None = None,
                        daily_limit_minutes: int | None = UNSET,
                        hidden_creators: list[str] | None = None,
                        hidden_sounds: list[str] | None = None,
                        young_viewer: bool | None = None) -> Settings:
        """Change only the settings given (``daily_limit_minutes=None`` removes the limit)."""
        return self._run(calls.put_settings(user_id, calls.settings_changes(
            personalization, muted_keywords, daily_limit_minutes, hidden_creators,
            hidden_sounds, young_viewer)))

    def not_interested(self, user_id: str, item_id: str, scope: str = "video",
                       ts: int | None = None) -> Settings:
        return self._run(calls.not_interested(user_id, item_id, scope, ts))

    def export_data(self, user_id: str) -> dict[str, Any]:
        return self._run(calls.export_data(user_id))

    def access_log(self, user_id: str) -> list[dict[str, Any]]:
        return self._run(calls.access_log(user_id))

    def reset(self, user_id: str) -> None:
        self._run(calls.reset(user_id))

    def erase(self, user_id: str) -> None:
        self._run(calls.erase(user_id))

    # -- creators, operations --------------------------------------------------------------
    def creator_insights(self, creator_id: str) -> dict[str, Any]:
        return self._run(calls.creator_insights(creator_id))

    def mint_user_token(self, user_id: str) -> str:
        return self._run(calls.mint_user_token(user_id))

    def train(self) -> str:
        """Start a training run; returns its job id (see ``job`` and ``wait_for_job``)."""
        return self._run(calls.train())

    def job(self, job_id: str) -> Job:
        return self._run(calls.job(job_id))

    def wait_for_job(self, job_id: str, *, poll_s: float = 1.0,
                     timeout_s: float = 3600.0) -> Job:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job.finished:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def trainer_status(self) -> dict[str, Any]:
        return self._run(calls.trainer_status())

    def stats(self) -> dict[str, Any]:
        return self._run(calls.stats())

    def transparency(self) -> dict[str, Any]:
        return self._run(calls.transparency())

    def health(self) -> Health:
        return self._run(calls.health())

    def metrics(self) -> str:
        return self._run(calls.metrics())

    def demo_status(self) -> dict[str, Any]:
        return self._run(calls.demo_status())

    def demo_sign_in(self, user_id: str) -> dict[str, Any]:
        return self._run(calls.demo_sign_in(user_id))

    def demo_directory(self) -> dict[str, Any]:
        return self._run(calls.demo_directory())
