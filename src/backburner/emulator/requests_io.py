"""Reading request bodies: JSON that fails to parse is the client's error, in the provider's shape."""

from __future__ import annotations

import json

from fastapi import Request

from backburner.emulator.errors import ProviderError
from backburner.emulator.records import Provider


async def read_json_object(
    request: Request, provider: Provider, max_bytes: int | None = None
) -> dict[str, object]:
    raw = await request.body()
    if max_bytes is not None and len(raw) > max_bytes:
        raise ProviderError(provider, 413, "Request exceeds the maximum allowed number of bytes.")
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise ProviderError(provider, 400, f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ProviderError(provider, 400, "The request body must be a JSON object.")
    return payload


def base_url(request: Request, configured: str | None) -> str:
    """The emulator's own address as the client sees it, for URLs handed back to it."""
    return (configured if configured is not None else str(request.base_url)).rstrip("/")
