"""Alerts posted to a webhook when the loop keeps hanging.

Sent from the watchdog thread, synchronously: the loop is hung when an alert is due, so it
cannot send one itself. The timeout is short so the watchdog is soon back to watching.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import httpx

__all__ = ["AlertSender", "WebhookAlertSender"]


class AlertSender(Protocol):
    """Delivers one alert; raises on failure (the watchdog logs it and carries on)."""

    def __call__(self, url: str, payload: Mapping[str, object]) -> None: ...


class WebhookAlertSender:
    """POSTs the alert as JSON and treats any non-2xx answer as a failure."""

    def __init__(self, timeout_s: float = 2.0, transport: httpx.BaseTransport | None = None) -> None:
        self._timeout_s = timeout_s
        self._transport = transport

    def __call__(self, url: str, payload: Mapping[str, object]) -> None:
        with httpx.Client(timeout=self._timeout_s, transport=self._transport) as client:
            client.post(url, json=dict(payload)).raise_for_status()
