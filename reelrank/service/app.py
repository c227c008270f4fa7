"""The HTTP service: ``create_app(engine, auth)`` assembles routes, error handling and metrics.

The routes are thin (parse, call the ``Engine``, shape the answer); this module owns what is
common to all of them:

- one error shape for every non-2xx answer,
  ``{"error": {"code": "<snake_case>", "message": "...", "details": [...]}}``, whatever raised it:
  request validation (422 ``invalid_input``, each detail naming its field as ``events[3].type``
  and the batch ``index``), the engine's errors, HTTP errors, and unexpected exceptions (500
  ``internal_error``, logged with the stack, none of it in the body);
- request metrics by route template;
- the request guard (``service/guard.py``): size caps checked before a body is read,
  authentication before parsing, and a bound on requests in flight.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from http import HTTPStatus
from typing import Any, Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import reelrank
from reelrank.engine import Engine
from reelrank.errors import (
    AuthError, ForbiddenError, NotFoundError, ReelRankError, StoreError, ValidationError,
)
from reelrank.service.deps import Authenticator, bearer_token, needs_token
from reelrank.service.guard import GuardState, RequestGuard, RequestLimits
from reelrank.service.lanes import FeedLanes
from reelrank import communities
from reelrank.insights import insights_for
from reelrank.pipeline import topics as learned_topics
from reelrank.service.metrics import ServiceMetrics, request_target, route_label
from reelrank.service.runtime import Runtime
from reelrank.service.routes import creators, stats
from reelrank.service.routes import topics as topic_routes
from reelrank.service.stats import LiveStats
from reelrank.service.routes import (
    admin, apidocs, catalog, feed, ops, transparency, users, web,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = RequestLimits().max_body_bytes
MAX_ERROR_DETAILS = 100


def create_app(engine: Engine, auth: Authenticator | None, *,
               max_body_bytes: int | None = None, demo: bool = False,
               limits: RequestLimits | None = None, runtime: Runtime | None = None) -> FastAPI:
    """An app serving ``engine`` (already loaded), with ``runtime``'s background work (training
    jobs, the online trainer, erasure rebuilds; a new idle one if None: the caller starts what
    it wants running, and stops it). ``auth=None`` switches authentication off:
    every request acts as admin (``--insecure-no-auth``, local trials only). ``demo=True``
    (``reelrank demo`` only) turns on the web app's demo sign-in, which hands out tokens.
    ``limits`` are the request guard's caps; ``max_body_bytes`` overrides only the body's."""
    limits = limits or RequestLimits()
    if max_body_bytes is not None:
        limits = dataclasses.replace(limits, max_body_bytes=max_body_bytes)
    app = FastAPI(
        title="ReelRank", version=reelrank.__version__,
        description="A real-time 'For You' feed engine for short video (HTTP API v1).",
        # /docs is served from the package's own files (routes/apidocs.py), not from a CDN.
        docs_url=None, redoc_url=None,
    )
    metrics = ServiceMetrics(engine)
    app.state.engine = engine
    app.state.runtime = runtime if runtime is not None else Runtime(engine)
    app.state.auth = auth
    app.state.metrics = metrics
    app.state.stats = LiveStats(engine, metrics)
    # Learned topics for the re-ranker, wellbeing, insights and the operators' routes.
    app.state.topics = learned_topics.install(engine)
    app.state.communities = communities.install(engine, app.state.topics)
    app.state.insights = insights_for(engine, topics=app.state.topics,
                                      communities=app.state.communities)
    for module in (creators, stats, topic_routes):
        app.include_router(module.router)
    for module in (catalog, feed, users, ops, admin, transparency):
        app.include_router(module.router)
    web.install(app, demo=demo)
    apidocs.install(app)
    _install_error_handlers(app)
    # Added first, so it runs inside _ObserveRequests: its refusals are counted in /metrics.
    app.state.guard = GuardState(limits)
    app.state.lanes = FeedLanes(limits.feed_threads)  # the feed routes' threads (lanes.py)
    app.add_middleware(RequestGuard, state=app.state.guard,
                       needs_token=functools.partial(needs_token, also=(web.any_principal,)))
    app.add_middleware(_ObserveRequests, metrics=metrics)
    return app


# -- errors -----------------------------------------------------------------------------------
def error_response(status: int, code: str, message: str, details: Iterable[dict] = (),
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": list(details)}},
        status_code=status, headers=headers,
    )


def _code_for_status(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return f"http_{status}"
    return phrase.lower().replace(" ", "_").replace("-", "_").replace("'", "")


_LOC_SOURCES = {"body", "query", "path", "header", "cookie"}


def field_path(loc: Iterable[Any]) -> tuple[str, int | None]:
    """Pydantic's ``("body", "events", 3, "type")`` as ``("events[3].type", 3)``: the dotted
    and bracketed path of the field, and the index of the batch element it sits in."""
    parts = list(loc)
    if parts and parts[0] in _LOC_SOURCES:
        parts = parts[1:]
    text, index = "", None
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
            if index is None:
                index = part
        elif str(part).isidentifier():
            text += f".{part}" if text else str(part)
        else:
            text += f"[{json.dumps(str(part))}]"
    return text or "body", index


def _validation_details(errors: Iterable[dict]) -> list[dict]:
    details = []
    for err in errors:
        if err.get("type") == "json_invalid":
            pos = err.get("loc", ("body", None))[-1]
            reason = (err.get("ctx") or {}).get("error", "malformed JSON")
            details.append({"field": "body", "message": f"malformed JSON: {reason} "
                                                         f"(at character {pos})"})
            continue
        field, index = field_path(err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            message = "unknown field: not part of the API contract"
        elif err.get("type") == "missing":
            message = "required"
        else:
            message = err.get("msg", "invalid")
        detail: dict[str, Any] = {"field": field, "message": message}
        if index is not None:
            detail["index"] = index
        details.append(detail)
    return details


def _summary(details: list[dict], what: str) -> str:
    indexes = {d["index"] for d in details if d.get("index") is not None}
    if indexes:
        noun = "element" if len(indexes) == 1 else "elements"
        text = (f"{what}: {len(indexes)} invalid {noun} (see each detail's index); the whole "
                "request was rejected and nothing of it was stored")
    else:
        noun = "problem" if len(details) == 1 else "problems"
        text = f"{what}: {len(details)} {noun}"
    if len(details) > MAX_ERROR_DETAILS:
        text += f"; the first {MAX_ERROR_DETAILS} of {len(details)} problems are listed"
    return text


def _capped(details: list[dict]) -> list[dict]:
    return details[:MAX_ERROR_DETAILS]


def _body_not_json(request: Request, errors: list[dict]) -> bool:
    """A body that was never parsed as JSON (a form, or no content type: curl's ``-d``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = content_type == "application/json" or content_type.endswith("+json")
    return not is_json and any(tuple(e.get("loc", ())) == ("body",)
                               and e.get("type") != "missing" for e in errors)


def _unauthorized(exc: AuthError) -> JSONResponse:
    return error_response(401, AuthError.code, str(exc), headers={"WWW-Authenticate": "Bearer"})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        auth: Authenticator | None = request.app.state.auth
        if auth is not None and any(e.get("type") == "json_invalid" for e in errors):
            # The body is parsed before the route's access dependency runs; without this an
            # anonymous caller would get a 422 where every other request gets a 401.
            try:
                await run_in_threadpool(auth.identify, bearer_token(request))
            except AuthError as auth_exc:
                return _unauthorized(auth_exc)
        details = _validation_details(errors)
        if _body_not_json(request, errors):
            details = [{"field": "body", "message": "the body must be a JSON object, sent with "
                                                    "'Content-Type: application/json'"}]
        return error_response(422, ValidationError.code, _summary(details, "invalid request"),
                              _capped(details))

    @app.exception_handler(ValidationError)
    async def on_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        details = []
        for p in exc.problems:
            d: dict[str, Any] = {"field": p.field, "message": p.message}
            if p.index is not None:
                d["index"] = p.index
            details.append(d)
        return error_response(422, exc.code, str(exc), _capped(details))

    @app.exception_handler(NotFoundError)
    async def on_not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return error_response(404, exc.code, str(exc))

    @app.exception_handler(AuthError)
    async def on_auth(request: Request, exc: AuthError) -> JSONResponse:
        return _unauthorized(exc)

    @app.exception_handler(ForbiddenError)
    async def on_forbidden(request: Request, exc: ForbiddenError) -> JSONResponse:
        # Some refusals name fields (a user token posting another viewer's events).
        details = [{"field": p.field, "message": p.message, "index": p.index}
                   for p in getattr(exc, "problems", ())]
        return error_response(403, exc.code, str(exc), _capped(details))

    @app.exception_handler(StoreError)
    async def on_store(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, exc.code, "the store is unavailable; try again")

    @app.exception_handler(ReelRankError)
    async def on_other(request: Request, exc: ReelRankError) -> JSONResponse:
        log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        return error_response(500, exc.code, "the service failed; it was logged")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else _code_for_status(exc.status_code)
        return error_response(exc.status_code, _code_for_status(exc.status_code), message,
                              headers=getattr(exc, "headers", None))


# -- metrics, last-resort errors --------------------------------------------------------------
class _ObserveRequests:
    """ASGI middleware: times and counts requests by route template (never the raw path: user
    ids would explode the label set), and turns an exception no handler took into the 500
    error shape."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        target = request_target(scope)
        status = 500
        response_started = False

        async def observed_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if response_started:
                raise
            await error_response(500, "internal_error", "the service failed; it was logged")(
                scope, receive, observed_send)
        finally:
            route = route_label(scope, target)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_seconds.labels(method, route).observe(
                time.perf_counter() - started)

