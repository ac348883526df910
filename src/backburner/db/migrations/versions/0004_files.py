"""Sources, files and passages.

Revision ID: 0004_files
Revises: 0003_batches
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0004_files"
down_revision = "0003_batches"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
