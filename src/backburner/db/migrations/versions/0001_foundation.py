"""Foundation: organizations, with the default organization.

Revision ID: 0001_foundation
Revises:
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    organizations = op.create_table(
        "organizations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(
        organizations,
        [{"id": "org-default", "name": "default", "created_at": datetime.now(UTC)}],
    )


def downgrade() -> None:
    op.drop_table("organizations")
