"""`/docs`: Swagger UI served entirely from this process, so it works without the internet.

The assets come from the `swagger-ui-py` package (Swagger UI 5, which reads OpenAPI 3.1); the
page and the script that starts it are ours, with no inline code, so a strict
Content-Security-Policy holds. FastAPI's own `/docs` and `/redoc` load from a CDN and are off.
"""

from __future__ import annotations

import importlib.util
from importlib.resources import files as package_files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

OUR_STATIC = package_files("backburner.api") / "docs_static"


def swagger_ui_assets() -> Path:
    """The directory of Swagger UI's files inside the installed `swagger_ui` package (not imported:
    only its files are used)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing; reinstall Backburner")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install_docs(app: FastAPI) -> None:
    page = (OUR_STATIC / "docs.html").read_text(encoding="utf-8")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_assets())), name="docs-assets")
    app.mount("/docs/static", StaticFiles(directory=str(OUR_STATIC)), name="docs-static")
