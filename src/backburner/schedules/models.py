"""The shapes of the schedule routes: request bodies (checked by the service) and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backburner.api.fields import Description, Name
from backburner.schedules.policies import (
    DEFAULT_CATCH_UP_LIMIT,
    DEFAULT_MISFIRE_GRACE_S,
    MAX_CATCH_UP_LIMIT,
    MAX_MISFIRE_GRACE_S,
    CatchUp,
    Overlap,
)

# Schedule ids are `sched-...`; anything else cannot exist, and a NUL would reach the database.
SCHEDULE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

_WHEN = "ISO 8601; without an offset it is read in `timezone`."


class ScheduleFields(BaseModel):
    """Every field a client may set; the service checks what the types cannot."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    cron: str | None = Field(None, max_length=200, description="Five cron fields, e.g. `0 9 * * 1-5`.")
    timezone: str = Field("UTC", max_length=64, description="IANA time zone of `cron` and of naive times.")
    interval_seconds: float | None = Field(None, description="Fire every this many seconds (at least 1).")
    at: datetime | None = Field(None, description=f"Fire once at this moment. {_WHEN}")
    start_at: datetime | None = Field(None, description=f"No fire before this moment. {_WHEN}")
    end_at: datetime | None = Field(None, description=f"No fire after this moment. {_WHEN}")
    payload: Any = Field(default_factory=dict, description="JSON sent as the webhook body or to the handler.")
    action: Literal["webhook", "handler"] | None = Field(
        None, description="Implied by `webhook_url` or `handler`."
    )
    webhook_url: str | None = Field(
        None, max_length=2000, description="Target of the POST; must match `schedule_webhook_allowed_urls`."
    )
    handler: str | None = Field(None, max_length=100, description="A name from `schedule_handlers`.")
    catch_up: CatchUp = CatchUp.LATEST
    catch_up_limit: int = Field(DEFAULT_CATCH_UP_LIMIT, ge=1, le=MAX_CATCH_UP_LIMIT)
    misfire_grace_seconds: float = Field(DEFAULT_MISFIRE_GRACE_S, ge=0, le=MAX_MISFIRE_GRACE_S)
    overlap: Overlap = Overlap.SKIP
    paused: bool = False
    note: Description | None = None


class ScheduleCreate(ScheduleFields):
    pass


class ScheduleChange(BaseModel):
    """A partial update: only the fields given change. Giving one of `cron`, `interval_seconds`
    or `at` replaces the timing; giving `webhook_url` or `handler` replaces the action."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    cron: str | None = Field(None, max_length=200)
    timezone: str | None = Field(None, max_length=64)
    interval_seconds: float | None = None
    at: datetime | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    payload: Any = None
    action: Literal["webhook", "handler"] | None = None
    webhook_url: str | None = Field(None, max_length=2000)
    handler: str | None = Field(None, max_length=100)
    catch_up: CatchUp | None = None
    catch_up_limit: int | None = Field(None, ge=1, le=MAX_CATCH_UP_LIMIT)
    misfire_grace_seconds: float | None = Field(None, ge=0, le=MAX_MISFIRE_GRACE_S)
    overlap: Overlap | None = None
    paused: bool | None = None
    note: Description | None = None


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Description | None = Field(None, description="Why it is paused.")


class ScheduleOut(BaseModel):
    id: str
    name: str
    kind: Literal["cron", "interval", "at"]
    cron: str | None
    timezone: str
    interval_seconds: float | None
    at: str | None
    start_at: str | None
    end_at: str | None
    payload: Any
    action: Literal["webhook", "handler"]
    webhook_url: str | None
    handler: str | None
    catch_up: CatchUp
    catch_up_limit: int
    misfire_grace_seconds: float
    overlap: Overlap
    paused: bool
    note: str | None
    created_at: str
    updated_at: str
    next_fire_at: str | None
    next_fire_times: list[str] = Field(description="The coming fire times (none while paused).")
    trigger_at: str | None = Field(description="A manual trigger waiting for the leader.")
    last_fire_at: str | None
    missed_fires: int = Field(description="Fire times the catch-up policy did not run.")
    signing_secret: str | None = Field(
        None, description="Key of the webhook signatures: in the answer to the creation only."
    )


class SchedulePage(BaseModel):
    data: list[ScheduleOut]
    has_more: bool
    next_after: str | None = Field(description="Pass as `after` for the next page; null on the last page.")


class AttemptOut(BaseModel):
    attempt: int
    started_at: str
    duration_s: float
    http_status: int | None
    error: str | None
    epoch: int
    instance_id: str


class RunOut(BaseModel):
    id: str
    schedule_id: str
    fire_time: str
    trigger: Literal["scheduled", "manual"]
    outcome: Literal["buffered", "queued", "delivering", "succeeded", "failed", "skipped"]
    attempts: int
    claimed_at: str
    started_at: str | None
    finished_at: str | None
    next_attempt_at: str | None
    http_status: int | None
    error: str | None
    epoch: int = Field(description="The leader's epoch that claimed the fire.")
    instance_id: str = Field(description="The instance that claimed the fire.")
    attempt_history: list[AttemptOut]


class RunPage(BaseModel):
    data: list[RunOut]
    has_more: bool
    next_before: str | None = Field(description="Pass as `before` for the next page; null on the last page.")
