"""In-process candidates for leader-election tests: build electors and follow their terms."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import SystemClock
from backburner.ids import new_id
from backburner.leader.config import ElectionConfig, ElectionMode
from backburner.leader.factory import AnyElector
from backburner.leader.filelock import FileElector, lock_file_path
from backburner.leader.pg_lock import asyncpg_dsn
from backburner.leader.postgres import PostgresElector
from backburner.leader.term import ElectedLeadership


def make_elector(
    engine: AsyncEngine,
    database_url: str,
    *,
    election: str = "test-election",
    lease_s: float = 3.0,
    mode: ElectionMode = "wait",
    retry_interval_s: float = 1.0,
    lock_url: str | None = None,
    instance_id: str | None = None,
) -> AnyElector:
    config = ElectionConfig(
        election=election,
        instance_id=instance_id or new_id("inst"),
        lease_s=lease_s,
        mode=mode,
        retry_interval_s=retry_interval_s,
    )
    if make_url(database_url).get_backend_name() == "sqlite":
        path = lock_file_path(database_url, Path("."), election)
        return FileElector(engine=engine, path=path, config=config, clock=SystemClock())
    return PostgresElector(
        engine=engine, dsn=asyncpg_dsn(lock_url or database_url), config=config, clock=SystemClock()
    )


class Candidate:
    """Follows an elector's terms in a task, as the scheduler does, and records them."""

    def __init__(self, elector: AnyElector) -> None:
        self.elector = elector
        self.terms: list[ElectedLeadership] = []
        self.lost_at: dict[int, float] = {}  # epoch -> monotonic time the term ended
        self.won_at: dict[int, float] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Candidate:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async with contextlib.aclosing(self.elector.terms()) as terms:
            async for leadership in terms:
                assert isinstance(leadership, ElectedLeadership)
                self.won_at[leadership.term.epoch] = time.monotonic()
                self.terms.append(leadership)
                self._changed.set()
                await leadership.lost.wait()
                self.lost_at[leadership.term.epoch] = time.monotonic()
                self._changed.set()

    @property
    def leadership(self) -> ElectedLeadership | None:
        if self.terms and not self.terms[-1].lost.is_set():
            return self.terms[-1]
        return None

    async def wait_for(self, condition: Callable[[], object], timeout_s: float, what: str) -> None:
        async def loop() -> None:
            while not condition():
                self._changed.clear()
                if condition():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)

        try:
            await asyncio.wait_for(loop(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None

    async def wait_leading(self, timeout_s: float) -> ElectedLeadership:
        await self.wait_for(lambda: self.leadership is not None, timeout_s, "leadership")
        assert self.leadership is not None
        return self.leadership

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def first_leader(candidates: list[Candidate], timeout_s: float) -> Candidate:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leaders = [c for c in candidates if c.leadership is not None]
        if leaders:
            return leaders[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no candidate led within {timeout_s} s")
