"""Every SQL statement about schedules and their runs.

Reads and the API's writes take the engine. The leader's writes (claiming fires, recording
attempts, pruning) take the connection of a fenced transaction, so a stale leader's write is
refused by the epoch check before it is applied.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Table, and_, bindparam, delete, exists, func, insert, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from backburner.db.tables import organizations
from backburner.db.transactions import reading
from backburner.schedules.policies import Active, CatchUp, Overlap, Policy, RunOutcome
from backburner.schedules.specs import Spec
from backburner.schedules.tables import schedule_runs, schedules

RUN_INSERT_CHUNK = 500
_DELIVERING_OR_QUEUED = (RunOutcome.DELIVERING.value, RunOutcome.QUEUED.value)


class ScheduleNotFound(LookupError):
    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule {schedule_id!r}")
        self.schedule_id = schedule_id


@dataclass(frozen=True)
class ScheduleRecord:
    id: str
    organization_id: str
    name: str
    spec: Spec
    payload: str  # JSON text, sent as it is
    action: str  # webhook | handler
    webhook_url: str | None
    handler: str | None
    signing_secret: str
    policy: Policy
    paused: bool
    note: str | None
    created_at: datetime
    updated_at: datetime
    next_fire_at: datetime | None
    trigger_at: datetime | None
    due_at: datetime | None
    last_fire_at: datetime | None
    missed_fires: int

    @classmethod
    def from_row(cls, row: Row[Any]) -> ScheduleRecord:
        return cls(
            id=row.id,
            organization_id=row.organization_id,
            name=row.name,
            spec=Spec(
                kind=row.kind,
                cron=row.cron,
                timezone=row.timezone,
                interval_seconds=row.interval_seconds,
                at=row.at,
                start_at=row.start_at,
                end_at=row.end_at,
            ),
            payload=row.payload,
            action=row.action,
            webhook_url=row.webhook_url,
            handler=row.handler,
            signing_secret=row.signing_secret,
            policy=Policy(
                catch_up=CatchUp(row.catch_up),
                catch_up_limit=row.catch_up_limit,
                misfire_grace_s=row.misfire_grace_seconds,
                overlap=Overlap(row.overlap),
            ),
            paused=bool(row.paused),
            note=row.note,
            created_at=row.created_at,
            updated_at=row.updated_at,
            next_fire_at=row.next_fire_at,
            trigger_at=row.trigger_at,
            due_at=row.due_at,
            last_fire_at=row.last_fire_at,
            missed_fires=int(row.missed_fires),
        )


def schedule_values(record: ScheduleRecord) -> dict[str, Any]:
    """The row of a record (every column)."""
    spec, policy = record.spec, record.policy
    return {
        "id": record.id,
        "organization_id": record.organization_id,
        "name": record.name,
        "kind": spec.kind,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "interval_seconds": spec.interval_seconds,
        "at": spec.at,
        "start_at": spec.start_at,
        "end_at": spec.end_at,
        "payload": record.payload,
        "action": record.action,
        "webhook_url": record.webhook_url,
        "handler": record.handler,
        "signing_secret": record.signing_secret,
        "catch_up": policy.catch_up.value,
        "catch_up_limit": policy.catch_up_limit,
        "misfire_grace_seconds": policy.misfire_grace_s,
        "overlap": policy.overlap.value,
        "paused": record.paused,
        "note": record.note,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "next_fire_at": record.next_fire_at,
        "trigger_at": record.trigger_at,
        "due_at": record.due_at,
        "last_fire_at": record.last_fire_at,
        "missed_fires": record.missed_fires,
    }


@dataclass(frozen=True)
class RunRecord:
    id: str
    organization_id: str
    schedule_id: str
    fire_time: datetime
    trigger: str
    outcome: str
    attempts: int
    next_attempt_at: datetime | None
    claimed_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    http_status: int | None
    error: str | None
    epoch: int
    instance_id: str
    attempt_epoch: int | None
    attempt_log: str | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> RunRecord:
        return cls(**{name: row._mapping[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class NewRun:
    """A run written by a claim: a scheduled or manual fire in its first state."""

    id: str
    organization_id: str
    schedule_id: str
    fire_time: datetime
    trigger: str
    outcome: RunOutcome


@dataclass(frozen=True)
class Delivery:
    """What one attempt needs: the run, its attempt number and the schedule's target."""

    run_id: str
    organization_id: str
    schedule_id: str
    schedule_name: str
    fire_time: datetime
    trigger: str
    attempt: int
    action: str
    webhook_url: str | None
    handler: str | None
    payload: str
    signing_secret: str


@dataclass(frozen=True)
class Advance:
    """A schedule after a claim pass."""

    schedule_id: str
    next_fire_at: datetime | None
    trigger_at: datetime | None
    due_at: datetime | None
    last_fire_at: datetime | None
    missed: int


@dataclass(frozen=True)
class AttemptRecord:
    """The end of one attempt. `outcome` is final (succeeded, failed) or queued for a retry."""

    run_id: str
    schedule_id: str
    outcome: RunOutcome
    next_attempt_at: datetime | None
    finished_at: datetime | None
    http_status: int | None
    error: str | None
    log_line: str


def _insert(conn: AsyncConnection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


# --- the API's reads and writes -----------------------------------------------------------------


class ScheduleStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, record: ScheduleRecord) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(schedules).values(schedule_values(record)))

    async def get(self, organization_id: str, schedule_id: str) -> ScheduleRecord:
        async with reading(self.engine) as conn:
            row = (
                await conn.execute(
                    select(schedules).where(
                        schedules.c.organization_id == organization_id, schedules.c.id == schedule_id
                    )
                )
            ).first()
        if row is None:
            raise ScheduleNotFound(schedule_id)
        return ScheduleRecord.from_row(row)

    async def page(self, organization_id: str, *, limit: int, after: str | None) -> list[ScheduleRecord]:
        """Schedules of the organization, oldest first, after the schedule `after`."""
        query = select(schedules).where(schedules.c.organization_id == organization_id)
        async with reading(self.engine) as conn:
            if after is not None:
                cursor = (
                    await conn.execute(
                        select(schedules.c.created_at, schedules.c.id).where(
                            schedules.c.organization_id == organization_id, schedules.c.id == after
                        )
                    )
                ).first()
                if cursor is None:
                    raise ScheduleNotFound(after)
                query = query.where(
                    tuple_(schedules.c.created_at, schedules.c.id) > tuple_(cursor.created_at, cursor.id)
                )
            rows = await conn.execute(query.order_by(schedules.c.created_at, schedules.c.id).limit(limit))
            return [ScheduleRecord.from_row(row) for row in rows]

    async def modify(
        self,
        organization_id: str,
        schedule_id: str,
        change: Callable[[ScheduleRecord], ScheduleRecord],
    ) -> ScheduleRecord:
        """Read the schedule, locked, and write `change(record)` in the same transaction."""
        async with self.engine.begin() as conn:
            query = select(schedules).where(
                schedules.c.organization_id == organization_id, schedules.c.id == schedule_id
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = (await conn.execute(query)).first()
            if row is None:
                raise ScheduleNotFound(schedule_id)
            changed = change(ScheduleRecord.from_row(row))
            values = schedule_values(changed)
            del values["id"], values["organization_id"], values["signing_secret"], values["created_at"]
            await conn.execute(update(schedules).where(schedules.c.id == schedule_id).values(values))
            return changed

    async def delete(self, organization_id: str, schedule_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(schedule_runs).where(schedule_runs.c.schedule_id == schedule_id))
            result = await conn.execute(
                delete(schedules).where(
                    schedules.c.organization_id == organization_id, schedules.c.id == schedule_id
                )
            )
            if result.rowcount == 0:
                raise ScheduleNotFound(schedule_id)

    async def runs(
        self, organization_id: str, schedule_id: str, *, limit: int, before: datetime | None
    ) -> list[RunRecord]:
        """Runs of one schedule, latest fire time first."""
        query = select(schedule_runs).where(
            schedule_runs.c.organization_id == organization_id, schedule_runs.c.schedule_id == schedule_id
        )
        if before is not None:
            query = query.where(schedule_runs.c.fire_time < before)
        async with reading(self.engine) as conn:
            rows = await conn.execute(query.order_by(schedule_runs.c.fire_time.desc()).limit(limit))
            return [RunRecord.from_row(row) for row in rows]

    # --- the dashboard ----------------------------------------------------------------------

    async def counts(self, organization_id: str) -> dict[str, int]:
        """Schedules by state: active (fires to come), paused, ended."""
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                select(
                    schedules.c.paused,
                    schedules.c.next_fire_at.is_not(None).label("scheduled"),
                    func.count().label("n"),
                )
                .where(schedules.c.organization_id == organization_id)
                .group_by(schedules.c.paused, schedules.c.next_fire_at.is_not(None))
            )
            counts = {"active": 0, "paused": 0, "ended": 0}
            for row in rows:
                key = "paused" if row.paused else ("active" if row.scheduled else "ended")
                counts[key] += int(row.n)
            return counts

    async def soonest(self, organization_id: str, limit: int) -> list[ScheduleRecord]:
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                select(schedules)
                .where(schedules.c.organization_id == organization_id, schedules.c.due_at.is_not(None))
                .order_by(schedules.c.due_at)
                .limit(limit)
            )
            return [ScheduleRecord.from_row(row) for row in rows]

    async def recent_runs(self, organization_id: str, limit: int) -> list[tuple[RunRecord, str]]:
        """The latest runs of the organization with their schedule's name."""
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                select(schedule_runs, schedules.c.name.label("schedule_name"))
                .join(schedules, schedules.c.id == schedule_runs.c.schedule_id)
                .where(schedule_runs.c.organization_id == organization_id)
                .order_by(schedule_runs.c.fire_time.desc())
                .limit(limit)
            )
            return [(RunRecord.from_row(row), row.schedule_name) for row in rows]


# --- the leader's claim pass (inside a fenced transaction) --------------------------------------


async def lock_due(
    conn: AsyncConnection, now: datetime, limit: int, *, skipping: Collection[str] = ()
) -> list[ScheduleRecord]:
    """Schedules due at `now`, soonest first, but those of the organizations `skipping`, locked
    until the transaction ends (on PostgreSQL rows that an API request is changing are left for
    the next pass)."""
    query = (
        select(schedules)
        .where(schedules.c.due_at <= now, *_not_of(skipping))
        .order_by(schedules.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [ScheduleRecord.from_row(row) for row in await conn.execute(query)]


async def active_runs(conn: AsyncConnection, schedule_ids: Sequence[str]) -> dict[str, Active]:
    """The unfinished runs of these schedules, for their overlap policies."""
    if not schedule_ids:
        return {}
    rows = await conn.execute(
        select(schedule_runs.c.schedule_id, schedule_runs.c.outcome, func.count().label("n"))
        .where(schedule_runs.c.schedule_id.in_(schedule_ids), schedule_runs.c.finished_at.is_(None))
        .group_by(schedule_runs.c.schedule_id, schedule_runs.c.outcome)
    )
    found: dict[str, Active] = {}
    for row in rows:
        active = found.get(row.schedule_id, Active())
        if row.outcome == RunOutcome.BUFFERED.value:
            active = Active(active.delivering, buffered=True)
        else:
            active = Active(active.delivering + int(row.n), active.buffered)
        found[row.schedule_id] = active
    return found


async def insert_runs(
    conn: AsyncConnection, runs: Sequence[NewRun], *, now: datetime, epoch: int, instance_id: str
) -> set[str]:
    """Write the claimed runs; returns the ids written (a fire claimed before is left alone)."""
    if not runs:
        return set()
    # One statement for any number of rows (executemany): a VALUES list of each length would be
    # compiled again for every new length.
    statement = (
        _insert(conn)(schedule_runs)
        .on_conflict_do_nothing(index_elements=["schedule_id", "fire_time"])
        .returning(schedule_runs.c.id)
    )
    written: set[str] = set()
    for start in range(0, len(runs), RUN_INSERT_CHUNK):
        chunk = runs[start : start + RUN_INSERT_CHUNK]
        rows = [
            {
                "id": run.id,
                "organization_id": run.organization_id,
                "schedule_id": run.schedule_id,
                "fire_time": run.fire_time,
                "trigger": run.trigger,
                "outcome": run.outcome.value,
                "attempts": 1 if run.outcome == RunOutcome.DELIVERING else 0,
                "next_attempt_at": None,
                "claimed_at": now,
                "started_at": now if run.outcome == RunOutcome.DELIVERING else None,
                "finished_at": now if run.outcome == RunOutcome.SKIPPED else None,
                "http_status": None,
                "error": "an earlier run was still delivering" if run.outcome == RunOutcome.SKIPPED else None,
                "epoch": epoch,
                "instance_id": instance_id,
                "attempt_epoch": epoch if run.outcome == RunOutcome.DELIVERING else None,
                "attempt_log": None,
            }
            for run in chunk
        ]
        result = await conn.execute(statement, rows)
        written.update(result.scalars())
    return written


async def advance_schedules(conn: AsyncConnection, advances: Sequence[Advance]) -> None:
    if not advances:
        return
    await conn.execute(
        update(schedules)
        .where(schedules.c.id == bindparam("b_id"))
        .values(
            next_fire_at=bindparam("b_next_fire_at"),
            trigger_at=bindparam("b_trigger_at"),
            due_at=bindparam("b_due_at"),
            last_fire_at=bindparam("b_last_fire_at"),
            missed_fires=schedules.c.missed_fires + bindparam("b_missed"),
        ),
        [
            {
                "b_id": a.schedule_id,
                "b_next_fire_at": a.next_fire_at,
                "b_trigger_at": a.trigger_at,
                "b_due_at": a.due_at,
                "b_last_fire_at": a.last_fire_at,
                "b_missed": a.missed,
            }
            for a in advances
        ],
    )


async def next_due_at(conn: AsyncConnection, *, skipping: Collection[str] = ()) -> datetime | None:
    query = select(func.min(schedules.c.due_at)).where(*_not_of(skipping))
    due: datetime | None = (await conn.execute(query)).scalar_one_or_none()
    return due


def _not_of(organizations: Collection[str], table: Table = schedules) -> list[ColumnElement[bool]]:
    if not organizations:
        return []
    return [table.c.organization_id.not_in(sorted(organizations))]


# --- attempts ------------------------------------------------------------------------------------


def _delivery_query() -> Any:
    return select(
        schedule_runs.c.id.label("run_id"),
        schedule_runs.c.organization_id,
        schedule_runs.c.schedule_id,
        schedules.c.name.label("schedule_name"),
        schedule_runs.c.fire_time,
        schedule_runs.c.trigger,
        schedule_runs.c.attempts,
        schedules.c.action,
        schedules.c.webhook_url,
        schedules.c.handler,
        schedules.c.payload,
        schedules.c.signing_secret,
    ).join(schedules, schedules.c.id == schedule_runs.c.schedule_id)


def _delivery(row: Row[Any], attempt: int) -> Delivery:
    return Delivery(
        run_id=row.run_id,
        organization_id=row.organization_id,
        schedule_id=row.schedule_id,
        schedule_name=row.schedule_name,
        fire_time=row.fire_time,
        trigger=row.trigger,
        attempt=attempt,
        action=row.action,
        webhook_url=row.webhook_url,
        handler=row.handler,
        payload=row.payload,
        signing_secret=row.signing_secret,
    )


async def deliveries_of(conn: AsyncConnection, run_ids: Iterable[str]) -> list[Delivery]:
    """The first attempts of runs just claimed (their attempt is already counted)."""
    ids = list(run_ids)
    if not ids:
        return []
    rows = await conn.execute(_delivery_query().where(schedule_runs.c.id.in_(ids)))
    return [_delivery(row, int(row.attempts)) for row in rows]


async def start_attempts(
    conn: AsyncConnection,
    *,
    now: datetime,
    epoch: int,
    limit: int | None,
    take_over: bool,
    skipping: Collection[str] = (),
) -> list[Delivery]:
    """Count and start the next attempt of runs that wait for one, but those of the
    organizations `skipping`: queued runs whose time has come, and (`take_over`, when a leader
    starts) runs left delivering by an earlier leader or an earlier start of this one. The count
    is written before the attempt is made, so a delivery repeated after a crash shows as a retry
    in the record."""
    unfinished = schedule_runs.c.finished_at.is_(None)
    waiting = and_(schedule_runs.c.outcome == RunOutcome.QUEUED.value, schedule_runs.c.next_attempt_at <= now)
    if take_over:
        waiting = or_(waiting, schedule_runs.c.outcome == RunOutcome.DELIVERING.value)
    query = (
        select(schedule_runs.c.id)
        .where(unfinished, waiting, *_not_of(skipping, schedule_runs))
        .order_by(schedule_runs.c.next_attempt_at)
    )
    if limit is not None:
        query = query.limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list((await conn.execute(query)).scalars())
    if not ids:
        return []
    await conn.execute(
        update(schedule_runs)
        .where(schedule_runs.c.id.in_(ids))
        .values(
            outcome=RunOutcome.DELIVERING.value,
            attempts=schedule_runs.c.attempts + 1,
            attempt_epoch=epoch,
            next_attempt_at=None,
            started_at=func.coalesce(schedule_runs.c.started_at, now),
        )
    )
    rows = await conn.execute(_delivery_query().where(schedule_runs.c.id.in_(ids)))
    return [_delivery(row, int(row.attempts)) for row in rows]


async def release_buffers(conn: AsyncConnection, now: datetime, schedule_ids: Sequence[str] | None) -> int:
    """Let go the buffered runs (of these schedules; None: of all) that wait for nothing any
    more: no other run of their schedule is delivering or queued."""
    others = schedule_runs.alias("others")
    conditions = [
        schedule_runs.c.outcome == RunOutcome.BUFFERED.value,
        schedule_runs.c.finished_at.is_(None),
        ~exists().where(
            others.c.schedule_id == schedule_runs.c.schedule_id,
            others.c.finished_at.is_(None),
            others.c.outcome.in_(_DELIVERING_OR_QUEUED),
        ),
    ]
    if schedule_ids is not None:
        conditions.append(schedule_runs.c.schedule_id.in_(schedule_ids))
    result = await conn.execute(
        update(schedule_runs).where(*conditions).values(outcome=RunOutcome.QUEUED.value, next_attempt_at=now)
    )
    return int(result.rowcount or 0)


async def record_attempts(
    conn: AsyncConnection, records: Sequence[AttemptRecord], *, epoch: int, now: datetime
) -> int:
    """Write the ends of attempts (only of runs still delivering under this term), then let go
    the buffered runs whose earlier run just ended. Returns how many buffered runs were let go."""
    if not records:
        return 0
    await conn.execute(
        update(schedule_runs)
        .where(
            schedule_runs.c.id == bindparam("b_id"),
            schedule_runs.c.outcome == RunOutcome.DELIVERING.value,
            schedule_runs.c.attempt_epoch == epoch,
        )
        .values(
            outcome=bindparam("b_outcome"),
            next_attempt_at=bindparam("b_next_attempt_at"),
            finished_at=bindparam("b_finished_at"),
            http_status=bindparam("b_http_status"),
            error=bindparam("b_error"),
            attempt_log=func.coalesce(schedule_runs.c.attempt_log, "") + bindparam("b_log_line"),
        ),
        [
            {
                "b_id": r.run_id,
                "b_outcome": r.outcome.value,
                "b_next_attempt_at": r.next_attempt_at,
                "b_finished_at": r.finished_at,
                "b_http_status": r.http_status,
                "b_error": r.error,
                "b_log_line": r.log_line,
            }
            for r in records
        ],
    )
    ended = sorted({r.schedule_id for r in records if r.outcome in (RunOutcome.SUCCEEDED, RunOutcome.FAILED)})
    return await release_buffers(conn, now, ended) if ended else 0


async def prune_runs(conn: AsyncConnection, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` finished runs of every organization fired before `before`."""
    deleted = 0
    for organization_id in (await conn.execute(select(organizations.c.id))).scalars():
        old = (
            select(schedule_runs.c.id)
            .where(
                schedule_runs.c.organization_id == organization_id,
                schedule_runs.c.fire_time < before,
                schedule_runs.c.finished_at.is_not(None),
            )
            .limit(limit - deleted)
        )
        result = await conn.execute(delete(schedule_runs).where(schedule_runs.c.id.in_(old)))
        deleted += int(result.rowcount or 0)
        if deleted >= limit:
            break
    return deleted
