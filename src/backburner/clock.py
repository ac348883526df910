"""The clock is an interface so that decisions can take `now` as an argument and tests can steer it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_or_none(moment: datetime | None) -> str | None:
    """RFC 3339 text of a moment for JSON answers; None stays None."""
    return moment.isoformat() if moment is not None else None
