"""Time for the emulator: an injectable clock that admin calls can move forward."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]
"""Returns the current time as Unix seconds (like :func:`time.time`)."""


class AdjustableClock:
    """Wraps a base clock with an offset, so tests can skip ahead instead of sleeping."""

    def __init__(self, base: Clock = time.time) -> None:
        self._base = base
        self._offset_s = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._base() + self._offset_s

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._offset_s += seconds
            return self._offset_s

    def reset(self) -> None:
        with self._lock:
            self._offset_s = 0.0


def rfc3339(unix_s: float) -> str:
    """Formats Unix seconds the way Anthropic does: UTC, microseconds, ``Z`` suffix."""
    return datetime.fromtimestamp(unix_s, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
