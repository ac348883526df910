"""The leader's dispatcher: finds due schedules, claims their fires, delivers them, records the ends.

It runs for one term of leadership at a time and stops when the term ends. It starts by taking
over: the runs an earlier leader left delivering get their next attempt. Then four loops share it:

- **claim**: in one fenced transaction, up to `schedule_dispatch_batch_size` schedules due now
  (through the index on `due_at`) are locked and decided (catch-up, then overlap), their runs are
  inserted under the unique (schedule, fire time) key, each counting its first attempt, and the
  schedules move on to their next fire time. Then it sleeps until the next due time (at least
  0.1 s, at most `schedule_poll_interval_seconds`, or until woken).
- **attempts**: queued runs whose retry time has come get their next attempt.
- **record**: the ends of attempts are written together, in one fenced transaction every 0.1 s.
- **prune**: finished runs older than `schedule_run_retention_days` are deleted.

Deliveries run as tasks, at most `schedule_delivery_concurrency` attempts at once, and fairly
among organizations: one holds at most all but one of the slots, and a freed slot goes to the
organization holding the fewest. Claiming and attempts leave an organization's fires waiting in
the database while three times as many of its fires as there are slots are in flight; while
four times as many of all organizations are, they start only those of organizations with none
in flight. So memory holds a bounded number of fires, and a tenant whose webhook hangs delays
its own fires, never another tenant's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from backburner.clock import Clock
from backburner.fair_slots import FairSlots
from backburner.ids import new_id
from backburner.leader.base import Leadership, NotLeader
from backburner.logs import describe_error, log_event
from backburner.schedules import store
from backburner.schedules.delivery import AttemptResult, Deliverer, fire_time_text
from backburner.schedules.metrics import ScheduleMetrics
from backburner.schedules.policies import (
    Active,
    RunOutcome,
    apply_overlap,
    due_at,
    gives_up,
    plan_fires,
    retry_delay_s,
)
from backburner.schedules.specs import Fires, Spec
from backburner.schedules.store import Advance, AttemptRecord, Delivery, NewRun, ScheduleRecord
from backburner.settings import Settings
from backburner.tasks import wait_event

log = logging.getLogger("backburner.schedules")

MIN_PASS_GAP_S = 0.1
PLAN_BUDGET = 5000  # fire times computed in one claim pass
RECORD_INTERVAL_S = 0.1
RECORD_BATCH = 1000
IN_FLIGHT_PER_SLOT = 4
ATTEMPT_BATCH = 500
PRUNE_INTERVAL_S = 60.0
PRUNE_BATCH = 5000
FAILURE_BACKOFF_S = 1.0
COMPILED_SPECS = 20_000


@dataclass(frozen=True)
class DispatchConfig:
    batch_size: int
    concurrency: int
    poll_interval_s: float
    max_attempts: int
    retry_backoff_s: float
    run_retention_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatchConfig:
        return cls(
            batch_size=settings.schedule_dispatch_batch_size,
            concurrency=settings.schedule_delivery_concurrency,
            poll_interval_s=settings.schedule_poll_interval_seconds,
            max_attempts=settings.schedule_max_attempts,
            retry_backoff_s=settings.schedule_retry_backoff_seconds,
            run_retention_s=settings.schedule_run_retention_days * 86_400,
        )


@dataclass(frozen=True)
class Decision:
    runs: list[NewRun]
    advance: Advance
    steps: int


def decide(
    record: ScheduleRecord,
    fires: Fires,
    active: Active,
    now: datetime,
    budget: int,
    make_id: Callable[[], str],
) -> Decision:
    """What one claim pass does with one due schedule: the runs to write and where it moves on."""
    plan = plan_fires(fires, record.next_fire_at, now, record.policy, budget)
    moments: list[tuple[datetime, str]] = [(moment, "scheduled") for moment in plan.fires]
    trigger_at = record.trigger_at
    if trigger_at is not None and trigger_at <= now:
        if trigger_at not in plan.fires:  # a trigger at a scheduled fire time is that fire
            moments.append((trigger_at, "manual"))
            moments.sort()
        trigger_at = None
    outcomes = apply_overlap([m for m, _ in moments], active, record.policy.overlap)
    runs = [
        NewRun(make_id(), record.organization_id, record.id, moment, trigger, outcome)
        for (moment, trigger), outcome in zip(moments, outcomes, strict=True)
    ]
    last = max((m for m, _ in moments), default=None)
    if record.last_fire_at is not None and (last is None or record.last_fire_at > last):
        last = record.last_fire_at
    advance = Advance(
        schedule_id=record.id,
        next_fire_at=plan.next_fire_at,
        trigger_at=trigger_at,
        due_at=due_at(plan.next_fire_at, trigger_at),
        last_fire_at=last,
        missed=plan.missed,
    )
    return Decision(runs, advance, plan.steps)


def attempt_record(
    delivery: Delivery,
    result: AttemptResult,
    *,
    now: datetime,
    epoch: int,
    instance_id: str,
    max_attempts: int,
    backoff_s: float,
) -> AttemptRecord:
    """The end of one attempt: succeeded, failed for good, or queued for a retry after a backoff."""
    entry = {
        "attempt": delivery.attempt,
        "started_at": fire_time_text(result.started_at),
        "duration_s": round(result.duration_s, 4),
        "http_status": result.http_status,
        "error": result.error,
        "epoch": epoch,
        "instance_id": instance_id,
    }
    line = json.dumps(entry, separators=(",", ":")) + "\n"
    run_id, schedule_id, status = delivery.run_id, delivery.schedule_id, result.http_status
    if result.ok:
        return AttemptRecord(run_id, schedule_id, RunOutcome.SUCCEEDED, None, now, status, None, line)
    if not result.retryable or gives_up(delivery.attempt, max_attempts):
        return AttemptRecord(run_id, schedule_id, RunOutcome.FAILED, None, now, status, result.error, line)
    retry_at = now + timedelta(seconds=retry_delay_s(delivery.attempt, backoff_s))
    return AttemptRecord(run_id, schedule_id, RunOutcome.QUEUED, retry_at, None, status, result.error, line)


class _TermEnded(Exception):
    pass


class Dispatcher:
    def __init__(
        self, *, deliverer: Deliverer, clock: Clock, metrics: ScheduleMetrics, config: DispatchConfig
    ) -> None:
        self.deliverer = deliverer
        self.clock = clock
        self.metrics = metrics
        self.config = config
        self.woken = asyncio.Event()
        self.draining = asyncio.Event()
        self._term: _Term | None = None
        self._compiled: OrderedDict[Spec, Fires] = OrderedDict()

    def wake(self) -> None:
        """Look for due schedules now (one was created, changed or triggered on this instance)."""
        self.woken.set()

    async def drain(self, timeout_s: float) -> bool:
        """Before a graceful step-down: claim nothing more, and wait (at most `timeout_s`) until the
        deliveries in flight have ended and been recorded, so that the next leader repeats none of
        them. True when everything was recorded in time."""
        self.draining.set()
        term = self._term
        if term is None:
            return True
        await wait_event(term.idle, timeout_s)
        drained = not term.busy()
        log_event(log, logging.INFO, "schedules.drained", complete=drained, in_flight=term.in_flight)
        return drained

    def fires_of(self, record: ScheduleRecord) -> Fires:
        """The fire times of a schedule; compiled cron specs are kept (the newest 20,000)."""
        if record.spec.kind != "cron":
            return record.spec.fires(record.created_at)
        fires = self._compiled.get(record.spec)
        if fires is None:
            fires = record.spec.fires(record.created_at)
            self._compiled[record.spec] = fires
            if len(self._compiled) > COMPILED_SPECS:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(record.spec)
        return fires

    async def run(self, leadership: Leadership) -> None:
        """Dispatch until the term ends."""
        term = _Term(self, leadership)
        self._term = term
        log_event(log, logging.INFO, "schedules.dispatching", epoch=leadership.term.epoch)
        try:
            orphans = await term.take_over()
        except NotLeader:
            return
        try:
            async with asyncio.TaskGroup() as group:
                term.group = group
                for delivery in orphans:
                    term.start(delivery)
                group.create_task(term.until_lost(), name="schedules.term")
                group.create_task(term.guarded("claim", term.claim_pass), name="schedules.claim")
                group.create_task(term.guarded("attempts", term.attempt_pass), name="schedules.attempts")
                group.create_task(term.guarded("record", term.record_pass), name="schedules.record")
                group.create_task(term.guarded("prune", term.prune_pass), name="schedules.prune")
        except* _TermEnded:
            pass
        finally:
            self.metrics.in_flight.set(0)
            if self._term is term:
                self._term = None
        log_event(log, logging.INFO, "schedules.stopped", epoch=leadership.term.epoch)


class _Term:
    """The state of one term's dispatching: deliveries in flight and attempt ends to record."""

    def __init__(self, dispatcher: Dispatcher, leadership: Leadership) -> None:
        self.d = dispatcher
        self.config = dispatcher.config
        self.clock = dispatcher.clock
        self.metrics = dispatcher.metrics
        self.leadership = leadership
        self.epoch = leadership.term.epoch
        self.instance_id = leadership.term.instance_id
        self.group: asyncio.TaskGroup | None = None
        self.slots = FairSlots(self.config.concurrency)
        self.max_in_flight = self.config.concurrency * IN_FLIGHT_PER_SLOT
        # Room is always left for other organizations' fires.
        self.max_in_flight_of_one = self.max_in_flight - self.config.concurrency
        self.in_flight = 0
        self.in_flight_of: dict[str, int] = {}  # per organization; none kept at 0
        self.records: list[AttemptRecord] = []
        self.has_records = asyncio.Event()
        self.idle = asyncio.Event()  # nothing in flight, nothing left to record
        self.idle.set()
        self.attempts_due = asyncio.Event()
        self.next_retry_at: datetime | None = None

    async def until_lost(self) -> None:
        await self.leadership.lost.wait()
        raise _TermEnded

    async def guarded(self, name: str, one_pass: Callable[[], Awaitable[None]]) -> None:
        """Repeat a pass; a refused fence ends the term, other failures are logged and retried."""
        while True:
            try:
                await one_pass()
            except NotLeader:
                raise _TermEnded from None
            except Exception as exc:
                log_event(log, logging.WARNING, "schedules.pass_failed", loop=name, error=describe_error(exc))
                await asyncio.sleep(FAILURE_BACKOFF_S)

    async def _wait(self, event: asyncio.Event, delay_s: float) -> None:
        await wait_event(event, delay_s)
        event.clear()

    # --- claiming ---------------------------------------------------------------------------

    def busy(self) -> bool:
        """Deliveries in flight, or ends of attempts not written yet."""
        return self.in_flight > 0 or bool(self.records)

    def _note_idle(self) -> None:
        if not self.busy():
            self.idle.set()

    async def _stop_when_draining(self) -> None:
        if self.d.draining.is_set():
            await self.leadership.lost.wait()  # nothing more is started in this term

    async def claim_pass(self) -> None:
        await self._stop_when_draining()
        now = self.clock.now()
        async with self.leadership.fenced() as conn:
            deliveries, more, next_due = await self._claim(conn, now)
        for delivery in deliveries:
            self.start(delivery)
        if more:
            await asyncio.sleep(0)
            return
        delay_s = self.config.poll_interval_s
        if next_due is not None:
            delay_s = min(delay_s, (next_due - self.clock.now()).total_seconds())
        await self._wait(self.d.woken, max(MIN_PASS_GAP_S, delay_s))

    async def _claim(
        self, conn: AsyncConnection, now: datetime
    ) -> tuple[list[Delivery], bool, datetime | None]:
        saturated = self._saturated()
        due = await store.lock_due(conn, now, self.config.batch_size, skipping=saturated)
        if not due:
            return [], False, await store.next_due_at(conn, skipping=saturated)
        active = await store.active_runs(conn, [s.id for s in due])
        budget = PLAN_BUDGET
        decided: list[tuple[ScheduleRecord, Decision]] = []
        for record in due:
            if budget <= 0:
                break
            decision = decide(
                record, self.d.fires_of(record), active.get(record.id, Active()), now, budget, _run_id
            )
            budget -= max(1, decision.steps)
            decided.append((record, decision))
        runs = [run for _, decision in decided for run in decision.runs]
        written = await store.insert_runs(conn, runs, now=now, epoch=self.epoch, instance_id=self.instance_id)
        await store.advance_schedules(conn, [decision.advance for _, decision in decided])
        missed = sum(decision.advance.missed for _, decision in decided)
        if missed:
            self.metrics.missed.inc(missed)
        deliveries = []
        for record, decision in decided:
            for run in decision.runs:
                if run.id not in written:
                    continue
                if run.outcome == RunOutcome.SKIPPED:
                    self.metrics.runs.labels(RunOutcome.SKIPPED.value).inc()
                if run.outcome == RunOutcome.DELIVERING:
                    deliveries.append(_first_delivery(record, run))
        more = len(due) == self.config.batch_size or len(decided) < len(due)
        log_event(
            log,
            logging.DEBUG,
            "schedules.claimed",
            schedules=len(decided),
            runs=len(written),
            delivering=len(deliveries),
            missed=missed,
        )
        return deliveries, more, None if more else await store.next_due_at(conn, skipping=saturated)

    def _saturated(self) -> set[str]:
        """Organizations none of whose fires is started now: those with as many in flight as one
        may have, and, while the leader holds as many as it may, every one with any in flight
        (an organization with none always has its turn)."""
        if self.in_flight >= self.max_in_flight:
            return set(self.in_flight_of)
        return {org for org, n in self.in_flight_of.items() if n >= self.max_in_flight_of_one}

    # --- delivering -------------------------------------------------------------------------

    def start(self, delivery: Delivery) -> None:
        assert self.group is not None
        self.in_flight += 1
        organization_id = delivery.organization_id
        self.in_flight_of[organization_id] = self.in_flight_of.get(organization_id, 0) + 1
        self.idle.clear()
        self.metrics.in_flight.inc()
        self.group.create_task(self._deliver(delivery), name=f"schedules.deliver:{delivery.run_id}")

    async def _deliver(self, delivery: Delivery) -> None:
        organization_id = delivery.organization_id
        try:
            await self.slots.acquire(organization_id)
            try:
                result = await self.d.deliverer.attempt(delivery)
            finally:
                self.slots.release(organization_id)
            if delivery.attempt == 1:
                self.metrics.fire_lag.observe(
                    max(0.0, (result.started_at - delivery.fire_time).total_seconds())
                )
            self._ended(delivery, result)
        finally:
            self.in_flight -= 1
            held = self.in_flight_of.pop(organization_id) - 1
            if held:
                self.in_flight_of[organization_id] = held
            if held == self.max_in_flight_of_one - 1 or self.in_flight == self.max_in_flight - 1:
                self.d.woken.set()  # fires left waiting may be started now
                self.attempts_due.set()
            self.metrics.in_flight.dec()
            self._note_idle()

    def _ended(self, delivery: Delivery, result: AttemptResult) -> None:
        record = attempt_record(
            delivery,
            result,
            now=self.clock.now(),
            epoch=self.epoch,
            instance_id=self.instance_id,
            max_attempts=self.config.max_attempts,
            backoff_s=self.config.retry_backoff_s,
        )
        self.metrics.attempts.labels(delivery.action, "succeeded" if result.ok else "failed").inc()
        if record.outcome != RunOutcome.QUEUED:
            self.metrics.runs.labels(record.outcome.value).inc()
        if not result.ok:
            final = record.outcome == RunOutcome.FAILED
            log_event(
                log,
                logging.ERROR if final else logging.WARNING,
                "schedule.run_failed" if final else "schedule.attempt_failed",
                schedule_id=delivery.schedule_id,
                fire_time=fire_time_text(delivery.fire_time),
                attempt=delivery.attempt,
                http_status=result.http_status,
                error=result.error,
                next_attempt_at=record.next_attempt_at.isoformat() if record.next_attempt_at else None,
            )
        self.records.append(record)
        self.has_records.set()

    # --- recording --------------------------------------------------------------------------

    async def record_pass(self) -> None:
        await self.has_records.wait()
        await asyncio.sleep(RECORD_INTERVAL_S)  # gather the ends of the attempts of a moment
        batch = self.records[:RECORD_BATCH]
        async with self.leadership.fenced() as conn:
            released = await store.record_attempts(conn, batch, epoch=self.epoch, now=self.clock.now())
        del self.records[: len(batch)]
        if not self.records:
            self.has_records.clear()
        self._note_idle()
        retries = [r.next_attempt_at for r in batch if r.next_attempt_at is not None]
        if retries:
            soonest = min(retries)
            if self.next_retry_at is None or soonest < self.next_retry_at:
                self.next_retry_at = soonest
                self.attempts_due.set()
        if released:
            self.attempts_due.set()

    # --- take-over and retries --------------------------------------------------------------

    async def take_over(self) -> list[Delivery]:
        """Before anything is claimed: the runs an earlier leader (or an earlier start of this
        one) left delivering get their next attempt, and buffered runs left waiting are let go.
        Their number is bounded by the earlier dispatcher's in-flight limit."""
        now = self.clock.now()
        async with self.leadership.fenced() as conn:
            await store.release_buffers(conn, now, None)
            deliveries = await store.start_attempts(
                conn, now=now, epoch=self.epoch, limit=None, take_over=True
            )
        if deliveries:
            log_event(log, logging.INFO, "schedules.taken_over", runs=len(deliveries), epoch=self.epoch)
        return deliveries

    async def attempt_pass(self) -> None:
        await self._stop_when_draining()
        now = self.clock.now()
        async with self.leadership.fenced() as conn:
            deliveries = await store.start_attempts(
                conn,
                now=now,
                epoch=self.epoch,
                limit=ATTEMPT_BATCH,
                take_over=False,
                skipping=self._saturated(),
            )
        for delivery in deliveries:
            self.start(delivery)
        if len(deliveries) == ATTEMPT_BATCH:
            return
        if self.next_retry_at is not None and self.next_retry_at <= now:
            self.next_retry_at = None
        delay_s = self.config.poll_interval_s
        if self.next_retry_at is not None:
            delay_s = min(delay_s, (self.next_retry_at - self.clock.now()).total_seconds())
        await self._wait(self.attempts_due, max(MIN_PASS_GAP_S, delay_s))

    # --- pruning ----------------------------------------------------------------------------

    async def prune_pass(self) -> None:
        before = self.clock.now() - timedelta(seconds=self.config.run_retention_s)
        async with self.leadership.fenced() as conn:
            deleted = await store.prune_runs(conn, before=before, limit=PRUNE_BATCH)
        if deleted:
            log_event(log, logging.INFO, "schedules.runs_pruned", runs=deleted)
        await asyncio.sleep(0 if deleted == PRUNE_BATCH else PRUNE_INTERVAL_S)


def _run_id() -> str:
    return new_id("run")


def _first_delivery(record: ScheduleRecord, run: NewRun) -> Delivery:
    return Delivery(
        run_id=run.id,
        organization_id=record.organization_id,
        schedule_id=record.id,
        schedule_name=record.name,
        fire_time=run.fire_time,
        trigger=run.trigger,
        attempt=1,
        action=record.action,
        webhook_url=record.webhook_url,
        handler=record.handler,
        payload=record.payload,
        signing_secret=record.signing_secret,
    )
