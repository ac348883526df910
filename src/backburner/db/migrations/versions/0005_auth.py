"""API keys.

Revision ID: 0005_auth
Revises: 0004_files
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0005_auth"
down_revision = "0004_files"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
