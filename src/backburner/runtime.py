"""The composition root: builds every component from `Settings`, starts and stops them in order.

`Runtime` is an async context manager used by `backburner serve` (through the API's lifespan) and
`backburner worker`. Entering it is quick: the database may still be unreachable, so connecting,
migrating and starting the database-backed components happens in a supervised start-up task that
retries with backoff and logs why it waits, while `/healthz` already answers and `/readyz` says
what is missing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock, SystemClock
from backburner.db import migrate
from backburner.db.engine import create_engine
from backburner.instance import make_instance_id
from backburner.logs import describe_error, log_event
from backburner.monitoring.loop_health import install_loop_health
from backburner.monitoring.metrics import Metrics
from backburner.monitoring.watchdog import Watchdog
from backburner.scheduler.jobs import JobRegistry
from backburner.settings import Settings
from backburner.settings_loader import LoadedSettings
from backburner.tasks import cancel_and_wait

log = logging.getLogger("backburner.runtime")

Role = Literal["serve", "worker"]
READINESS_TIMEOUT_S = 2.0
STARTUP_BACKOFF_START_S = 0.5


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str = "ok"


ReadinessCheck = Callable[[], Awaitable[CheckResult]]


_startup_frozen = False
# Young collections come after this many new container objects instead of 700: a listing of
# 1,000 files makes tens of thousands, most of them freed before any collection would have run,
# and young collections took a tenth of such a listing.
YOUNG_COLLECTION_THRESHOLD = 50_000


def _tune_garbage_collection() -> None:
    """Once per process, when the first runtime is ready: what start-up made (modules, the app,
    the components) lives as long as the process, so full collections stop walking it (each
    then takes about a sixth of the time: 12 ms instead of 77 during the files bench's
    listings); and young collections come less often."""
    global _startup_frozen
    if not _startup_frozen:
        _startup_frozen = True
        gc.freeze()
        _, middle, old = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


class Runtime:
    def __init__(self, loaded: LoadedSettings, *, role: Role, clock: Clock | None = None) -> None:
        self.loaded = loaded
        self.settings: Settings = loaded.settings
        self.role = role
        self.clock: Clock = clock or SystemClock()
        self.instance_id = make_instance_id()
        self.metrics = Metrics()
        self.engine: AsyncEngine = create_engine(self.settings)
        self.started_at = time.time()
        self.components: dict[str, Any] = {}
        self.jobs = JobRegistry()
        self._checks: dict[str, ReadinessCheck] = {}
        self._stack = AsyncExitStack()
        self._ready = asyncio.Event()
        self._startup_task: asyncio.Task[None] | None = None
        self._startup_error: str | None = "starting"
        self._executor: ThreadPoolExecutor | None = None
        self.watchdog: Watchdog | None = None
        self._migrations_current = False
        self.add_readiness_check("database", self._check_database)
        self.add_readiness_check("migrations", self._check_migrations)
        self.add_readiness_check("watchdog", self._check_watchdog)
        self.add_readiness_check("startup", self._check_startup)

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        log_event(log, logging.INFO, "runtime.starting", role=self.role, instance_id=self.instance_id)
        if self.role == "serve" and self.settings.effective_auth_mode == "none":
            log_event(
                log,
                logging.WARNING,
                "auth.disabled",
                detail=f"auth_mode is none: anyone who can reach {self.settings.host}:{self.settings.port} "
                "may submit batches, read every file and use the admin routes; "
                "set auth_mode=keys to require keys",
            )
        self._stack.push_async_callback(self.engine.dispose)
        self._executor, self.watchdog = install_loop_health(self.settings, self.metrics.registry)
        self.components["watchdog"] = self.watchdog
        self._stack.callback(self.watchdog.stop)
        self._startup_task = asyncio.create_task(self._start_background(), name="runtime.startup")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        log_event(log, logging.INFO, "runtime.stopping", instance_id=self.instance_id)
        await cancel_and_wait(self._startup_task)
        try:
            await asyncio.wait_for(self._stack.aclose(), self.settings.shutdown_timeout_seconds)
        except TimeoutError:
            log_event(
                log, logging.ERROR, "runtime.stop_timeout", timeout_s=self.settings.shutdown_timeout_seconds
            )
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        log_event(log, logging.INFO, "runtime.stopped", instance_id=self.instance_id)

    @property
    def executor(self) -> ThreadPoolExecutor | None:
        """The loop's default executor, sized by `event_loop_threadpool_max_workers`."""
        return self._executor

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until every component has started (tests and the CLI use this)."""
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def _start_background(self) -> None:
        delay = STARTUP_BACKOFF_START_S
        while True:
            try:
                await migrate.upgrade(self.engine)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure here is retried: the database may come later
                self._startup_error = f"database not available: {describe_error(exc)}"
                log_event(log, logging.WARNING, "db.unavailable", error=describe_error(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, float(self.settings.poll_lock_retry_interval_seconds))
        log_event(
            log,
            logging.INFO,
            "db.migrated",
            backend=self.engine.dialect.name,
            revisions=",".join(sorted(migrate.head_revisions())),
        )
        try:
            await self._start_components()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._startup_error = f"a component failed to start: {describe_error(exc)}"
            log.exception("runtime.start_failed", extra={"event": "runtime.start_failed"})
            return
        self._startup_error = None
        _tune_garbage_collection()
        self._ready.set()
        log_event(log, logging.INFO, "runtime.ready", instance_id=self.instance_id, role=self.role)

    async def _start_components(self) -> None:
        """Start the database-backed components in dependency order; each stops in reverse."""
        from backburner.batches.component import BatchesComponent

        # Registers the batch poll and delivery jobs: before the scheduler.
        await self.enter_component(
            "batches",
            BatchesComponent(self.engine, self.settings, self.clock, self.metrics.registry, self.jobs),
        )

        from backburner.files.component import COMPONENT_NAME, FileProcessing

        # Registers the file sweeper job: before the scheduler.
        await self.enter_component(COMPONENT_NAME, FileProcessing(self))

        # KEEP LAST: leader election, the scheduler and membership. The scheduler takes the jobs
        # registered by the components above; insert new components BEFORE this block.
        from backburner.scheduler.wiring import start_scheduling

        await start_scheduling(self)

    async def enter_component(self, name: str, component: Any) -> Any:
        """Start an async-context-manager component and keep it for shutdown and diagnostics."""
        self.components[name] = component
        return await self._stack.enter_async_context(component)

    # --- readiness --------------------------------------------------------------------------

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    async def readiness(self) -> dict[str, CheckResult]:
        async def guarded(check: ReadinessCheck) -> CheckResult:
            try:
                return await asyncio.wait_for(check(), READINESS_TIMEOUT_S)
            except TimeoutError:
                return CheckResult(False, f"no answer within {READINESS_TIMEOUT_S} s")
            except Exception as exc:
                return CheckResult(False, describe_error(exc))

        names = list(self._checks)
        results = await asyncio.gather(*(guarded(self._checks[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def _check_database(self) -> CheckResult:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return CheckResult(True)

    async def _check_migrations(self) -> CheckResult:
        if self._migrations_current:  # a schema never moves backwards under a running process
            return CheckResult(True)
        current, heads = await migrate.current_revisions(self.engine), migrate.head_revisions()
        if current != heads:
            return CheckResult(
                False, f"database at {sorted(current) or 'no revision'}, code expects {sorted(heads)}"
            )
        self._migrations_current = True
        return CheckResult(True)

    async def _check_watchdog(self) -> CheckResult:
        state = self.watchdog.state() if self.watchdog is not None else {"status": "stopped"}
        if state["status"] == "degraded":
            recovers = state["recovers_in_s"]
            when = f"in {recovers} s" if recovers is not None else "after a stall-free period"
            return CheckResult(
                False,
                f"the event loop hung; ready again {when} (consecutive hangs: {state['consecutive_hangs']})",
            )
        return CheckResult(True, str(state["status"]))

    async def _check_startup(self) -> CheckResult:
        return CheckResult(self._startup_error is None, self._startup_error or "ok")
