"""The membership heartbeat: a component that keeps this instance's row fresh.

Every instance beats every `instance_heartbeat_interval_seconds`, and at once when its role
changes; a graceful stop removes the row. Rows of instances that died are deleted by the
leader's housekeeping after `instance_expiry_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock
from backburner.logs import describe_error, log_event
from backburner.membership import store
from backburner.tasks import cancel_and_wait, wait_event

log = logging.getLogger("backburner.membership")

REMOVE_TIMEOUT_S = 2.0


class MembershipHeartbeat:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        instance_id: str,
        process: str,
        role: Callable[[], str],
        interval_s: float,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._instance_id = instance_id
        self._process = process
        self._role = role
        self._interval_s = interval_s
        self._clock = clock
        self._started_at: datetime = clock.now()
        self._host = socket.gethostname()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def beat_soon(self) -> None:
        """Record now (the role changed), without waiting for the interval."""
        self._wake.set()

    async def beat(self) -> None:
        row = store.InstanceRow(
            instance_id=self._instance_id,
            host=self._host,
            pid=os.getpid(),
            role=self._role(),
            process=self._process,
            started_at=self._started_at,
            last_seen_at=self._clock.now(),
        )
        async with self._engine.begin() as conn:
            await store.upsert(conn, row)

    async def __aenter__(self) -> MembershipHeartbeat:
        self._task = asyncio.create_task(self._loop(), name="membership.heartbeat")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await cancel_and_wait(self._task)
        try:
            async with asyncio.timeout(REMOVE_TIMEOUT_S), self._engine.begin() as conn:
                await store.remove(conn, self._instance_id)
        except Exception as error:
            log_event(log, logging.WARNING, "membership.leave_failed", error=describe_error(error))

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.beat()
                if self._failing:
                    log_event(log, logging.INFO, "membership.heartbeat_recovered")
                self._failing = False
            except Exception as exc:  # the database may be away for a while; keep trying
                if not self._failing:
                    log_event(log, logging.WARNING, "membership.heartbeat_failed", error=describe_error(exc))
                self._failing = True
            await wait_event(self._wake, self._interval_s)
