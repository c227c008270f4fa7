"""Prometheus metrics of one app, in the app's own registry.

A registry per app (not the process-global one) keeps two apps in one process (tests, an
embedded demo) from sharing or double-registering counters.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
)
from starlette.routing import Match, Mount
from starlette.types import Scope

from reelrank.engine import Engine

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, engine: Engine):
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "reelrank_http_requests", "HTTP requests answered, by route template and status.",
            ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram(
            "reelrank_http_request_duration_seconds", "Time to answer an HTTP request.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.events_accepted = Counter(
            "reelrank_events_accepted", "Events newly stored.", registry=r)
        self.events_duplicates = Counter(
            "reelrank_events_duplicates", "Events re-sent with a known event_id (no-ops).",
            registry=r)
        self.items_upserted = Counter(
            "reelrank_items_upserted", "Catalog items inserted or replaced.", registry=r)
        self.feed_seconds = Histogram(
            "reelrank_feed_latency_seconds", "Time to build one feed page, by the mode served.",
            ["mode"], buckets=LATENCY_BUCKETS, registry=r)
        self.feed_items = Counter(
            "reelrank_feed_items_served", "Items sent in feed pages.", registry=r)
        catalog = Gauge("reelrank_catalog_items", "Items in the in-memory catalog.", registry=r)
        catalog.set_function(lambda: len(engine.catalog))
        users = Gauge("reelrank_live_users", "Viewers with live state in memory.", registry=r)
        users.set_function(lambda: engine.live.viewer_count())

    def render(self) -> bytes:
        return generate_latest(self.registry)


def request_target(scope: Scope) -> Scope:
    """What routing reads of a request, copied before routing runs: a mount rewrites the
    scope's ``root_path`` on the way in, after which the original path no longer matches."""
    return {"type": scope["type"], "path": scope.get("path", ""),
            "root_path": scope.get("root_path", ""), "method": scope.get("method", "GET")}


def route_label(scope: Scope, target: Scope) -> str:
    """The route template that answered a request, for the ``route`` label.

    FastAPI records the matched route in the scope only for its API routes; the plain routes
    (``/openapi.json``) and mounts (``/app/``, ``/docs/assets/``) are found again here by
    matching the app's routes. Only a path no route serves is ``unmatched``, so the label set
    stays bounded by the app's routes."""
    route = scope.get("route")
    if route is None:
        routes = getattr(getattr(scope.get("app"), "router", None), "routes", ())
        route = next((r for r in routes if r.matches(target)[0] is Match.FULL), None)
    if isinstance(route, Mount):
        return route.path + "/{path}"
    return getattr(route, "path", None) or "unmatched"
