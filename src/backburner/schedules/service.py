"""What the API asks of schedules: create, read, change, pause, resume, trigger, delete, runs.

Every input is checked before anything is written, by pure functions that raise `InvalidField`
naming the field and what is allowed. The API's writes do not fire anything themselves: a
manual trigger is recorded on the schedule, and the leader claims it like any other fire.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from backburner.clock import Clock
from backburner.ids import new_id
from backburner.logs import log_event
from backburner.schedules.allowlist import AllowList, url_problem
from backburner.schedules.models import ScheduleChange, ScheduleCreate
from backburner.schedules.policies import Policy, due_at
from backburner.schedules.specs import InvalidField, Spec, SpecKind, check_spec, time_zone
from backburner.schedules.store import RunRecord, ScheduleRecord, ScheduleStore

log = logging.getLogger("backburner.schedules")

SECRET_PREFIX = "bbs_"


@dataclass(frozen=True)
class Rules:
    """What the operator allows schedules to do."""

    allow_list: AllowList
    handler_names: frozenset[str]
    payload_max_bytes: int


def _utc(field: str, moment: datetime | None, timezone: str) -> datetime | None:
    """A moment in UTC; one without an offset is read in the schedule's time zone."""
    if moment is None:
        return None
    try:
        if moment.tzinfo is None:
            return moment.replace(tzinfo=time_zone(timezone)).astimezone(UTC)
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidField(field, f"{moment.isoformat()} is out of range") from None


def _kind(cron: str | None, interval_seconds: float | None, at: datetime | None) -> SpecKind:
    if cron is not None:
        return "cron"
    if interval_seconds is not None:
        return "interval"
    return "at"


def payload_text(payload: Any, max_bytes: int) -> str:
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        raise InvalidField("payload", "must be JSON (no NaN or Infinity)") from None
    size = len(text.encode())
    if size > max_bytes:
        raise InvalidField(
            "payload", f"is {size} bytes as JSON; at most {max_bytes} (schedule_payload_max_bytes)"
        )
    return text


def check_action(
    action: str | None, webhook_url: str | None, handler: str | None, rules: Rules
) -> tuple[str, str | None, str | None]:
    """The action and its target: a webhook URL under the allow-list, or a configured handler."""
    if webhook_url is not None and handler is not None:
        raise InvalidField("handler", "give either `webhook_url` or `handler`, not both")
    if webhook_url is None and handler is None:
        raise InvalidField(
            "webhook_url", "give `webhook_url` (a webhook) or `handler` (a configured handler)"
        )
    chosen = "webhook" if webhook_url is not None else "handler"
    if action is not None and action != chosen:
        raise InvalidField(
            "action", f"is {action!r}, but {'webhook_url' if chosen == 'webhook' else 'handler'} is given"
        )
    if webhook_url is not None:
        problem = url_problem(webhook_url)
        if problem is not None:
            raise InvalidField("webhook_url", f"{webhook_url!r} {problem}")
        if not rules.allow_list:
            raise InvalidField(
                "webhook_url",
                "webhook schedules are not allowed here: "
                "the operator's schedule_webhook_allowed_urls is empty",
            )
        if not rules.allow_list.allows(webhook_url):
            raise InvalidField(
                "webhook_url",
                f"{webhook_url!r} is not allowed; a webhook target must start with one of: "
                + ", ".join(rules.allow_list.prefixes),
            )
        return chosen, webhook_url, None
    assert handler is not None
    if handler not in rules.handler_names:
        known = ", ".join(sorted(rules.handler_names)) or "none are configured (schedule_handlers is empty)"
        raise InvalidField("handler", f"unknown handler {handler!r}; allowed: {known}")
    return chosen, None, handler


def first_fire(spec: Spec, created_at: datetime, now: datetime, paused: bool) -> datetime | None:
    return None if paused else spec.fires(created_at).next_after(now)


def new_schedule(
    body: ScheduleCreate, *, organization_id: str, schedule_id: str, secret: str, now: datetime, rules: Rules
) -> ScheduleRecord:
    """A checked new schedule; `InvalidField` names the first problem."""
    zone = body.timezone
    time_zone(zone)
    spec = Spec(
        kind=_kind(body.cron, body.interval_seconds, body.at),
        cron=body.cron,
        timezone=zone,
        interval_seconds=body.interval_seconds,
        at=_utc("at", body.at, zone),
        start_at=_utc("start_at", body.start_at, zone),
        end_at=_utc("end_at", body.end_at, zone),
    )
    check_spec(spec, now)
    action, webhook_url, handler = check_action(body.action, body.webhook_url, body.handler, rules)
    next_fire_at = first_fire(spec, now, now, body.paused)
    return ScheduleRecord(
        id=schedule_id,
        organization_id=organization_id,
        name=body.name,
        spec=spec,
        payload=payload_text(body.payload, rules.payload_max_bytes),
        action=action,
        webhook_url=webhook_url,
        handler=handler,
        signing_secret=secret,
        policy=Policy(body.catch_up, body.catch_up_limit, body.misfire_grace_seconds, body.overlap),
        paused=body.paused,
        note=body.note,
        created_at=now,
        updated_at=now,
        next_fire_at=next_fire_at,
        trigger_at=None,
        due_at=next_fire_at,
        last_fire_at=None,
        missed_fires=0,
    )


def changed_schedule(
    record: ScheduleRecord, change: ScheduleChange, now: datetime, rules: Rules
) -> ScheduleRecord:
    """`record` with the fields given in `change`, checked; the next fire time is recomputed when
    the timing changes or the schedule is resumed."""
    given = change.model_fields_set
    for name in (
        "name",
        "timezone",
        "catch_up",
        "catch_up_limit",
        "misfire_grace_seconds",
        "overlap",
        "paused",
    ):
        if name in given and getattr(change, name) is None:
            raise InvalidField(name, "cannot be null")
    spec = record.spec
    zone = change.timezone if "timezone" in given and change.timezone is not None else spec.timezone
    timing = given & {"cron", "interval_seconds", "at"}
    if timing:
        spec = Spec(
            kind=_kind(change.cron, change.interval_seconds, change.at),
            cron=change.cron,
            interval_seconds=change.interval_seconds,
            at=_utc("at", change.at, zone),
            timezone=zone,
            start_at=spec.start_at,
            end_at=spec.end_at,
        )
    spec = replace(
        spec,
        timezone=zone,
        start_at=_utc("start_at", change.start_at, zone) if "start_at" in given else spec.start_at,
        end_at=_utc("end_at", change.end_at, zone) if "end_at" in given else spec.end_at,
    )
    retimed = spec != record.spec
    if retimed:
        time_zone(zone)
        check_spec(spec, now)
    action, webhook_url, handler = record.action, record.webhook_url, record.handler
    if given & {"webhook_url", "handler", "action"}:
        action, webhook_url, handler = check_action(
            change.action,
            change.webhook_url if "webhook_url" in given else None,
            change.handler if "handler" in given else None,
            rules,
        )
    policy = Policy(
        catch_up=change.catch_up or record.policy.catch_up,
        catch_up_limit=change.catch_up_limit or record.policy.catch_up_limit,
        misfire_grace_s=(
            change.misfire_grace_seconds
            if change.misfire_grace_seconds is not None
            else record.policy.misfire_grace_s
        ),
        overlap=change.overlap or record.policy.overlap,
    )
    paused = record.paused if change.paused is None else change.paused
    next_fire_at = record.next_fire_at
    if paused:
        next_fire_at = None
    elif retimed or record.paused:
        next_fire_at = first_fire(spec, record.created_at, now, paused)
    return replace(
        record,
        name=change.name if change.name is not None else record.name,
        spec=spec,
        payload=payload_text(change.payload, rules.payload_max_bytes)
        if "payload" in given
        else record.payload,
        action=action,
        webhook_url=webhook_url,
        handler=handler,
        policy=policy,
        paused=paused,
        note=change.note if "note" in given else record.note,
        updated_at=now,
        next_fire_at=next_fire_at,
        due_at=due_at(next_fire_at, record.trigger_at),
    )


def paused_schedule(
    record: ScheduleRecord, *, paused: bool, note: str | None, now: datetime
) -> ScheduleRecord:
    """Pause (fires stop; missed ones are not caught up) or resume (from the next fire after now)."""
    if paused:
        next_fire_at = None
    elif record.paused:
        next_fire_at = first_fire(record.spec, record.created_at, now, paused=False)
    else:
        next_fire_at = record.next_fire_at  # resuming a running schedule changes nothing
    return replace(
        record,
        paused=paused,
        note=note if paused else None,
        updated_at=now,
        next_fire_at=next_fire_at,
        due_at=due_at(next_fire_at, record.trigger_at),
    )


def triggered_schedule(record: ScheduleRecord, now: datetime) -> ScheduleRecord:
    """Ask the leader to fire now, once, whatever the spec (and even while paused)."""
    trigger_at = now if record.trigger_at is None else min(record.trigger_at, now)
    return replace(record, trigger_at=trigger_at, due_at=due_at(record.next_fire_at, trigger_at))


def _logged(event: str, record: ScheduleRecord, **fields: Any) -> ScheduleRecord:
    log_event(
        log,
        logging.INFO,
        event,
        schedule_id=record.id,
        organization_id=record.organization_id,
        next_fire_at=record.next_fire_at.isoformat() if record.next_fire_at else None,
        **fields,
    )
    return record


class ScheduleService:
    def __init__(
        self, *, store: ScheduleStore, clock: Clock, rules: Rules, on_change: Callable[[], None]
    ) -> None:
        self.store = store
        self.rules = rules
        self._clock = clock
        self._on_change = on_change

    async def create(self, organization_id: str, body: ScheduleCreate) -> ScheduleRecord:
        record = new_schedule(
            body,
            organization_id=organization_id,
            schedule_id=new_id("sched"),
            secret=SECRET_PREFIX + secrets.token_urlsafe(32),
            now=self._clock.now(),
            rules=self.rules,
        )
        await self.store.create(record)
        self._on_change()
        return _logged("schedule.created", record, kind=record.spec.kind, action=record.action)

    async def get(self, organization_id: str, schedule_id: str) -> ScheduleRecord:
        return await self.store.get(organization_id, schedule_id)

    async def page(self, organization_id: str, *, limit: int, after: str | None) -> list[ScheduleRecord]:
        return await self.store.page(organization_id, limit=limit, after=after)

    async def change(self, organization_id: str, schedule_id: str, change: ScheduleChange) -> ScheduleRecord:
        now = self._clock.now()
        record = await self.store.modify(
            organization_id, schedule_id, lambda r: changed_schedule(r, change, now, self.rules)
        )
        self._on_change()
        return _logged("schedule.changed", record, fields=",".join(sorted(change.model_fields_set)))

    async def pause(self, organization_id: str, schedule_id: str, note: str | None) -> ScheduleRecord:
        now = self._clock.now()
        record = await self.store.modify(
            organization_id, schedule_id, lambda r: paused_schedule(r, paused=True, note=note, now=now)
        )
        return _logged("schedule.paused", record)

    async def resume(self, organization_id: str, schedule_id: str) -> ScheduleRecord:
        now = self._clock.now()
        record = await self.store.modify(
            organization_id, schedule_id, lambda r: paused_schedule(r, paused=False, note=None, now=now)
        )
        self._on_change()
        return _logged("schedule.resumed", record)

    async def trigger(self, organization_id: str, schedule_id: str) -> ScheduleRecord:
        now = self._clock.now()
        record = await self.store.modify(organization_id, schedule_id, lambda r: triggered_schedule(r, now))
        self._on_change()
        return _logged("schedule.triggered", record)

    async def delete(self, organization_id: str, schedule_id: str) -> None:
        await self.store.delete(organization_id, schedule_id)
        log_event(
            log, logging.INFO, "schedule.deleted", schedule_id=schedule_id, organization_id=organization_id
        )

    async def runs(
        self, organization_id: str, schedule_id: str, *, limit: int, before: datetime | None
    ) -> list[RunRecord]:
        await self.store.get(organization_id, schedule_id)  # 404 for another organization's schedule
        return await self.store.runs(organization_id, schedule_id, limit=limit, before=before)
