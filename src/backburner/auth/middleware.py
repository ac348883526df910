"""Authentication of every `/v1` and `/api/admin` request, in one place so no route is forgotten.

The principal is put in the request state; `backburner.api.deps.get_principal` reads it, and every
query is scoped by its organization.
"""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from backburner.auth.principal import OPEN_PRINCIPAL, Principal
from backburner.auth.store import authenticate
from backburner.settings import Settings

PROTECTED_PREFIXES = ("/v1/", "/api/admin/")
ADMIN_PREFIX = "/api/admin/"


def is_protected(path: str, *, metrics_closed: bool) -> bool:
    return (
        path.startswith(PROTECTED_PREFIXES)
        or path in ("/v1", "/api/admin")
        or (metrics_closed and path == "/metrics")
    )


async def send_json_error(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings, engine: AsyncEngine) -> None:
        self.app = app
        self.settings = settings
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings
        path: str = scope["path"]
        principal: Principal | None = OPEN_PRINCIPAL
        if settings.effective_auth_mode == "keys":
            # Open routes (health, readiness, metrics, the pages) never look a key up: they
            # must answer while the database is away, whatever headers a caller sends.
            principal = None
            if is_protected(path, metrics_closed=settings.metrics_require_auth):
                principal = await self._principal(scope)
                if principal is None:
                    await send_json_error(
                        send,
                        401,
                        "a valid API key is required: send `Authorization: Bearer <key>`",
                        {"www-authenticate": "Bearer"},
                    )
                    return
                if path.startswith(ADMIN_PREFIX) and not principal.is_admin:
                    await send_json_error(send, 403, "this route needs an admin key")
                    return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _principal(self, scope: Scope) -> Principal | None:
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return await authenticate(self.engine, token.strip())
