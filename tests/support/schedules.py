"""Helpers of the schedule tests: a webhook receiver, and a dispatcher driven under a chosen term.

The dispatcher is built like the runtime builds it (the `Schedules` component from its explicit
dependencies) but runs under a `StaticLeadership` the test holds, so a test decides when a term
starts and ends; its clock is a `FakeClock` the test moves.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.leader.static import StaticLeadership
from backburner.outbound import SIGNATURE_HEADER
from backburner.scheduler.jobs import JobRegistry
from backburner.schedules.component import Schedules
from backburner.schedules.models import ScheduleCreate
from backburner.schedules.store import RunRecord, ScheduleRecord
from backburner.schedules.tables import schedule_runs
from backburner.settings import Settings
from tests.support.batch_env import FakeClock

ORG = "org-default"
ELECTION = "schedules-test"


@dataclass(frozen=True)
class Received:
    at: float  # time.time() when the request arrived
    path: str
    headers: dict[str, str]
    body: bytes


Answer = Callable[[Received], tuple[int, float]]  # -> (status, seconds to wait before answering)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every request and answers as told."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer: Answer = answer or (lambda _: (200, 0.0))
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = Received(
                    time.time(), self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with receiver._lock:
                    receiver.received.append(request)
                status, delay_s = receiver.answer(request)
                if delay_s:
                    time.sleep(delay_s)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client that gives up on a request (a cancelled delivery) is no error of the test's.
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.prefix = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/"

    def idempotency_keys(self) -> list[str]:
        with self._lock:
            return [r.headers["idempotency-key"] for r in self.received]

    def count(self) -> int:
        with self._lock:
            return len(self.received)


@contextmanager
def running_receiver(answer: Answer | None = None) -> Iterator[Receiver]:
    receiver = Receiver(answer)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(5)


def signature_valid(secret: str, request: Received) -> bool:
    parts = dict(part.split("=", 1) for part in request.headers[SIGNATURE_HEADER.lower()].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts["v1"], expected)


class Gate:
    """Holds requests until the test opens it (a slow receiver whose slowness the test decides)."""

    def __init__(self, status: int = 200) -> None:
        self.opened = threading.Event()
        self.status = status

    def __call__(self, request: Received) -> tuple[int, float]:
        self.opened.wait(30)
        return self.status, 0.0


def statuses(*answers: int) -> Answer:
    """Answer with these statuses in turn, then 200."""
    remaining = list(answers)
    lock = threading.Lock()

    def answer(request: Received) -> tuple[int, float]:
        with lock:
            return (remaining.pop(0) if remaining else 200), 0.0

    return answer


# --- handlers named in `schedule_handlers` ---------------------------------------------------------

HANDLED: list[Any] = []


async def record_fire(fire: Any) -> None:
    HANDLED.append(fire)


# --- a dispatcher under a term the test holds ---------------------------------------------------------


@dataclass
class Term:
    leadership: StaticLeadership
    task: asyncio.Task[None]

    async def end(self) -> None:
        """The term ends as a step-down does: everything still in flight is abandoned."""
        self.leadership.lost.set()
        with suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 10)


@dataclass
class Harness:
    engine: AsyncEngine
    component: Schedules
    clock: FakeClock
    terms: list[Term] = field(default_factory=list)

    async def create(self, **fields: Any) -> ScheduleRecord:
        return await self.component.service.create(ORG, ScheduleCreate(**fields))

    async def start_term(self, instance_id: str = "test-instance") -> Term:
        """Begin a term (which fences every earlier one) and dispatch under it."""
        leadership = await StaticLeadership.claim(self.engine, ELECTION, instance_id)
        task = asyncio.create_task(self.component.dispatcher.run(leadership), name="test.dispatcher")
        term = Term(leadership, task)
        self.terms.append(term)
        return term

    async def runs(self, schedule_id: str) -> list[RunRecord]:
        """Every run of a schedule, earliest fire time first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(schedule_runs)
                .where(schedule_runs.c.schedule_id == schedule_id)
                .order_by(schedule_runs.c.fire_time)
            )
            return [RunRecord.from_row(row) for row in rows]

    async def wait_runs(
        self,
        schedule_id: str,
        done: Callable[[list[RunRecord]], bool],
        what: str,
        timeout_s: float = 20.0,
    ) -> list[RunRecord]:
        """Wait (waking the dispatcher) until the runs satisfy `done`."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.runs(schedule_id)
            if done(found):
                return found
            if time.monotonic() > deadline:
                shown = [(r.fire_time.isoformat(), r.outcome, r.attempts) for r in found[-5:]]
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}; {len(found)} runs, the last: {shown}"
                )
            self.component.dispatcher.wake()
            await asyncio.sleep(0.05)

    async def schedule(self, schedule_id: str) -> ScheduleRecord:
        return await self.component.store.get(ORG, schedule_id)


def finished(count: int) -> Callable[[list[RunRecord]], bool]:
    return lambda runs: len(runs) >= count and all(r.finished_at is not None for r in runs)


@asynccontextmanager
async def dispatch_harness(
    engine: AsyncEngine, settings: Settings, clock: FakeClock
) -> AsyncIterator[Harness]:
    component = Schedules(
        engine=engine, settings=settings, clock=clock, registry=CollectorRegistry(), jobs=JobRegistry()
    )
    async with component:
        harness = Harness(engine, component, clock)
        try:
            yield harness
        finally:
            for term in harness.terms:
                await term.end()
