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
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Literal, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.batches.component import BatchesComponent
from backburner.clock import Clock, SystemClock
from backburner.db import migrate
from backburner.db.engine import create_engine, dispose
from backburner.db.errors import permanent_problem
from backburner.db.transactions import reading
from backburner.files.component import FileProcessing
from backburner.instance import make_instance_id
from backburner.logs import describe_error, log_event
from backburner.membership.heartbeat import MembershipHeartbeat
from backburner.monitoring.loop_health import sized_default_executor, start_watchdog
from backburner.monitoring.metrics import Metrics
from backburner.monitoring.threadpool import InstrumentedThreadPoolExecutor
from backburner.monitoring.watchdog import Watchdog
from backburner.readiness import CheckResult, ReadinessCheck
from backburner.scheduler.jobs import JobRegistry
from backburner.scheduler.service import SchedulerService
from backburner.scheduler.wiring import build_scheduling
from backburner.schedules.component import Schedules
from backburner.settings import Settings
from backburner.settings_loader import LoadedSettings
from backburner.tasks import cancel_and_wait, wait_for

log = logging.getLogger("backburner.runtime")

Role = Literal["serve", "worker"]
READINESS_TIMEOUT_S = 2.0
STARTUP_BACKOFF_START_S = 0.5
C = TypeVar("C")


class Runtime:
    """Every component of one instance, each a typed attribute that is None until it started."""

    def __init__(
        self,
        loaded: LoadedSettings,
        *,
        role: Role,
        clock: Clock | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.loaded = loaded
        self.settings: Settings = loaded.settings
        self.role = role
        self.clock: Clock = clock or SystemClock()
        self.instance_id = make_instance_id()
        self.metrics = Metrics()
        # The loop's default executor, when the process's entry point installed a measured one.
        self.executor: InstrumentedThreadPoolExecutor | None = None
        self.engine: AsyncEngine = create_engine(self.settings)
        self.started_at = time.time()
        self.jobs = JobRegistry()
        self.watchdog: Watchdog | None = None
        self.batches: BatchesComponent | None = None
        self.files: FileProcessing | None = None
        self.schedules: Schedules | None = None
        self.membership: MembershipHeartbeat | None = None
        self.scheduler: SchedulerService | None = None
        self._checks: dict[str, ReadinessCheck] = {}
        self._stack = AsyncExitStack()
        self._ready = asyncio.Event()
        self._startup_task: asyncio.Task[None] | None = None
        self._startup_error: str | None = "starting"
        self._on_fatal = on_fatal
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
        self._stack.push_async_callback(dispose, self.engine)
        self.watchdog = start_watchdog(self.settings, self.metrics.registry)
        self._stack.callback(self.watchdog.stop)
        self._startup_task = asyncio.create_task(self._start_background(), name="runtime.startup")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        log_event(log, logging.INFO, "runtime.stopping", instance_id=self.instance_id)
        await cancel_and_wait(self._startup_task)
        try:
            await wait_for(self._stack.aclose(), self.settings.shutdown_timeout_seconds)
        except TimeoutError:
            log_event(
                log, logging.ERROR, "runtime.stop_timeout", timeout_s=self.settings.shutdown_timeout_seconds
            )
        log_event(log, logging.INFO, "runtime.stopped", instance_id=self.instance_id)

    async def wait_ready(self, timeout_s: float | None) -> None:
        """Wait until every component has started (None: however long that takes)."""
        await wait_for(self._ready.wait(), timeout_s)

    async def _start_background(self) -> None:
        delay = STARTUP_BACKOFF_START_S
        while True:
            try:
                await migrate.upgrade(self.engine)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retried, unless waiting cannot help (no such database)
                problem = permanent_problem(exc, self.settings.effective_database_url)
                if problem is not None:
                    self._startup_error = problem
                    log_event(log, logging.ERROR, "db.unusable", detail=problem)
                    if self._on_fatal is not None:
                        self._on_fatal(problem)
                    return
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
        self._ready.set()
        log_event(log, logging.INFO, "runtime.ready", instance_id=self.instance_id, role=self.role)

    async def _start_components(self) -> None:
        """Start the database-backed components in dependency order; each stops in reverse.

        The components that register leader-only jobs come before the scheduler, which takes
        the registered jobs when it is built.
        """
        settings, engine, clock = self.settings, self.engine, self.clock
        registry = self.metrics.registry
        self.batches = await self._enter(
            BatchesComponent(settings=settings, engine=engine, clock=clock, registry=registry, jobs=self.jobs)
        )
        self.files = await self._enter(
            FileProcessing(
                settings=settings,
                engine=engine,
                clock=clock,
                registry=registry,
                jobs=self.jobs,
                instance_id=self.instance_id,
            )
        )
        self.add_readiness_check("blob_store", self.files.blob_health.readiness)
        self.schedules = await self._enter(
            Schedules(settings=settings, engine=engine, clock=clock, registry=registry, jobs=self.jobs)
        )
        scheduling = build_scheduling(
            settings=settings,
            engine=engine,
            clock=clock,
            registry=registry,
            jobs=self.jobs,
            instance_id=self.instance_id,
            process=self.role,
        )
        # Membership first, so that it stops after the scheduler has released the lock.
        self.membership = await self._enter(scheduling.membership)
        self.scheduler = await self._enter(scheduling.scheduler)
        # Leaves before the scheduler releases the lock: deliveries of fires end and are recorded.
        await self._enter(self.schedules.draining())

    async def _enter(self, component: AbstractAsyncContextManager[C]) -> C:
        return await self._stack.enter_async_context(component)

    # --- readiness --------------------------------------------------------------------------

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    async def readiness(self) -> dict[str, CheckResult]:
        async def guarded(check: ReadinessCheck) -> CheckResult:
            try:
                return await wait_for(check(), READINESS_TIMEOUT_S)
            except TimeoutError:
                return CheckResult(False, f"no answer within {READINESS_TIMEOUT_S} s")
            except Exception as exc:
                return CheckResult(False, describe_error(exc))

        names = list(self._checks)
        results = await asyncio.gather(*(guarded(self._checks[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def _check_database(self) -> CheckResult:
        async with reading(self.engine) as conn:
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


@asynccontextmanager
async def run_as_process(runtime: Runtime) -> AsyncIterator[Runtime]:
    """Run `runtime` as the runtime of a `serve` or `worker` process, with the process-wide
    tuning only such a process may do: a measured default executor of
    `event_loop_threadpool_max_workers` threads and start-up objects frozen out of full
    collections, both undone on exit."""
    with sized_default_executor(runtime.settings, runtime.metrics.registry) as executor:
        runtime.executor = executor
        async with runtime:
            freezer = asyncio.create_task(freeze_when_started(runtime), name="runtime.freeze")
            try:
                yield runtime
            finally:
                await cancel_and_wait(freezer)
                gc.unfreeze()  # the process is as it was, as with the executor


async def freeze_when_started(runtime: Runtime) -> None:
    """What start-up made (modules, SDKs, the app, the components) lives as long as the process:
    frozen, full collections stop walking it. Without this, the first full collection after the
    SDKs are imported stalls the event loop for about 0.25 s (the watchdog saw it at the first
    batch submission); with it, a full collection walks only what requests made."""
    await runtime.wait_ready(None)
    gc.freeze()
