"""Response headers for browsers: a strict policy for the pages we serve, and CORS only when asked.

The dashboard and the API docs load scripts and styles from their own origin only (no inline
code), so their Content-Security-Policy allows nothing else; no page may be framed, no type is
sniffed, no referrer leaves. CORS is off unless `cors_allowed_origins` names origins.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_PREFIXES = ("/dashboard", "/docs")
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI sets style attributes from its scripts; its scripts are still ours alone.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
EVERY_RESPONSE = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
CORS_HEADERS = ("authorization", "content-type", "idempotency-key")
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def page_policy(path: str) -> bytes | None:
    if path == "/dashboard" or path.startswith("/dashboard/"):
        return DASHBOARD_CSP.encode()
    if path == "/docs" or path.startswith("/docs/"):
        return DOCS_CSP.encode()
    return None


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = page_policy(scope["path"])

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *EVERY_RESPONSE]
                if policy is not None:
                    headers.append((b"content-security-policy", policy))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def add_cors(app: FastAPI, origins: tuple[str, ...]) -> None:
    """Answer CORS for exactly these origins; with none, add nothing (browsers then refuse)."""
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=list(CORS_METHODS),
            allow_headers=list(CORS_HEADERS),
            expose_headers=["retry-after", "x-batch-status"],
            max_age=600,
        )
