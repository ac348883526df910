"""The FastAPI app factory; its lifespan runs the instance's runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from backburner import __version__
from backburner.api import admin_scheduler, admin_watchdog, batches, files, health, reembed
from backburner.api.docs import install_docs
from backburner.api.errors import ErrorsMiddleware, install_error_handlers
from backburner.api.headers import SecurityHeadersMiddleware, add_cors
from backburner.api.http_metrics import HttpMetricsMiddleware
from backburner.api.json_body import JsonBodyMiddleware
from backburner.api.limits import LimitsMiddleware, is_batch_submission
from backburner.api.openapi import install_openapi
from backburner.auth.middleware import AuthMiddleware
from backburner.dashboard import router as dashboard
from backburner.runtime import Runtime, run_as_process
from backburner.schedules import api as schedules
from backburner.settings_loader import LoadedSettings


def create_app(loaded: LoadedSettings, *, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """The app; `on_fatal` is told when start-up meets a problem that waiting cannot fix."""
    runtime = Runtime(loaded, role="serve", on_fatal=on_fatal)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with run_as_process(runtime):
            yield

    app = FastAPI(
        title="Backburner",
        version=__version__,
        description="Background processing for LLM agent servers.",
        lifespan=lifespan,
        docs_url=None,  # served by `install_docs` from the package, not a CDN
        redoc_url=None,
    )
    app.state.runtime = runtime  # read by `api.deps` only
    # Added innermost first: metrics see every answer, errors become JSON, CORS preflights are
    # answered before auth, auth runs before the limits that need the key, and JSON bodies are
    # checked once their size is known to be within the limit.
    app.add_middleware(JsonBodyMiddleware, skip=is_batch_submission)
    app.add_middleware(LimitsMiddleware, settings=runtime.settings)
    app.add_middleware(AuthMiddleware, settings=runtime.settings, engine=runtime.engine)
    add_cors(app, runtime.settings.cors_allowed_origins)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(ErrorsMiddleware)
    app.add_middleware(HttpMetricsMiddleware, metrics=runtime.metrics.http)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(batches.router)
    app.include_router(batches.admin_router)
    app.include_router(files.router)
    app.include_router(reembed.router)
    app.include_router(schedules.router)
    app.include_router(admin_scheduler.router)
    app.include_router(admin_watchdog.router)
    app.include_router(dashboard.router)
    app.mount("/dashboard/static", dashboard.static_files(), name="dashboard-static")
    install_docs(app)
    install_openapi(app, loaded.settings)  # after every router: it documents them all
    return app
