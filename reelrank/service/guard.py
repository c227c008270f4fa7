"""The request guard: what every HTTP request must pass before any route reads it.

A pure ASGI middleware, so that nothing of a request is parsed before it has been judged:

1. the request target: a query string or path over its length cap is a 414, and one whose
   percent-decoded bytes are not UTF-8 is a 400 (otherwise ``%FF%FE`` would silently become
   U+FFFD and name a viewer nobody meant);
2. the declared body: a ``Content-Length`` over the cap is a 413 before one byte of the body is
   read; a body that arrives without one (chunked) is counted while it streams and answered 413
   the moment it passes the cap, so at most the cap is ever held in memory;
3. overload: a bounded number of requests in flight, globally (503) and per token (429), each
   with ``Retry-After``. A server past its capacity says so at once, rather than queueing every
   caller into timeouts while its memory grows;
4. authentication, for routes that need a token, before the body or the query is parsed: a
   50 MB body without a valid token is answered 401 without being read. The principal found is
   kept on the request, so the route's own access rule (``deps.Access``) does not look it up
   again; the scope check (403) stays with the route, which knows what it allows.

``/healthz`` and ``/metrics`` are never refused for overload: an operator must be able to see a
saturated server.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelrank.errors import AuthError

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The guard's caps. A batch of 10,000 events is about 2 MB of JSON and one of 10,000
    items with long captions can pass 5 MB, so 8 MB leaves room without letting one request
    hold a server's memory."""

    max_body_bytes: int = 8 * MB
    max_query_bytes: int = 4096  # a feed request with every parameter at its cap is < 1 KB
    max_path_bytes: int = 2048  # the longest route plus a 128-character id, percent-encoded
    max_in_flight: int = 128  # requests being served at once, all callers together
    max_in_flight_per_token: int = 64  # one caller's share: the app backend is one token
    retry_after_s: int = 1
    # Feeds (and /v1/rank, /v1/explain) computed at once; the rest wait their turn in the
    # event loop. The pipeline is Python under one interpreter lock: sixteen at once take
    # turns on it every few milliseconds and cost half as much CPU again per feed. Two let one
    # run the models (which release the lock) while the other runs Python: at 16 clients 26%
    # more feeds/s than 40 at once, p99 halved (benchmarks/results/throughput-lanes.md).
    feed_threads: int = 2

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_query_bytes", "max_path_bytes", "max_in_flight",
                     "max_in_flight_per_token", "retry_after_s", "feed_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


UNLIMITED_PATHS = frozenset({"/healthz", "/metrics"})


class GuardState:
    """The guard's limits and live counters, shared between the middleware (which Starlette
    builds lazily) and ``GET /v1/stats``."""

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.in_flight = 0
        self.per_token: dict[str, int] = {}
        self.refused = {"body_too_large": 0, "uri_too_long": 0, "bad_encoding": 0,
                        "overloaded": 0, "token_busy": 0, "unauthenticated": 0}

    def view(self) -> dict:
        """What ``GET /v1/stats`` shows of the guard: its limits, load and refusals."""
        limits = {name: getattr(self.limits, name) for name in self.limits.__slots__}
        return {"limits": limits, "in_flight": self.in_flight,
                "tokens_in_flight": len(self.per_token), "refused": dict(self.refused)}


class RequestGuard:
    """ASGI middleware enforcing ``RequestLimits`` and authentication before parsing; see the
    module docstring. ``needs_token(route)`` says whether a route requires a valid token."""

    def __init__(self, app: ASGIApp, state: GuardState, needs_token) -> None:
        self.app = app
        self.state = state
        self.limits = state.limits
        self.needs_token = needs_token
        self._route_rules: dict[int, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check_target(scope) or self._check_declared_body(scope)
        if refusal is not None:
            await self._refuse(scope, receive, send, *refusal)
            return
        path = scope.get("path", "")
        if path in UNLIMITED_PATHS:
            await self.app(scope, self._limited(receive), send)
            return
        token = _bearer(scope)
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16] \
            if token else None
        if self.state.in_flight >= self.limits.max_in_flight:
            self.state.refused["overloaded"] += 1
            await self._refuse(scope, receive, send, 503, "service_unavailable",
                               "the server is at its limit of requests in flight; retry after "
                               f"{self.limits.retry_after_s} s", retry=True)
            return
        busy = self.state.per_token.get(key, 0) if key is not None else 0
        if busy >= self.limits.max_in_flight_per_token:
            self.state.refused["token_busy"] += 1
            await self._refuse(scope, receive, send, 429, "too_many_requests",
                               "this token has too many requests in flight; retry after "
                               f"{self.limits.retry_after_s} s", retry=True)
            return
        # The counters change only on the event loop's thread, between awaits: no lock needed.
        self.state.in_flight += 1
        if key is not None:
            self.state.per_token[key] = self.state.per_token.get(key, 0) + 1
        try:
            if not await self._authenticate(scope, receive, send, token):
                return
            await self.app(scope, self._limited(receive), send)
        finally:
            self.state.in_flight -= 1
            if key is not None:
                left = self.state.per_token[key] - 1
                if left:
                    self.state.per_token[key] = left
                else:
                    del self.state.per_token[key]  # only tokens with requests now are held

    # -- the checks ---------------------------------------------------------------------------
    def _check_target(self, scope: Scope) -> tuple | None:
        query: bytes = scope.get("query_string", b"")
        raw_path: bytes = scope.get("raw_path") or scope.get("path", "").encode()
        if len(query) > self.limits.max_query_bytes:
            self.state.refused["uri_too_long"] += 1
            return (414, "request_uri_too_long", f"the query string is over "
                    f"{self.limits.max_query_bytes} bytes", [{"field": "query", "message":
                    f"{len(query)} bytes; at most {self.limits.max_query_bytes}"}])
        if len(raw_path) > self.limits.max_path_bytes:
            self.state.refused["uri_too_long"] += 1
            return (414, "request_uri_too_long",
                    f"the path is over {self.limits.max_path_bytes} bytes",
                    [{"field": "path", "message": f"at most {self.limits.max_path_bytes} bytes"}])
        problems = _encoding_problems(raw_path, query)
        if problems:
            self.state.refused["bad_encoding"] += 1
            return (400, "bad_request", "the request target is not valid UTF-8 once "
                    "percent-decoded", problems)
        return None

    def _check_declared_body(self, scope: Scope) -> tuple | None:
        declared = _header(scope, b"content-length")
        if declared is None:
            return None
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            return (400, "bad_request", "Content-Length is not a byte count",
                    [{"field": "Content-Length", "message": "must be a non-negative integer"}])
        if length > self.limits.max_body_bytes:
            self.state.refused["body_too_large"] += 1
            return (413, "request_entity_too_large", self._too_large,
                    [{"field": "body", "message": f"declared {length} bytes"}])
        return None

    async def _authenticate(self, scope: Scope, receive: Receive, send: Send,
                            token: str | None) -> bool:
        app = scope.get("app")
        auth = getattr(getattr(app, "state", None), "auth", None)
        if auth is None or not self._route_needs_token(app, scope):
            return True
        try:
            # A store lookup: off the event loop, like every other blocking call.
            principal = await run_in_threadpool(auth.identify, token)
        except AuthError as exc:
            self.state.refused["unauthenticated"] += 1
            await self._refuse(scope, receive, send, 401, AuthError.code, str(exc),
                               headers={"WWW-Authenticate": "Bearer"})
            return False
        scope.setdefault("state", {})["principal"] = principal
        return True

    def _route_needs_token(self, app, scope: Scope) -> bool:
        partial: BaseRoute | None = None
        for route in _flat_routes(app.router.routes):
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return self._rule(route)
            if match == Match.PARTIAL and partial is None:
                partial = route  # the path matches, the method does not: a 405 follows
        return self._rule(partial) if partial is not None else False

    def _rule(self, route: BaseRoute) -> bool:
        rule = self._route_rules.get(id(route))
        if rule is None:
            rule = self._route_rules[id(route)] = bool(self.needs_token(route))
        return rule

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that counts body bytes and stops a body passing the cap while it
        streams (one without a Content-Length, or one longer than it said)."""
        received = 0
        cap = self.limits.max_body_bytes

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    self.state.refused["body_too_large"] += 1
                    # Raised inside the route's body reading; FastAPI passes an HTTPException
                    # on, and the app's handler answers it with the error shape.
                    raise HTTPException(413, self._too_large)
            return message

        return limited

    @property
    def _too_large(self) -> str:
        return f"the request body is over {self.limits.max_body_bytes} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, code: str,
                      message: str, details: list | None = None, *, retry: bool = False,
                      headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": {"code": code, "message": message,
                                     "details": details or []}}).encode()
        out = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
        if retry:
            out.append((b"retry-after", str(self.limits.retry_after_s).encode()))
        for name, value in (headers or {}).items():
            out.append((name.lower().encode(), value.encode()))
        if status in (400, 413, 414):
            # The body is left unread: ask the client not to keep sending it on this
            # connection (the server closes it after the answer).
            out.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


# -- helpers ----------------------------------------------------------------------------------
def _flat_routes(routes):
    """The app's routes in matching order, with included routers opened up: FastAPI keeps an
    included router as one lazy entry whose own match does not say which route it found."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat_routes(inner.routes)
        else:
            yield route


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def _bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _encoding_problems(raw_path: bytes, query: bytes) -> list[dict]:
    problems = []
    try:
        unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        problems.append({"field": "path", "message": "not valid UTF-8 once percent-decoded"})
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        try:
            decoded_name = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            problems.append({"field": "query", "message": "a parameter name is not valid UTF-8 "
                                                          "once percent-decoded"})
            continue
        try:
            unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            problems.append({"field": decoded_name or "query",
                             "message": "not valid UTF-8 once percent-decoded"})
    return problems
