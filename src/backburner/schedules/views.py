"""Schedules and runs as JSON answers (the API, the CLI's `--json` and the dashboard)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from backburner.clock import iso_or_none
from backburner.schedules.specs import Fires, next_fire_times
from backburner.schedules.store import RunRecord, ScheduleRecord

LISTED_FIRE_TIMES = 3
SHOWN_FIRE_TIMES = 5


def coming_fire_times(record: ScheduleRecord, fires: Fires, count: int) -> list[datetime]:
    """The next `count` fire times of a running schedule, from its next one."""
    if record.next_fire_at is None or count <= 0:
        return []
    return [record.next_fire_at, *next_fire_times(fires, record.next_fire_at, count - 1)]


def schedule_view(
    record: ScheduleRecord, coming: list[datetime], *, with_secret: bool = False
) -> dict[str, Any]:
    spec, policy = record.spec, record.policy
    view: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "kind": spec.kind,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "interval_seconds": spec.interval_seconds,
        "at": iso_or_none(spec.at),
        "start_at": iso_or_none(spec.start_at),
        "end_at": iso_or_none(spec.end_at),
        "payload": json.loads(record.payload),
        "action": record.action,
        "webhook_url": record.webhook_url,
        "handler": record.handler,
        "catch_up": policy.catch_up.value,
        "catch_up_limit": policy.catch_up_limit,
        "misfire_grace_seconds": policy.misfire_grace_s,
        "overlap": policy.overlap.value,
        "paused": record.paused,
        "note": record.note,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "next_fire_at": iso_or_none(record.next_fire_at),
        "next_fire_times": [moment.isoformat() for moment in coming],
        "trigger_at": iso_or_none(record.trigger_at),
        "last_fire_at": iso_or_none(record.last_fire_at),
        "missed_fires": record.missed_fires,
    }
    if with_secret:
        view["signing_secret"] = record.signing_secret
    return view


def attempt_history(run: RunRecord) -> list[dict[str, Any]]:
    history = []
    for line in (run.attempt_log or "").splitlines():
        try:
            history.append(json.loads(line))
        except ValueError:
            continue
    return history


def run_view(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "schedule_id": run.schedule_id,
        "fire_time": run.fire_time.isoformat(),
        "trigger": run.trigger,
        "outcome": run.outcome,
        "attempts": run.attempts,
        "claimed_at": run.claimed_at.isoformat(),
        "started_at": iso_or_none(run.started_at),
        "finished_at": iso_or_none(run.finished_at),
        "next_attempt_at": iso_or_none(run.next_attempt_at),
        "http_status": run.http_status,
        "error": run.error,
        "epoch": run.epoch,
        "instance_id": run.instance_id,
        "attempt_history": attempt_history(run),
    }
