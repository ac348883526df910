"""User schedules as one runtime component: the service the API uses, and the leader's dispatcher.

Entering it registers the leader-only job `schedules.dispatch` (so it must be entered before the
scheduler). Each tick of that job, on the leader, makes sure the dispatcher runs for the current
term: the first tick of a term starts it at once, and a dispatcher that failed is started again
within `SUPERVISE_INTERVAL_S`. The dispatcher stops by itself when the term ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock
from backburner.leader.base import Leadership
from backburner.logs import describe_error, log_event
from backburner.outbound import Handler, resolve_handler
from backburner.scheduler.jobs import JobContext, JobRegistry, JobSpec
from backburner.schedules.allowlist import AllowList
from backburner.schedules.delivery import Deliverer
from backburner.schedules.dispatcher import DispatchConfig, Dispatcher
from backburner.schedules.metrics import ScheduleMetrics
from backburner.schedules.service import Rules, ScheduleService
from backburner.schedules.store import ScheduleStore
from backburner.settings import Settings
from backburner.tasks import cancel_and_wait

log = logging.getLogger("backburner.schedules")

COMPONENT_NAME = "schedules"
DISPATCH_JOB_ID = "schedules.dispatch"
SUPERVISE_INTERVAL_S = 5.0


def resolve_handlers(settings: Settings) -> dict[str, Handler]:
    """Import every configured handler; a wrong one stops start-up naming it."""
    return {
        name: resolve_handler(reference, f"schedule_handlers.{name}")
        for name, reference in settings.schedule_handlers.items()
    }


class Schedules:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        settings: Settings,
        clock: Clock,
        registry: CollectorRegistry,
        jobs: JobRegistry,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = ScheduleMetrics(registry)
        self.store = ScheduleStore(engine)
        allow_list = AllowList(settings.schedule_webhook_allowed_urls)
        self.deliverer = Deliverer(
            allow_list=allow_list,
            handlers=resolve_handlers(settings),
            timeout_s=settings.schedule_delivery_timeout_seconds,
            concurrency=settings.schedule_delivery_concurrency,
            clock=clock,
        )
        self.dispatcher = Dispatcher(
            deliverer=self.deliverer,
            clock=clock,
            metrics=self.metrics,
            config=DispatchConfig.from_settings(settings),
        )
        self.service = ScheduleService(
            store=self.store,
            clock=clock,
            rules=Rules(
                allow_list=allow_list,
                handler_names=frozenset(settings.schedule_handlers),
                payload_max_bytes=settings.schedule_payload_max_bytes,
            ),
            on_change=self.dispatcher.wake,
        )
        self._jobs = jobs
        self._task: asyncio.Task[None] | None = None
        self._leadership: Leadership | None = None

    async def __aenter__(self) -> Schedules:
        await self.deliverer.open()
        self._jobs.add(JobSpec(DISPATCH_JOB_ID, "Fire user schedules", SUPERVISE_INTERVAL_S, self.supervise))
        log_event(
            log,
            logging.INFO,
            "schedules.started",
            webhook_prefixes=len(self.settings.schedule_webhook_allowed_urls),
            handlers=",".join(sorted(self.settings.schedule_handlers)) or "none",
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await cancel_and_wait(self._task)
        await self.deliverer.aclose()

    @asynccontextmanager
    async def draining(self) -> AsyncIterator[None]:
        """Entered after the scheduler, so that it exits first: at shutdown, before the lock is
        released, the deliveries in flight end and are recorded (within half the shutdown time)."""
        yield
        await self.dispatcher.drain(
            min(self.settings.schedule_delivery_timeout_seconds, self.settings.shutdown_timeout_seconds / 2)
        )

    @property
    def dispatching(self) -> bool:
        return self._task is not None and not self._task.done()

    async def supervise(self, ctx: JobContext) -> None:
        """Keep the dispatcher running for the term this tick runs under."""
        if self.dispatching and self._leadership is ctx.leadership:
            return
        await cancel_and_wait(self._task)  # a dispatcher of an earlier term, ending anyway
        self._leadership = ctx.leadership
        self._task = asyncio.create_task(self.dispatcher.run(ctx.leadership), name="schedules.dispatcher")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log_event(
                log,
                logging.ERROR,
                "schedules.dispatcher_failed",
                error=describe_error(exc),
                restart_within_s=SUPERVISE_INTERVAL_S,
            )
