"""User schedules and their runs.

Revision ID: 0009_schedules
Revises: 0008_blobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_schedules"
down_revision = "0008_blobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("cron", sa.String(200)),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("interval_seconds", sa.Float),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("start_at", sa.DateTime(timezone=True)),
        sa.Column("end_at", sa.DateTime(timezone=True)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("webhook_url", sa.Text),
        sa.Column("handler", sa.String(100)),
        sa.Column("signing_secret", sa.String(100), nullable=False),
        sa.Column("catch_up", sa.String(10), nullable=False),
        sa.Column("catch_up_limit", sa.Integer, nullable=False),
        sa.Column("misfire_grace_seconds", sa.Float, nullable=False),
        sa.Column("overlap", sa.String(12), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True)),
        sa.Column("trigger_at", sa.DateTime(timezone=True)),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("last_fire_at", sa.DateTime(timezone=True)),
        sa.Column("missed_fires", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_schedules_due_at", "schedules", ["due_at"])
    op.create_index("ix_schedules_org_created_at_id", "schedules", ["organization_id", "created_at", "id"])
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column(
            "schedule_id", sa.String(64), sa.ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(10), nullable=False),
        sa.Column("outcome", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("instance_id", sa.String(200), nullable=False),
        sa.Column("attempt_epoch", sa.BigInteger),
        sa.Column("attempt_log", sa.Text),
        sa.UniqueConstraint("schedule_id", "fire_time", name="uq_schedule_runs_schedule_fire_time"),
    )
    op.create_index("ix_schedule_runs_org_fire_time", "schedule_runs", ["organization_id", "fire_time"])
    unfinished = sa.text("finished_at IS NULL")
    op.create_index(
        "ix_schedule_runs_unfinished_schedule",
        "schedule_runs",
        ["schedule_id"],
        postgresql_where=unfinished,
        sqlite_where=unfinished,
    )
    op.create_index(
        "ix_schedule_runs_unfinished_next_attempt",
        "schedule_runs",
        ["next_attempt_at"],
        postgresql_where=unfinished,
        sqlite_where=unfinished,
    )


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_table("schedules")
