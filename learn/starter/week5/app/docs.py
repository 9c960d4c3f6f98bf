"""The API's documentation: /docs and /redoc that work offline, and OpenAPI a client can use.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, a favicon from FastAPI's
website and ReDoc's fonts from Google: without internet access they stay blank. The
fastapi-offline package ships the same scripts, style sheet and favicon, so the app
serves them itself, under /docs/assets. The pages name no other host, and their
Content-Security-Policy has the browser load nothing from one.

A client generator turns each operation id into a method name: `operation_id` makes
them `read_user` instead of FastAPI's `read_user_users__user_id__get`.
"""

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

CONTACT: dict[str, Any] = {"name": "The fastapi-backend-course authors"}
LICENSE: dict[str, Any] = {"name": "MIT", "identifier": "MIT"}


def operation_id(route: APIRoute) -> str:
    """The handler's name: unique within the app, and what a generated client calls it."""
    return route.name


def serve_docs(app: FastAPI) -> None:
    """Add /docs (and its OAuth2 redirect page) and /redoc, loading only the app's files.

    Build the app with `docs_url=None, redoc_url=None`, so FastAPI adds no pages of its own.
    """
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
