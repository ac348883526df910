"""Calls out to the application, shared by batch completions and user schedules: HMAC-SHA256
signatures of webhook bodies, and Python callables named in the settings.

A signature is the header `Backburner-Signature: t=<unix>,v1=<hex>`, where `<hex>` is the
HMAC-SHA256 of `"<unix>." + body` with the shared secret; a receiver recomputes it and compares.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from backburner.tasks import wait_for

SIGNATURE_HEADER = "Backburner-Signature"

Handler = Callable[[Any], Any]


class HandlerNotFound(ValueError):
    pass


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def resolve_handler(reference: str, setting: str = "batch_completion_handler") -> Handler:
    """Import `package.module:function`; a wrong reference stops start-up naming `setting`."""
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerNotFound(f"{setting} {reference!r}: cannot import {module_name}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise HandlerNotFound(f"{setting} {reference!r}: {attribute} is not a callable in {module_name}")
    handler: Handler = target
    return handler


async def call_handler(handler: Handler, value: Any, timeout_s: float) -> None:
    """Call a sync or async handler with `value`, within `timeout_s`."""
    if inspect.iscoroutinefunction(handler):
        await wait_for(handler(value), timeout_s)
        return
    # A blocking handler runs in the thread pool so that it never stalls the loop.
    result = await wait_for(asyncio.to_thread(handler, value), timeout_s)
    if inspect.isawaitable(result):
        await wait_for(result, timeout_s)
