"""Tables of user schedules and their runs. Migration 0009_schedules creates exactly these."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from backburner.db.metadata import metadata
from backburner.db.types import UTCDateTime

schedules = Table(
    "schedules",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(10), nullable=False),  # cron | interval | at
    Column("cron", String(200)),
    Column("timezone", String(64), nullable=False),
    Column("interval_seconds", Float),
    Column("at", UTCDateTime()),
    Column("start_at", UTCDateTime()),
    Column("end_at", UTCDateTime()),
    Column("payload", Text, nullable=False),  # JSON
    Column("action", String(10), nullable=False),  # webhook | handler
    Column("webhook_url", Text),
    Column("handler", String(100)),
    # Signs this schedule's webhook requests; shown once, when the schedule is created.
    Column("signing_secret", String(100), nullable=False),
    Column("catch_up", String(10), nullable=False),
    Column("catch_up_limit", Integer, nullable=False),
    Column("misfire_grace_seconds", Float, nullable=False),
    Column("overlap", String(12), nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("note", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The next regular fire time (none when paused or ended) and a pending manual trigger; `due_at`
    # is the earlier of the two, and the leader finds due schedules through its index.
    Column("next_fire_at", UTCDateTime()),
    Column("trigger_at", UTCDateTime()),
    Column("due_at", UTCDateTime()),
    Column("last_fire_at", UTCDateTime()),
    Column("missed_fires", BigInteger, nullable=False, default=0),
    Index("ix_schedules_due_at", "due_at"),
    Index("ix_schedules_org_created_at_id", "organization_id", "created_at", "id"),
)

# One row per fire that was claimed; (schedule_id, fire_time) is unique, so a fire runs once.
schedule_runs = Table(
    "schedule_runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    Column("schedule_id", String(64), ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False),
    Column("fire_time", UTCDateTime(), nullable=False),
    Column("trigger", String(10), nullable=False),  # scheduled | manual
    # buffered | queued | delivering | succeeded | failed | skipped
    Column("outcome", String(12), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime()),
    Column("claimed_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("http_status", Integer),
    Column("error", Text),
    # The term that claimed the fire, and the term of the latest attempt.
    Column("epoch", BigInteger, nullable=False),
    Column("instance_id", String(200), nullable=False),
    Column("attempt_epoch", BigInteger),
    Column("attempt_log", Text),  # one JSON object per finished attempt, a line each
    UniqueConstraint("schedule_id", "fire_time", name="uq_schedule_runs_schedule_fire_time"),
    Index("ix_schedule_runs_org_fire_time", "organization_id", "fire_time"),
    # Small: only unfinished runs are in them (overlap checks, retries, take-over by a new leader).
    Index(
        "ix_schedule_runs_unfinished_schedule",
        "schedule_id",
        postgresql_where=text("finished_at IS NULL"),
        sqlite_where=text("finished_at IS NULL"),
    ),
    Index(
        "ix_schedule_runs_unfinished_next_attempt",
        "next_attempt_at",
        postgresql_where=text("finished_at IS NULL"),
        sqlite_where=text("finished_at IS NULL"),
    ),
)
