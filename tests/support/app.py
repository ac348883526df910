"""The API app with its runtime started in the test's own event loop, clients that call it
in-process, and API keys made straight in its database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from backburner.api.app import create_app
from backburner.auth import store
from backburner.clock import utcnow
from backburner.settings_loader import LoadedSettings


@asynccontextmanager
async def started_app(settings: LoadedSettings, ready_timeout_s: float = 30) -> AsyncIterator[FastAPI]:
    """The app built from `settings`, once its runtime is ready; shut down on exit."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.runtime.wait_ready(ready_timeout_s)
        yield app


def asgi_client(
    app: FastAPI,
    token: str | None = None,
    *,
    timeout_s: float = 30,
    raise_app_exceptions: bool = True,
    **headers: str,
) -> httpx.AsyncClient:
    """A client of `app` in-process, with `token` as its bearer key if given."""
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers, timeout=timeout_s)


async def make_key(
    app: FastAPI, organization: str, *, admin: bool = False, deployment_admin: bool = False
) -> str:
    """A new key of `organization` (named after it), as `backburner keys create` makes one."""
    _, token = await store.create_key(
        app.state.runtime.engine,
        organization=organization,
        name=organization,
        is_admin=admin,
        is_deployment_admin=deployment_admin,
        now=utcnow(),
    )
    return token
