"""Leader election and scheduler: leader_epochs, job_runs, instances.

Revision ID: 0002_leader
Revises: 0001_foundation
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_leader"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leader_epochs",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("released_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(200), nullable=False),
        sa.Column("election", sa.String(200), nullable=False),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("duration_s", sa.Float),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("instance_id", sa.String(200), nullable=False),
        sa.UniqueConstraint("job_id", "fire_time", name="uq_job_runs_job_id_fire_time"),
    )
    op.create_index("ix_job_runs_job_id_started_at", "job_runs", ["job_id", "started_at"])
    op.create_index("ix_job_runs_election_finished_at", "job_runs", ["election", "finished_at"])
    op.create_table(
        "instances",
        sa.Column("instance_id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("process", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("instances")
    op.drop_index("ix_job_runs_election_finished_at", "job_runs")
    op.drop_index("ix_job_runs_job_id_started_at", "job_runs")
    op.drop_table("job_runs")
    op.drop_table("leader_epochs")
