"""Paused scheduler jobs.

Revision ID: 0006_job_pauses
Revises: 0005_auth
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_job_pauses"
down_revision = "0005_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_pauses",
        sa.Column("job_id", sa.String(200), primary_key=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_pauses")
