"""An app's documentation: offline /docs and /redoc, and OpenAPI a client can use (week 5).

- `serve_docs(app)`: Swagger UI and ReDoc from the fastapi-offline package's files,
  served by the app under /docs/assets. FastAPI's own pages load them from a CDN (and
  ReDoc's fonts from Google), so offline they stay blank. A Content-Security-Policy
  has the browser load nothing from another host. Build the app with
  `docs_url=None, redoc_url=None`.
- `operation_id`: for `generate_unique_id_function`. A client generator turns each
  operation id into a method name: `read_user`, not `read_user_users__user_id__get`.
- `document_headers(schema, ...)`: the headers this library's middleware adds
  (request id, timing, rate limits), written into the OpenAPI schema, where a client
  (and its generator) can see them. `CACHED_READ` and `IF_NONE_MATCH` do the same for
  a route answered by `shared.cache.cache_response`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
# The browser itself keeps the pages to this app's files: ReDoc's bundle would show
# Redocly's logo from their CDN. Both pages run an inline script and inline styles, and
# ReDoc's search runs in a worker made from a blob.
SAME_ORIGIN_ONLY = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:"
}
# What the pages load, with everything under ASSETS_PATH: what a rate limit leaves alone.
DOCS_PATHS = frozenset(("/docs", OAUTH2_REDIRECT_PATH, "/redoc", "/openapi.json"))


def operation_id(route: APIRoute) -> str:
    """The handler's name: unique within an app, and what a generated client calls it."""
    return route.name


def serve_docs(app: FastAPI) -> None:
    """Add /docs (and its OAuth2 redirect page) and /redoc, loading only the app's files."""
    # The package's static/ folder: swagger-ui-bundle.js, swagger-ui.css,
    # redoc.standalone.js and favicon.png.
    assets = StaticFiles(packages=[("fastapi_offline", "static")])
    app.mount(ASSETS_PATH, assets, name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy's prefix
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_PATH}",
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        page.headers.update(SAME_ORIGIN_ONLY)
        return page

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        """Where a browser-based OAuth2 flow (not the password form) hands back to /docs."""
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,  # ReDoc falls back to the browser's own fonts
        )
        page.headers.update(SAME_ORIGIN_ONLY)
        return page


def header(description: str, schema_type: str = "string") -> dict[str, Any]:
    """A response header as OpenAPI describes one."""
    return {"description": description, "schema": {"type": schema_type}}


# shared.observability.RequestContextMiddleware, on every response.
REQUEST_CONTEXT_HEADERS = {
    "X-Request-ID": header("The request's id: yours if it was well-formed, else a new one."),
    "X-Process-Time": header("How long the app took, in milliseconds.", "number"),
}
# shared.rate_limit.RateLimitMiddleware, on every response of a limited route.
RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": header('The budgets this route spends, e.g. `"default";q=60;w=60`.'),
    "RateLimit": header('What is left of each, e.g. `"default";r=59;t=42` (t: seconds).'),
}
RETRY_AFTER = {"Retry-After": header("Seconds to wait before trying again.", "integer")}
# shared.cache.cache_response: a 200 and its 304.
ETAG = {"ETag": header("This version of the body: send it back in If-None-Match.")}
CACHED_READ: dict[int | str, dict[str, Any]] = {
    200: {"headers": {**ETAG, "X-Cache": header("HIT, MISS or BYPASS (the cache is away).")}},
    304: {"description": "Not Modified: the `If-None-Match` ETag still matches", "headers": ETAG},
}
# For `openapi_extra=`: the route reads the header itself (see shared.cache.if_none_match).
IF_NONE_MATCH: dict[str, Any] = {
    "parameters": [
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "The ETag of the body you have: a 304 with no body if it is current.",
            "schema": {"type": "string"},
        }
    ]
}


def document_headers(
    schema: dict[str, Any], *, unlimited_paths: Collection[str] = ()
) -> dict[str, Any]:
    """Write the middleware's headers into every response of every operation.

    `unlimited_paths` are the paths the rate limiter leaves alone. Returns `schema`.
    """
    for path, operations in schema.get("paths", {}).items():
        limited = path not in unlimited_paths
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                # A new dict: a route's own headers may be a constant shared by routes.
                headers = {**response.get("headers", {}), **REQUEST_CONTEXT_HEADERS}
                if limited:
                    headers.update(RATE_LIMIT_HEADERS)
                    if status in ("429", "503"):  # refused: the limit, or busy
                        headers.update(RETRY_AFTER)
                response["headers"] = headers
    return schema
