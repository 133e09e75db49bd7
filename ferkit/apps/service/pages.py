"""The pages of the service: the web page at / (files in ``static/``) and the API docs at /docs, offline."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from ferkit.apps.service.upload import ServiceError

STATIC_DIR = Path(__file__).parent / "static"


class _WholeFiles(StaticFiles):
    """StaticFiles that always sends whole files: Starlette answers a malformed ``Range`` header with its own
    plain-text 400/416, not the service's JSON error, and byte ranges of a page's small files buy nothing."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)

        async def no_ranges(message) -> None:  # and it does not advertise them
            if message["type"] == "http.response.start":
                message = {**message, "headers": [(k, v) for k, v in message["headers"] if k != b"accept-ranges"]}
            await send(message)

        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
        await super().__call__(scope, receive, no_ranges)


def add_page_routes(app: FastAPI) -> None:
    """The web page at / and its files under /static/."""
    index = (STATIC_DIR / "index.html").read_bytes() if (STATIC_DIR / "index.html").is_file() else None

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        if index is None:
            raise ServiceError(404, "not_found", "web page files are missing from this installation")
        return HTMLResponse(index)

    if STATIC_DIR.is_dir():
        app.mount("/static", _WholeFiles(directory=STATIC_DIR), name="static")


def add_docs_routes(app: FastAPI) -> None:
    """Swagger UI at /docs from the ``swagger-ui-bundle`` package, so the API docs work offline
    (FastAPI's own /docs loads its JavaScript from a CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", _WholeFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="ferkit API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg")
