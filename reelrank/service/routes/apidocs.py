"""``GET /docs``: Swagger UI for the API, served from files installed with the package.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, so it is blank on a machine without
internet access (and it makes every operator's browser call a third party). The assets here
come from the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads the OpenAPI 3.1
document FastAPI writes; Apache-2.0), mounted under ``/docs/assets/``.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

router = APIRouter(include_in_schema=False)

ASSETS = "/docs/assets"

# The page's only script is a file of ours, not inline code: the page works under a strict
# Content-Security-Policy that a deployment may put in front of it.
_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} - API reference</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi}"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

_INIT = """// Reads the document's address from the page, so the page needs no inline script.
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
});
"""


def install(app: FastAPI) -> None:
    """Add ``/docs`` and its assets to ``app`` (created with ``docs_url=None``)."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")


@router.get("/docs")
def docs_page(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return HTMLResponse(_PAGE.format(title=escape(request.app.title), assets=root + ASSETS,
                                     openapi=escape(root + (request.app.openapi_url or ""))))


@router.get("/docs/init.js")
def docs_init() -> Response:
    return Response(_INIT, media_type="text/javascript")
