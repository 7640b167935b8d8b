"""Interactive API documentation (Swagger UI) whose every file the app serves itself.

FastAPI's own /docs loads Swagger UI from a CDN, so it stays blank without Internet access;
here the page loads the copy shipped by the swagger-ui-bundle package from `{path}/static`.
ReDoc is left out: no package ships its script, and its page loads web fonts from the Internet.

In an app of your own, create it with `docs_url=None, redoc_url=None` (else FastAPI's /docs
route answers first) and call `install_docs(app)`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

# Swagger UI would otherwise send the document's URL to validator.swagger.io for a badge.
_SWAGGER_UI_PARAMETERS: dict[str, Any] = {"validatorUrl": None}


def install_docs(app: FastAPI, *, path: str = "/docs") -> None:
    """Serve Swagger UI for app's OpenAPI document at `path`, its files under `{path}/static`.

    Raises:
        ValueError: app serves no OpenAPI document (openapi_url=None), or path is not absolute.
    """
    if not app.openapi_url:
        raise ValueError("the app serves no OpenAPI document (openapi_url is None)")
    if not path.startswith("/") or path.endswith("/"):
        raise ValueError(f"path must start with / and not end with one: {path!r}")
    static = f"{path}/static"
    openapi_url = app.openapi_url
    parameters = {**_SWAGGER_UI_PARAMETERS, **(app.swagger_ui_parameters or {})}
    app.mount(static, StaticFiles(directory=swagger_ui_path), name="swagger-ui-static")

    async def swagger_ui(request: Request) -> HTMLResponse:
        # Behind a proxy that serves the app under a prefix (root_path), as FastAPI's /docs.
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{static}/swagger-ui.css",
            swagger_favicon_url=f"{root}{static}/favicon-32x32.png",
            swagger_ui_parameters=parameters,
        )

    app.add_api_route(path, swagger_ui, methods=["GET"], include_in_schema=False)
