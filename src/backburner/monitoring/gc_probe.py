"""Time spent in garbage collection, measured with ``gc.callbacks``.

A collection holds the GIL from start to end, so it stalls the loop whichever thread
triggered it; all collections are counted. The callback runs on every collection, the
frequent young ones included, so it does no more than read a clock and add.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

__all__ = ["GcTimer"]


class GcTimer:
    """Cumulative garbage-collection time since ``install()``.

    ``total_s()`` includes a collection still in progress, so a reader that gets the GIL
    between a collection's last step and its stop callback does not miss it.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        # (seconds of finished collections, start of the running one): one tuple, replaced
        # whole, so a reader on another thread never sees one field updated and not the other.
        self._state: tuple[float, float | None] = (0.0, None)
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._on_gc)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._on_gc)
            self._installed = False
            self._state = (self._state[0], None)

    def total_s(self) -> float:
        done_s, started_at = self._state
        return done_s + (self._clock() - started_at if started_at is not None else 0.0)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        done_s, started_at = self._state
        if phase == "start":
            self._state = (done_s, self._clock())
        elif started_at is not None:
            self._state = (done_s + self._clock() - started_at, None)
