"""LLM batches, their items and completion deliveries.

Revision ID: 0003_batches
Revises: 0002_leader
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0003_batches"
down_revision = "0002_leader"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
