"""What every provider request passes first: counting, the API key check, injected faults."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter

from fastapi import Request

from backburner.emulator.errors import ProviderError
from backburner.emulator.faults import FAULT_STATUS, REQUEST_FAULTS, FaultBook, FaultKind, RouteName
from backburner.emulator.records import Provider

log = logging.getLogger("backburner.emulator")

_FAULT_MESSAGES = {
    "rate_limit": "Emulated rate limit: slow down.",
    "server_error": "Emulated internal server error.",
    "overloaded": "Emulated overload.",
    "not_found": "Emulated not found.",
}
_STREAM_FAULTS: frozenset[FaultKind] = frozenset({"cut_stream"})


class RequestStats:
    """Requests per route, and how many of them met an injected fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.faults_applied: Counter[str] = Counter()

    def count(self, route: RouteName, faulted: bool = False) -> None:
        with self._lock:
            if faulted:
                self.faults_applied[route] += 1
            else:
                self.requests[route] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"requests": dict(self.requests), "faults_applied": dict(self.faults_applied)}

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults_applied.clear()


class Gate:
    def __init__(self, faults: FaultBook, stats: RequestStats) -> None:
        self.faults = faults
        self.stats = stats

    async def enter(self, request: Request, route: RouteName, resource_id: str | None = None) -> None:
        """Counts the request, checks its key and applies the first matching request fault."""
        provider: Provider = "anthropic" if route.startswith("anthropic.") else "openai"
        self.stats.count(route)
        _require_api_key(request, provider)
        rule = self.faults.take(route, resource_id, REQUEST_FAULTS)
        if rule is None:
            return
        self._applied(route, rule.kind, resource_id)
        if rule.kind == "delay":
            await asyncio.sleep(rule.delay_s)
            return
        retry_after = rule.retry_after_header()
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        raise ProviderError(provider, FAULT_STATUS[rule.kind], _FAULT_MESSAGES[rule.kind], headers=headers)

    def stream_cut(self, route: RouteName, resource_id: str | None) -> int | None:
        """Lines to send before dropping the connection, if a ``cut_stream`` fault applies."""
        rule = self.faults.take(route, resource_id, _STREAM_FAULTS)
        if rule is None:
            return None
        self._applied(route, rule.kind, resource_id)
        return rule.after_lines

    def _applied(self, route: RouteName, kind: FaultKind, resource_id: str | None) -> None:
        self.stats.count(route, faulted=True)
        log.info(
            "emulator.fault_applied",
            extra={
                "event": "emulator.fault_applied",
                "route": route,
                "kind": kind,
                "resource_id": resource_id,
            },
        )


def _require_api_key(request: Request, provider: Provider) -> None:
    headers = request.headers
    if headers.get("x-api-key"):
        return
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return
    if provider == "anthropic":
        message = "x-api-key header is required"
    else:
        message = "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
    raise ProviderError(provider, 401, message)
