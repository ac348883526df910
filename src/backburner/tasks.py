"""Helpers for the background tasks that components own."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from backburner.logs import log_event

log = logging.getLogger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel tasks (None is skipped) and wait until all have finished unwinding.

    `asyncio.wait` rather than awaiting each task: a cancellation of the caller itself is not
    swallowed. An exception a task ended with is retrieved and logged at DEBUG: its owner is
    stopping it, having handled (or no longer needing) its outcome.
    """
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    if not started:
        return
    await asyncio.wait(started)
    for task in started:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log_event(log, logging.DEBUG, "task.stopped", task=task.get_name(), error=repr(exc))
