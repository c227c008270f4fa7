"""``/docs`` works with no internet access, and ``/metrics`` labels every served route."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.service import Authenticator, create_app


def test_the_api_docs_load_nothing_from_elsewhere(store):
    with TestClient(create_app(Engine(store).load(), Authenticator(store))) as c:
        page = c.get("/docs")  # no token: the reference is public, like /openapi.json
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert refs and not [r for r in refs if "//" in r]  # no other host, no CDN
        for ref in refs:
            if ref.startswith("data:"):
                continue
            asset = c.get(ref)
            assert asset.status_code == 200, ref
            assert len(asset.content) > 100, ref
        assert "SwaggerUIBundle" in c.get("/docs/assets/swagger-ui-bundle.js").text
        # The page points Swagger UI at the app's own document, which must be there.
        assert 'data-openapi-url="/openapi.json"' in page.text
        assert c.get("/openapi.json").json()["paths"]
        # FastAPI's CDN page and ReDoc are switched off, not merely shadowed.
        assert c.get("/redoc").status_code == 404


def test_metrics_label_docs_openapi_and_static_files_by_route(store):
    with TestClient(create_app(Engine(store).load(), None)) as c:
        for path in ("/openapi.json", "/docs", "/docs/assets/swagger-ui.css", "/app/",
                     "/app/app.css", "/v1/users/u1/settings", "/no/such/path"):
            c.get(path)
        text = c.get("/metrics").text
    labels = set(re.findall(r'reelrank_http_requests_total\{method="GET",route="([^"]+)"',
                            text))
    assert {"/openapi.json", "/docs", "/docs/assets/{path}", "/app/{path}",
            "/v1/users/{user_id}/settings"} <= labels
    # Only the path that no route serves is unmatched (and the raw id never appears).
    assert re.search(r'route="unmatched",status="404"\} 1\.0', text)
    assert "u1" not in "".join(labels)
