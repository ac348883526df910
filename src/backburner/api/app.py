"""The FastAPI app factory; its lifespan runs the instance's runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from backburner import __version__
from backburner.api import admin_scheduler, admin_watchdog, batches, files, health
from backburner.api.http_metrics import HttpMetricsMiddleware
from backburner.api.limits import LimitsMiddleware
from backburner.api.openapi import install_openapi
from backburner.auth.middleware import AuthMiddleware
from backburner.dashboard import router as dashboard
from backburner.runtime import Runtime, run_as_process
from backburner.settings_loader import LoadedSettings


def create_app(loaded: LoadedSettings) -> FastAPI:
    runtime = Runtime(loaded, role="serve")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with run_as_process(runtime):
            yield

    app = FastAPI(
        title="Backburner",
        version=__version__,
        description="Background processing for LLM agent servers.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime  # read by `api.deps` only
    # Added innermost first: metrics see every answer, auth runs before the limits that need the key.
    app.add_middleware(LimitsMiddleware, settings=runtime.settings)
    app.add_middleware(AuthMiddleware, settings=runtime.settings, engine=runtime.engine)
    app.add_middleware(HttpMetricsMiddleware, metrics=runtime.metrics.http)
    app.include_router(health.router)
    app.include_router(batches.router)
    app.include_router(batches.admin_router)
    app.include_router(files.router)
    app.include_router(admin_scheduler.router)
    app.include_router(admin_watchdog.router)
    app.include_router(dashboard.router)
    app.mount("/dashboard/static", dashboard.static_files(), name="dashboard-static")
    install_openapi(app, loaded.settings)  # after every router: it documents them all
    return app
